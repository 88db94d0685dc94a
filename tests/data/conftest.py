"""Fixtures of the data-layer tests: MMRec-format folders written into ``tmp_path``.

Real datasets are read from ``$MMGRAPH_DATA`` (default: ``<repo>/../shared/data``, the
layout of the shared workspace); tests that need one skip when its folder is absent.
They are never copied into the repository.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

HEADER = "userID\titemID\trating\tx_label"

# A small dataset with every stage non-empty:
#   4 users, 6 items; user 3 and item 5 occur only in valid/test (cold).
SMALL_ROWS = [
    # (user, item, label)
    (0, 0, 0), (0, 1, 0), (0, 2, 0), (0, 3, 1), (0, 4, 2),
    (1, 1, 0), (1, 2, 0), (1, 3, 0), (1, 0, 1), (1, 5, 2),
    (2, 0, 0), (2, 3, 0), (2, 4, 0), (2, 2, 1), (2, 1, 2),
    (3, 0, 1), (3, 1, 2),
]  # fmt: skip


def data_root() -> Path:
    env = os.environ.get("MMGRAPH_DATA")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


def real_folder(name: str) -> Path:
    """Folder of a real dataset, or skip the test when it is absent."""
    folder = data_root() / name
    if not folder.is_dir():
        pytest.skip(f"real dataset {name!r} not found under {data_root()} (set MMGRAPH_DATA)")
    return folder


def inter_text(rows, header: str = HEADER, label: bool = True) -> str:
    """MMRec ``.inter`` text of ``(user, item, label)`` rows (rating is 1)."""
    if label:
        body = [f"{u}\t{i}\t1\t{lab}" for u, i, lab in rows]
    else:
        body = [f"{u}\t{i}\t1" for u, i, *_ in rows]
    return header + "\n" + "\n".join(body) + "\n"


def write_dataset(
    root: Path,
    name: str = "toy",
    rows=SMALL_ROWS,
    features: dict[str, np.ndarray] | None = None,
    text: str | None = None,
    label: bool = True,
) -> Path:
    """Write ``<root>/<name>/<name>.inter`` and ``<m>_feat.npy`` files; returns the folder."""
    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    if text is None:
        text = inter_text(rows, HEADER if label else "userID\titemID\trating", label=label)
    (folder / f"{name}.inter").write_text(text)
    for m, arr in (features or {}).items():
        np.save(folder / f"{m}_feat.npy", arr, allow_pickle=True)
    return folder


def num_items_of(rows) -> int:
    return max(i for _, i, _ in rows) + 1


def default_features(rows=SMALL_ROWS, seed: int = 0) -> dict[str, np.ndarray]:
    n = num_items_of(rows)
    rng = np.random.default_rng(seed)
    return {
        "image": rng.standard_normal((n, 4)).astype(np.float32),
        "text": rng.standard_normal((n, 3)),  # float64 on disk: loaded as float32
    }


@pytest.fixture
def small_dataset(tmp_path):
    """``(root, name, features)`` of the small dataset with image and text features."""
    feats = default_features()
    write_dataset(tmp_path, "toy", SMALL_ROWS, feats)
    return tmp_path, "toy", feats


@pytest.fixture
def mmfx():
    """The helpers above, as a fixture (test modules do not import conftest)."""
    import types

    return types.SimpleNamespace(
        HEADER=HEADER,
        SMALL_ROWS=SMALL_ROWS,
        data_root=data_root,
        real_folder=real_folder,
        inter_text=inter_text,
        write_dataset=write_dataset,
        num_items_of=num_items_of,
        default_features=default_features,
    )
