"""Amazon 2014 review categories (McAuley et al.) from their public dump → an MMRec-format folder.

The dump ships three files per category, read exactly as distributed:

* ``reviews_<Category>_5.json.gz``: one JSON object per line (``reviewerID``, ``asin``, ``overall``,
  ``unixReviewTime``, ...); every 5-core review is an implicit positive, as MMRec treats them;
* ``meta_<Category>.json.gz``: one **Python literal** dict per line (single quotes), parsed with
  :func:`ast.literal_eval` (never ``eval``); MMRec's text of an item is its ``title``, ``brand``,
  ``categories`` and ``description``, in that order, the missing ones skipped;
* ``image_features_<Category>.b``: records of a 10-byte ASCII ``asin`` followed by 4,096
  little-endian float32 (the dump's CNN features).

:func:`prepare_amazon` writes ``<out>/<name>/`` (MMRec's folder names ``baby``, ``sports``, ``clothing``,
``elec`` for its four categories, else the category in lower case) through
:func:`mmgraph.data.prepare.prepare_dataset` (5-core, contiguous ids, MMRec's per-user random split,
``u_id_mapping.csv`` / ``i_id_mapping.csv``, ``text_feat.npy`` from the offline MiniLM) and adds
``image_feat.npy`` from the ``.b`` file (items without a vector get the mean, listed in
``image_mask.npy``: ``True`` = had a vector).
"""

from __future__ import annotations

import ast
import gzip
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mmgraph.data.mmrec import DatasetError
from mmgraph.utils.io import atomic_save_npy

log = logging.getLogger(__name__)

IMAGE_DIM = 4096
ASIN_BYTES = 10
TEXT_FIELDS = ("title", "brand", "categories", "description")
#: MMRec's folder names of the dump's categories (others: the category in lower case).
MMREC_NAMES = {"Baby": "baby", "Sports_and_Outdoors": "sports", "Clothing_Shoes_and_Jewelry": "clothing",
               "Electronics": "elec"}


def dump_files(raw: str | Path, category: str) -> dict[str, Path]:
    """The three files of ``category`` (e.g. ``Baby``, ``Sports_and_Outdoors``) in ``raw``."""
    raw = Path(raw)
    return {"reviews": raw / f"reviews_{category}_5.json.gz", "meta": raw / f"meta_{category}.json.gz",
            "images": raw / f"image_features_{category}.b"}


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    if not path.is_file():
        raise DatasetError(f"{path} not found: the Amazon 2014 dump file of this category (download it with "
                           "--download, or put it in --raw)")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for n, line in enumerate(f, start=1):
                if line.strip():
                    yield n, line
    except (OSError, EOFError) as e:  # a truncated or non-gzip file
        raise DatasetError(f"{path}: not a readable gzip file ({e}); download it again") from None


def read_reviews(path: str | Path) -> list[tuple[str, str, float, int]]:
    """``(reviewerID, asin, overall, unixReviewTime)`` per review line."""
    path = Path(path)
    rows = []
    for n, line in _lines(path):
        try:
            obj = json.loads(line)
            rows.append((str(obj["reviewerID"]), str(obj["asin"]), float(obj.get("overall", 0.0)),
                         int(obj.get("unixReviewTime", 0))))
        except json.JSONDecodeError as e:
            raise DatasetError(f"{path}, line {n}: not a JSON object ({e.msg}); expected one review per line") from None
        except KeyError as e:
            raise DatasetError(f"{path}, line {n}: the review has no {e.args[0]!r} field") from None
        except (TypeError, ValueError) as e:
            raise DatasetError(f"{path}, line {n}: a field has the wrong type ({e})") from None
    if not rows:
        raise DatasetError(f"{path}: no review in the file")
    return rows


def item_text(meta: dict[str, Any]) -> str:
    """MMRec's item sentence: title, brand, categories (flattened), description; missing ones skipped."""
    parts = []
    for key in TEXT_FIELDS:
        v = meta.get(key)
        if not v:
            continue
        if key == "categories":  # a list of category paths (lists of strings)
            flat = [c for path in v for c in (path if isinstance(path, (list, tuple)) else [path])]
            v = ", ".join(dict.fromkeys(str(c) for c in flat))
        parts.append(" ".join(str(v).split()))
    return ". ".join(parts)


def read_meta(path: str | Path, wanted: set[str] | None = None) -> dict[str, str]:
    """``{asin: text}`` from the meta file (Python literals, parsed with :func:`ast.literal_eval`)."""
    path = Path(path)
    out: dict[str, str] = {}
    for n, line in _lines(path):
        try:
            obj = ast.literal_eval(line.strip())
        except (ValueError, SyntaxError) as e:
            raise DatasetError(f"{path}, line {n}: not a Python literal dict ({type(e).__name__}); the meta file "
                               "has one dict per line") from None
        if not isinstance(obj, dict) or "asin" not in obj:
            raise DatasetError(f"{path}, line {n}: expected a dict with an 'asin' key")
        asin = str(obj["asin"])
        if wanted is None or asin in wanted:
            out[asin] = item_text(obj)
    return out


def read_image_features(path: str | Path, wanted: set[str], dim: int = IMAGE_DIM) -> dict[str, np.ndarray]:
    """``{asin: float32[dim]}`` for the wanted asins, streamed record by record."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path} not found: the image feature file of this category")
    size = path.stat().st_size
    rec = ASIN_BYTES + 4 * dim
    if size % rec:
        raise DatasetError(f"{path}: {size:,} bytes is not a whole number of {rec:,}-byte records (a 10-byte asin + "
                           f"{dim} float32): the file is truncated or not an image feature file")
    out: dict[str, np.ndarray] = {}
    with path.open("rb") as f:
        for n in range(size // rec):
            head = f.read(ASIN_BYTES)
            body = f.read(4 * dim)
            try:
                asin = head.decode("ascii").strip()
            except UnicodeDecodeError:
                raise DatasetError(f"{path}, record {n + 1}: the asin is not ASCII") from None
            if asin in wanted:
                out[asin] = np.frombuffer(body, dtype="<f4").astype(np.float32)
    return out


def prepare_amazon(raw: str | Path, category: str, out: str | Path, *, name: str | None = None, seed: int = 123,
                   overwrite: bool = False, text_model: str | None = None, device: str | None = None,
                   progress: bool = True) -> Path:
    """Build ``<out>/<name>/`` from the dump in ``raw``; returns the folder."""
    from mmgraph.data.prepare import prepare_dataset
    from mmgraph.utils.io import atomic_write_text

    files = dump_files(raw, category)
    name = name or MMREC_NAMES.get(category, category.lower())
    folder = Path(out) / name
    folder.mkdir(parents=True, exist_ok=True)
    reviews = read_reviews(files["reviews"])
    log.info("%s: %d reviews", files["reviews"], len(reviews))
    staging = folder / "raw"
    staging.mkdir(exist_ok=True)
    inter = staging / "reviews.tsv"
    atomic_write_text(inter, "user\titem\trating\ttimestamp\n" + "".join(
        f"{u}\t{i}\t{r:g}\t{t}\n" for u, i, r, t in reviews))
    asins = {i for _, i, _, _ in reviews}
    texts = read_meta(files["meta"], asins)
    text_table = staging / "item_text.tsv"
    atomic_write_text(text_table, "asin\ttext\n" + "".join(
        f"{a}\t{' '.join(t.split())}\n" for a, t in sorted(texts.items()) if t))
    opts: dict[str, Any] = {"progress": progress, "device": device}
    if text_model is not None:
        opts["text_model"] = text_model
    result = prepare_dataset(inter, out, name, user_col="user", item_col="item", rating_col="rating",
                             time_col="timestamp", user_k=5, item_k=5, split="random", seed=seed,
                             text_table=text_table, feature_options=opts, overwrite=overwrite, check=False)
    item_ids = _item_order(folder / "i_id_mapping.csv")
    write_image_features(files["images"], item_ids, folder)
    log.info("%s: %s", folder, result)
    return folder


def _item_order(mapping: Path) -> list[str]:
    rows = [ln.split("\t") for ln in mapping.read_text(encoding="utf-8").splitlines()[1:] if ln.strip()]
    order = [""] * len(rows)
    for raw_id, new_id in rows:
        order[int(new_id)] = raw_id
    return order


def write_image_features(path: Path, item_ids: list[str], folder: Path) -> dict[str, int]:
    """``image_feat.npy`` (rows in item-id order, mean-filled) and ``image_mask.npy``."""
    vectors = read_image_features(path, set(item_ids))
    if not vectors:
        raise DatasetError(f"{path}: none of the {len(item_ids):,} items has an image vector: is it this "
                           "category's file?")
    mask = np.array([a in vectors for a in item_ids])
    feats = np.zeros((len(item_ids), IMAGE_DIM), dtype=np.float32)
    for n, a in enumerate(item_ids):
        if mask[n]:
            feats[n] = vectors[a]
    feats[~mask] = feats[mask].mean(0)
    atomic_save_npy(folder / "image_feat.npy", feats)
    atomic_save_npy(folder / "image_mask.npy", mask)
    return {"items": len(item_ids), "missing": int((~mask).sum())}
