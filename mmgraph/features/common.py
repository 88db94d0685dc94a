"""Shared pieces of the feature extractors: table reading, row alignment, missing-item fill, saving.

Every extractor returns ``(features, mask)``: ``features`` is ``[num_items, dim]`` float32 with
row ``i`` belonging to item ``i``; ``mask[i]`` is ``True`` when item ``i`` had an input (text or
image) and ``False`` when its row was filled (see :func:`fill_missing`).
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmgraph.data.mmrec import FEATURE_SUFFIX, DatasetError
from mmgraph.utils.io import atomic_save_npy, atomic_write_json

log = logging.getLogger(__name__)

MASK_SUFFIX = "_mask.npy"
INFO_FILE = "features.json"
FILLS = ("mean", "zero")


class FeatureError(DatasetError):
    """Bad input to a feature extractor (missing file or column, duplicate key, nothing to fill from)."""


class MissingDependencyError(ImportError):
    """An optional package of the ``features`` extra is not installed."""


def require(module: str, package: str) -> Any:
    """Import ``module`` or raise a :class:`MissingDependencyError` naming the PyPI ``package``."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependencyError(
            f"{module} is not installed: pip install {package} (or pip install -e \".[features]\")"
        ) from e


def sniff_delimiter(path: Path, sep: str | None) -> str:
    """``sep`` if given, else tab for ``.tsv``/``.inter``/``.txt`` and comma for ``.csv`` unless the
    header line holds tabs and no commas."""
    if sep is not None:
        return {"\\t": "\t", "tab": "\t", "comma": ","}.get(sep, sep)
    if path.suffix.lower() in (".tsv", ".inter", ".txt", ".tab"):
        return "\t"
    try:
        with path.open(encoding="utf-8", errors="replace") as f:
            first = f.readline()
    except OSError:
        return ","
    return "\t" if "\t" in first and "," not in first else ","


class Table:
    """A delimited text table with a header, read row by row with physical line numbers.

    Args:
        path: the file.
        sep: delimiter (default: from the extension, see :func:`sniff_delimiter`).
        what: what the file is, for messages (``'interaction file'``, ``'text table'``...).
        header: column names of a file without a header line (default: read the first line).
        error: the exception class raised (default: :class:`FeatureError`).
    """

    def __init__(self, path: str | Path, sep: str | None = None, what: str = "table",
                 header: Sequence[str] | None = None, error: type[DatasetError] | None = None) -> None:
        self.path = Path(path)
        self.what = what
        self.error = error or FeatureError
        if not self.path.is_file():
            raise self.error(f"{self.path}: {what} not found")
        self.sep = sniff_delimiter(self.path, sep)
        self.has_header = header is None
        if header is None:
            with self.path.open(newline="", encoding="utf-8-sig") as f:
                header = next(csv.reader(f, delimiter=self.sep), None)
            if not header or not any(h.strip() for h in header):
                raise self.error(f"{self.path}:1: {what} is empty; expected a header line naming the columns")
        self.header = [h.strip() for h in header]
        dup = sorted({h for h in self.header if self.header.count(h) > 1})
        if dup:
            where = "the header" if self.has_header else "the given column names"
            raise self.error(f"{self.path}:1: duplicate column name(s) {dup} in {where} {self.header}")

    def column(self, name: str | int | None, role: str, default: int | None = None) -> int:
        """Index of column ``name`` (a header name, or an int position); a clear error when absent."""
        if name is None:
            if default is None:
                raise self.error(f"{self.path}: no {role} column given")
            return default
        if isinstance(name, int) or (isinstance(name, str) and name.isdigit() and name not in self.header):
            idx = int(name)
            if not 0 <= idx < len(self.header):
                raise self.error(f"{self.path}:1: {role} column #{idx} out of range; the header has "
                                 f"{len(self.header)} columns {self.header}")
            return idx
        if name not in self.header:
            sep = "tab" if self.sep == "\t" else repr(self.sep)
            raise self.error(
                f"{self.path}:1: missing {role} column {name!r}; found columns {self.header} "
                f"(delimiter {sep}; set the column name or the delimiter to match the file)"
            )
        return self.header.index(name)

    def rows(self) -> Iterator[tuple[int, list[str]]]:
        """``(line number, fields)`` for every non-blank data row; a row with the wrong number of
        fields is an error."""
        with self.path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, delimiter=self.sep)
            if self.has_header:
                next(reader, None)
            n = len(self.header)
            for fields in reader:
                line = reader.line_num
                if not fields or (len(fields) == 1 and not fields[0].strip()):
                    continue
                if len(fields) != n:
                    raise self.error(
                        f"{self.path}:{line}: expected {n} fields (as in the columns {self.header}), "
                        f"found {len(fields)}: {self.sep.join(fields)[:80]!r}"
                    )
                yield line, fields


def item_keys_from_table(path: str | Path, id_col: str | None = "itemID", key_col: str | None = None,
                         sep: str | None = None) -> list[str]:
    """Item keys in row order from a mapping table (e.g. ``i_id_mapping.csv`` or ``item_map.tsv``).

    Row ``i`` of the features belongs to the row whose ``id_col`` is ``i``; ids must be exactly
    ``0..n-1`` (in any order). ``key_col`` (default: the first other column) is the key looked up
    in the text table and the image folder.
    """
    t = Table(path, sep, what="item map")
    id_idx = t.column(id_col, "item id")
    if key_col is None:
        others = [i for i in range(len(t.header)) if i != id_idx]
        if not others:
            raise FeatureError(f"{t.path}:1: needs a key column beside {t.header[id_idx]!r}")
        key_idx = others[0]
    else:
        key_idx = t.column(key_col, "item key")
    keys: dict[int, str] = {}
    lines: dict[int, int] = {}
    for line, fields in t.rows():
        raw = fields[id_idx].strip()
        if not raw.isdigit():
            raise FeatureError(f"{t.path}:{line}: item id column {t.header[id_idx]!r} must be a "
                               f"non-negative integer, found {raw!r}")
        i = int(raw)
        if i in keys:
            raise FeatureError(f"{t.path}:{line}: item id {i} listed twice (first on line {lines[i]})")
        keys[i], lines[i] = fields[key_idx].strip(), line
    if not keys:
        raise FeatureError(f"{t.path}: no rows after the header")
    n = max(keys) + 1
    if len(keys) != n:
        missing = next(i for i in range(n) if i not in keys)
        raise FeatureError(f"{t.path}: item ids must be 0..{n - 1} without gaps; id {missing} is missing "
                           f"({n - len(keys)} missing)")
    return [keys[i] for i in range(n)]


def fill_missing(features: np.ndarray, mask: np.ndarray, fill: str = "mean", what: str = "") -> np.ndarray:
    """Fill the rows where ``mask`` is ``False`` in place and return ``features`` (float32).

    ``fill='mean'``: the mean of the present rows (what MMRec's preprocessing does for items
    without an image or a description); ``'zero'``: zeros.
    """
    if fill not in FILLS:
        raise FeatureError(f"unknown fill {fill!r}; expected one of {FILLS}")
    features = np.asarray(features, dtype=np.float32)
    if mask.all():
        return features
    if fill == "zero":
        features[~mask] = 0.0
        return features
    if not mask.any():
        raise FeatureError(f"no item has {what or 'an input'}: nothing to compute the mean fill from")
    features[~mask] = features[mask].mean(axis=0, dtype=np.float64).astype(np.float32)
    return features


def scatter_rows(num_items: int, rows: np.ndarray, values: np.ndarray, dim: int | None = None) -> np.ndarray:
    """``[num_items, dim]`` zeros with ``values`` written at ``rows``."""
    dim = int(values.shape[1]) if values.ndim == 2 and values.shape[0] else int(dim or 0)
    out = np.zeros((num_items, dim), dtype=np.float32)
    if len(rows):
        out[rows] = values
    return out


def save_modality(out_dir: str | Path, modality: str, features: np.ndarray, mask: np.ndarray,
                  info: Mapping[str, Any] | None = None) -> dict[str, Path]:
    """Write ``<modality>_feat.npy`` (float32), ``<modality>_mask.npy`` (bool, ``True`` = the item
    had an input) and merge ``info`` into ``features.json``, all atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    features = np.ascontiguousarray(features, dtype=np.float32)
    mask = np.asarray(mask, dtype=bool)
    if features.ndim != 2 or features.shape[0] != mask.shape[0]:
        raise ValueError(f"features {features.shape} and mask {mask.shape} do not match")
    if not np.isfinite(features).all():
        raise FeatureError(f"{modality} features contain NaN or Inf")
    paths = {"features": out / f"{modality}{FEATURE_SUFFIX}", "mask": out / f"{modality}{MASK_SUFFIX}"}
    atomic_save_npy(paths["features"], features)
    atomic_save_npy(paths["mask"], mask)
    info_path = out / INFO_FILE
    all_info: dict[str, Any] = {}
    if info_path.is_file():
        try:
            all_info = json.loads(info_path.read_text())
        except json.JSONDecodeError:
            all_info = {}
    all_info[modality] = {"rows": int(features.shape[0]), "dim": int(features.shape[1]),
                          "missing": int((~mask).sum()), **dict(info or {})}
    atomic_write_json(info_path, all_info)
    paths["info"] = info_path
    log.info("wrote %s [%d x %d] (%d of %d items filled) and %s", paths["features"], features.shape[0],
             features.shape[1], int((~mask).sum()), mask.shape[0], paths["mask"].name)
    return paths


def resolve_device(device: str | None) -> str:
    """``None``/``'auto'`` → ``'cuda'`` when available, else ``'cpu'``."""
    if device in (None, "auto"):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


def batches(seq: Sequence, size: int) -> Iterator[Sequence]:
    """Consecutive slices of ``seq`` of length ``size``."""
    for i in range(0, len(seq), size):
        yield seq[i:i + size]
