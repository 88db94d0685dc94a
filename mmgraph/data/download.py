"""Resumable, size-checked downloads (stdlib only), with a progress bar.

``download(url, dest)`` writes ``dest.part`` and renames it to ``dest`` once the byte count equals the
size the server announced. A ``.part`` left by a cut connection is continued with an HTTP ``Range``
request (a server that ignores it, answering 200, restarts the file). A transfer that ends short of, or
beyond, the announced size is refused with :class:`~mmgraph.data.mmrec.DatasetError` and never renamed.
"""

from __future__ import annotations

import http.client
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path

from mmgraph.data.mmrec import DatasetError

CHUNK = 1 << 20


def _total(resp, start: int) -> int | None:
    rng = resp.headers.get("Content-Range")
    if rng:
        m = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", rng)
        if m and m.group(3) != "*":
            return int(m.group(3))
    length = resp.headers.get("Content-Length")
    if length is None:
        return None
    return int(length) + (start if resp.status == 206 else 0)


def download(url: str, dest: str | Path, *, progress: bool = True, timeout: float = 60.0) -> Path:
    """Fetch ``url`` to ``dest`` (resuming ``dest.part``); returns ``dest``. Skips a complete ``dest``."""
    from tqdm.auto import tqdm

    dest = Path(dest)
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    start = part.stat().st_size if part.is_file() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and start:  # the part file is already complete (or longer than the file)
            raise DatasetError(f"{url}: the server refused to resume at byte {start:,} (HTTP 416); delete {part} "
                               "and run again") from None
        raise DatasetError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        raise DatasetError(f"{url}: cannot connect ({getattr(e, 'reason', e)}); check the address or your "
                           "network, or download the file by hand into the --raw folder") from None
    with resp:
        if start and resp.status != 206:  # no range support: start over
            start = 0
        total = _total(resp, start)
        mode = "ab" if start else "wb"
        got = start
        with part.open(mode) as f, tqdm(total=total, initial=start, unit="B", unit_scale=True, desc=dest.name,
                                       disable=not progress, file=sys.stderr) as bar:
            try:
                while True:
                    chunk = resp.read(CHUNK)
                    if not chunk:
                        break
                    f.write(chunk)
                    got += len(chunk)
                    bar.update(len(chunk))
            except (OSError, http.client.IncompleteRead) as e:
                raise DatasetError(f"{url}: the connection broke at byte {got:,} ({type(e).__name__}); run the "
                                   f"same command again to resume from {part}") from None
    if total is not None and got != total:
        raise DatasetError(f"{url}: received {got:,} bytes but the server announced {total:,}; {part} is kept "
                           "(run again to resume, or delete it to start over)")
    part.replace(dest)
    return dest
