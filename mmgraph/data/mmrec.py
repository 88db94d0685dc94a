"""Loader for MMRec's on-disk format, strict.

A dataset ``<name>`` lives in ``<root>/<folder>/`` and holds

* ``<name>.inter``: tab-separated, with a header row naming at least ``userID``,
  ``itemID`` and (for ``split='label'``) ``x_label`` (0 train, 1 valid, 2 test);
  other columns (rating, timestamp) are ignored, as MMRec does;
* one ``<modality>_feat.npy`` per modality: a 2-D float array whose row ``i`` is item ``i``.

Everything is validated and a bad input raises :class:`DatasetError` naming the file,
the line (or row) and what was expected. Nothing is fixed silently.
"""

from __future__ import annotations

import io
import logging
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import HeteroData

from mmgraph.data.split import RecSplit, cold_item_labels, mmrec_random_labels
from mmgraph.typing import ITEM, IU, UI, USER

log = logging.getLogger(__name__)

FEATURE_SUFFIX = "_feat.npy"

#: Public sources of the datasets that MMRec distributes (shown when a folder is missing).
KNOWN_SOURCES = {
    "baby": "the Amazon 2014 dump, built with `python experiments/prepare_amazon.py --raw raw --category Baby --out <data_root> --download` (or MMRec's ready folder, its data README)",
    "sports": "the Amazon 2014 dump, built with `python experiments/prepare_amazon.py --raw raw --category Sports_and_Outdoors --out <data_root> --download` (or MMRec's ready folder, its data README)",
    "clothing": "the Amazon 2014 dump, built with `python experiments/prepare_amazon.py --raw raw --category Clothing_Shoes_and_Jewelry --out <data_root> --download` (or MMRec's ready folder, its data README)",
    "elec": "the Amazon 2014 dump, built with `python experiments/prepare_amazon.py --raw raw --category Electronics --out <data_root> --download` (or MMRec's ready folder, its data README)",
    "microlens": "MMRec's data README, MicroLens folder contributed in enoche/MMRec#29",
    "lfm2k": "giuspillo/extending_sota_data_mm_feat, folder 4_mmrec/data/lfm2k",
    "tiktok": "HKUDS/DiffMM Datasets/tiktok (converted to MMRec's .inter format)",
    "amazon-baby": "LATTICE's Baby split mapped to MMRec ids (see ../shared/data/README.md)",
}


class DatasetError(ValueError):
    """Malformed or missing dataset input."""


@dataclass(frozen=True)
class Interactions:
    """Parsed ``.inter`` columns (``label`` is ``None`` when the file has no ``x_label``)."""

    users: np.ndarray
    items: np.ndarray
    label: np.ndarray | None
    path: Path

    def line_of(self, row: int) -> int:
        """1-based file line of data row ``row`` (the header is line 1)."""
        return int(row) + 2


_INT64 = re.compile(r"[+-]?[0-9]+")

#: Largest user or item id accepted: ids index embedding rows, so an id of 10^13 means the ids were
#: not re-mapped to 0..N-1 (and would overflow the (user, item) key used to find duplicates).
MAX_ID = 2**31 - 1


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except PermissionError:
        raise DatasetError(f"{path}: permission denied; make the file readable (chmod a+r)") from None
    except OSError as e:
        raise DatasetError(f"{path}: cannot be read ({e.strerror})") from None


def _scan_for_error(path: Path, lines: list[bytes], cols: dict[str, int], ncols: int) -> None:
    """Slow path: find the first bad line and raise a precise error."""
    for ln, raw in enumerate(lines[1:], start=2):
        fields = raw.decode("utf-8", errors="replace").rstrip("\r").split("\t")
        if len(fields) != ncols:
            raise DatasetError(
                f"{path}:{ln}: expected {ncols} tab-separated fields (as in the header), "
                f"found {len(fields)}: {raw[:80]!r}"
            )
        for name, c in cols.items():
            v = fields[c].strip()
            if not _INT64.fullmatch(v) or not -(2**63) <= int(v) < 2**63:
                raise DatasetError(
                    f"{path}:{ln}: column {name!r} must be a non-negative integer, found {v!r}"
                )
    raise DatasetError(f"{path}: could not be parsed as tab-separated integers")


def read_inter(
    path: str | Path,
    user_field: str = "userID",
    item_field: str = "itemID",
    label_field: str = "x_label",
    require_label: bool = True,
) -> Interactions:
    """Read and validate an MMRec ``.inter`` file.

    Raises:
        DatasetError: missing file or column, a bad field (non-integer or negative id,
            ``x_label`` outside {0, 1, 2}), a blank line inside the file, duplicate
            ``(user, item)`` pairs, or no data rows.
    """
    path = Path(path)
    if path.is_dir():
        raise DatasetError(f"{path}: is a folder, expected the tab-separated interaction file")
    if not path.is_file():
        raise DatasetError(f"{path}: interaction file not found")
    raw = _read_bytes(path)
    if raw.startswith(b"\xef\xbb\xbf"):
        raise DatasetError(f"{path}:1: the file starts with a UTF-8 byte-order mark (BOM) before the header; "
                           "save it as UTF-8 without BOM (e.g. `sed -i '1s/^\\xEF\\xBB\\xBF//' FILE`)")
    lines = raw.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise DatasetError(f"{path}: file is empty; expected a header line and interactions")
    header = [h.strip() for h in lines[0].decode("utf-8", errors="replace").rstrip("\r").split("\t")]
    wanted = {user_field: None, item_field: None}
    if require_label or label_field in header:
        wanted[label_field] = None
    for name in wanted:
        if header.count(name) > 1:
            cols_at = [i + 1 for i, h in enumerate(header) if h == name]
            raise DatasetError(f"{path}:1: column {name!r} appears {header.count(name)} times in the header "
                               f"(columns {cols_at}); each column name must be unique")
        if name not in header:
            hint = (f"; a file without {label_field} needs a split rule: use dataset.split=random "
                    "(MMRec's per-user 8:1:1) or dataset.split=cold") if name == label_field else ""
            raise DatasetError(
                f"{path}:1: missing column {name!r} in the header; found columns {header} "
                f"(tab-separated; expected at least {list(wanted)}){hint}"
            )
        wanted[name] = header.index(name)
    if len(lines) == 1:
        raise DatasetError(f"{path}: no interactions after the header line")
    for ln, line in enumerate(lines[1:], start=2):
        if not line.strip():
            raise DatasetError(f"{path}:{ln}: blank line inside the file")
        nfields = line.count(b"\t") + 1
        if nfields != len(header):
            raise DatasetError(
                f"{path}:{ln}: expected {len(header)} tab-separated fields (as in the header), "
                f"found {nfields}: {line[:80]!r}"
            )
    cols = {k: v for k, v in wanted.items() if v is not None}
    try:
        arr = np.loadtxt(
            io.BytesIO(b"\n".join(lines[1:])),
            delimiter="\t",
            dtype=np.int64,
            usecols=list(cols.values()),
            ndmin=2,
            comments=None,
            encoding="utf-8",
        )
    except ValueError:
        _scan_for_error(path, lines, cols, len(header))
        raise  # pragma: no cover - _scan_for_error always raises
    if arr.shape[0] != len(lines) - 1:  # pragma: no cover - guarded by the blank-line check
        raise DatasetError(f"{path}: parsed {arr.shape[0]} rows from {len(lines) - 1} lines")
    named = dict(zip(cols, arr.T))
    for name in (user_field, item_field):
        bad = np.nonzero(named[name] < 0)[0]
        if bad.size:
            raise DatasetError(
                f"{path}:{int(bad[0]) + 2}: column {name!r} must be a non-negative integer id, "
                f"found {int(named[name][bad[0]])} ({bad.size} negative values)"
            )
    for name in (user_field, item_field):
        big = np.nonzero(named[name] > MAX_ID)[0]
        if big.size:
            raise DatasetError(
                f"{path}:{int(big[0]) + 2}: column {name!r} holds id {int(named[name][big[0]])}, larger than "
                f"{MAX_ID:,}; ids must be contiguous from 0 (an embedding row per id), so re-map them "
                "(e.g. with `python -m mmgraph.data.prepare`)")
    label = named.get(label_field)
    if label is not None:
        bad = np.nonzero((label < 0) | (label > 2))[0]
        if bad.size:
            raise DatasetError(
                f"{path}:{int(bad[0]) + 2}: {label_field} must be 0 (train), 1 (valid) or 2 (test), "
                f"found {int(label[bad[0]])} ({bad.size} bad rows)"
            )
    users, items = named[user_field], named[item_field]
    key = users * (int(items.max()) + 1) + items
    order = np.argsort(key, kind="stable")
    dup = np.nonzero(key[order][1:] == key[order][:-1])[0]
    if dup.size:
        first, second = sorted((int(order[dup[0]]), int(order[dup[0] + 1])))
        raise DatasetError(
            f"{path}:{second + 2}: duplicate interaction (user {int(users[second])}, item "
            f"{int(items[second])}), first seen on line {first + 2} ({dup.size} duplicate rows "
            "in total); each (user, item) pair must occur once"
        )
    return Interactions(users=users, items=items, label=label, path=path)


def load_feature(path: str | Path, num_items: int) -> np.ndarray:
    """Load one ``<modality>_feat.npy`` without pickle and validate it.

    Returns:
        ``[num_items, F]`` float32 array.

    Raises:
        DatasetError: missing file, not a 2-D float array, wrong number of rows,
            or NaN/Inf values.
    """
    path = Path(path)
    if path.is_dir():
        raise DatasetError(f"{path}: is a folder, expected a .npy feature file")
    if not path.is_file():
        raise DatasetError(f"{path}: feature file not found")
    _check_npy_size(path)
    try:
        arr = np.load(path, allow_pickle=False)
    except PermissionError:
        raise DatasetError(f"{path}: permission denied; make the file readable (chmod a+r)") from None
    except ValueError as e:
        raise DatasetError(
            f"{path}: not a plain numeric .npy array ({e}); feature files are loaded without "
            "pickle, so object arrays are refused"
        ) from None
    except (OSError, EOFError) as e:
        raise DatasetError(f"{path}: cannot be read as a .npy file ({e})") from None
    if not isinstance(arr, np.ndarray) or arr.ndim != 2:
        raise DatasetError(
            f"{path}: expected a 2-D float array [num_items, dim], found shape "
            f"{getattr(arr, 'shape', None)}"
        )
    if not np.issubdtype(arr.dtype, np.floating):
        raise DatasetError(f"{path}: expected a float array, found dtype {arr.dtype}")
    if arr.shape[1] == 0:
        raise DatasetError(f"{path}: has 0 feature columns (shape {arr.shape}); expected [num_items, dim >= 1]")
    if arr.shape[0] != num_items:
        raise DatasetError(
            f"{path}: has {arr.shape[0]} rows but the interaction file has {num_items} items "
            f"(max itemID + 1); row i must be the features of item i"
        )
    arr = arr.astype(np.float32, copy=False)
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        bad = np.nonzero(~finite)[0]
        raise DatasetError(
            f"{path}: row {int(bad[0])} (item {int(bad[0])}) contains NaN or Inf "
            f"({bad.size} bad rows in total)"
        )
    return arr


def _check_npy_size(path: Path) -> None:
    """Refuse a ``.npy`` whose header promises more data than the file holds, before any allocation."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            shape, _fortran, dtype = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                                      else np.lib.format.read_array_header_2_0(f))
            offset = f.tell()
    except PermissionError:
        raise DatasetError(f"{path}: permission denied; make the file readable (chmod a+r)") from None
    except (ValueError, OSError, EOFError) as e:
        raise DatasetError(f"{path}: cannot be read as a .npy file ({e})") from None
    if dtype.hasobject:
        return  # refused with its own message by np.load(allow_pickle=False)
    need = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    have = path.stat().st_size - offset
    if need > have:
        raise DatasetError(f"{path}: its header declares shape {shape} ({dtype}, {need:,} bytes) but the file "
                           f"holds {have:,} bytes after the header: truncated or damaged; re-create it")


def discover_modalities(folder: Path) -> list[str]:
    """Every ``<modality>_feat.npy`` in ``folder``, sorted by name."""
    return sorted(p.name[: -len(FEATURE_SUFFIX)] for p in folder.glob(f"*{FEATURE_SUFFIX}"))


def _missing_folder_error(folder: Path, name: str, modalities: Sequence[str] | None) -> DatasetError:
    feats = ", ".join(f"{m}{FEATURE_SUFFIX}" for m in (modalities or ["<modality>"]))
    src = KNOWN_SOURCES.get(name) or KNOWN_SOURCES.get(folder.name)
    where = f" Public source: {src}." if src else ""
    return DatasetError(
        f"dataset folder {folder} not found. Expected {folder}/{name}.inter (MMRec format: "
        f"userID, itemID, x_label, tab-separated, with a header) and {feats}. "
        f"Set data_root=... or the MMGRAPH_DATA environment variable to the folder that "
        f"contains it.{where}"
    )


def load_mmrec(
    root: str | Path,
    name: str,
    folder: str | None = None,
    inter_file: str | None = None,
    modalities: Sequence[str] | None = None,
    split: str = "label",
    split_seed: int = 123,
    cold_ratio: float = 0.2,
    filter_cold_users: bool = True,
    synthetic_features: dict[str, int] | None = None,
    synthetic_seed: int = 0,
) -> tuple[HeteroData, RecSplit]:
    """Load an MMRec-format dataset into a ``HeteroData`` and a :class:`RecSplit`.

    Args:
        root: data root (``data_root`` in the config).
        name: dataset name, used for ``<name>.inter`` and in messages.
        folder: folder under ``root`` (default: ``name``).
        inter_file: interaction file name (default: ``<name>.inter``).
        modalities: modality names; each is read from ``<modality>_feat.npy``.
            ``None`` finds every ``*_feat.npy`` in the folder; ``[]`` loads none.
        split: ``'label'`` (the file's ``x_label``), ``'random'`` (MMRec's per-user
            rule, seeded; for files without ``x_label``) or ``'cold'`` (item cold start).
        split_seed: seed of the ``random`` and ``cold`` splits.
        cold_ratio: fraction of items held out by the ``cold`` split.
        filter_cold_users: drop valid/test rows of users with no train row (MMRec's
            ``filter_out_cod_start_users``).
        synthetic_features: ``{modality: dim}`` of seeded random features to attach
            instead of files (graph-only datasets used for scale measurements).
        synthetic_seed: seed of ``synthetic_features``.

    Returns:
        ``(data, split)``: ``data`` has node types ``user``/``item``, item features
        ``x_<modality>`` and the train edges ``UI``/``IU``; ``split`` has every stage.
    """
    folder_path = Path(root).expanduser() / (folder or name)
    if not folder_path.is_dir():
        raise _missing_folder_error(folder_path, name, modalities)
    inter = read_inter(folder_path / (inter_file or f"{name}.inter"), require_label=(split == "label"))
    num_users = int(inter.users.max()) + 1
    num_items = int(inter.items.max()) + 1

    if modalities is None:
        modalities = discover_modalities(folder_path)
    modalities = list(modalities)
    if len(set(modalities)) != len(modalities):
        raise DatasetError(f"modalities {modalities} contain duplicates")
    features: dict[str, np.ndarray] = {}
    for m in modalities:
        if synthetic_features and m in synthetic_features:
            continue
        features[m] = load_feature(folder_path / f"{m}{FEATURE_SUFFIX}", num_items)
    if synthetic_features:
        from mmgraph.data.synthetic import random_features

        for m, dim in synthetic_features.items():
            # seed from the name's CRC32: modalities of equal name length must not share features
            features[m] = random_features(num_items, int(dim), seed=synthetic_seed + zlib.crc32(m.encode()))
            if m not in modalities:
                modalities.append(m)

    if split == "label":
        label = inter.label
    elif split == "random":
        label = mmrec_random_labels(inter.users, split_seed)
    elif split == "cold":
        label = cold_item_labels(inter.items, num_items, split_seed, cold_ratio)
    else:
        raise DatasetError(f"unknown split {split!r}; expected 'label', 'random' or 'cold'")
    assert label is not None

    users = torch.from_numpy(inter.users)
    items = torch.from_numpy(inter.items)
    lab = torch.from_numpy(label)
    stage = {s: torch.stack([users[lab == i], items[lab == i]]) for i, s in enumerate(("train", "valid", "test"))}
    summary: dict = {"name": name, "split": split, "num_users": num_users, "num_items": num_items}
    train_users = torch.zeros(num_users, dtype=torch.bool)
    train_users[stage["train"][0]] = True
    train_item_mask = torch.zeros(num_items, dtype=torch.bool)
    train_item_mask[stage["train"][1]] = True
    for s in ("valid", "test"):
        e = stage[s]
        cold_u = ~train_users[e[0]]
        summary[f"cold_users_{s}"] = int(torch.unique(e[0][cold_u]).numel())
        summary[f"cold_items_{s}"] = int(torch.unique(e[1][~train_item_mask[e[1]]]).numel())
        if filter_cold_users and cold_u.any():
            summary[f"dropped_rows_{s}"] = int(cold_u.sum())
            stage[s] = e[:, ~cold_u]
    for s, e in stage.items():
        if e.size(1) == 0:
            raise DatasetError(
                f"{inter.path}: the {s} split is empty (split={split!r}"
                + (", after dropping users with no train interaction" if s != "train" else "")
                + ")"
            )
    summary["rows"] = {s: int(e.size(1)) for s, e in stage.items()}  # after the cold-user filter
    summary["users_without_train"] = int((~train_users).sum())
    summary["items_without_train"] = int((~train_item_mask).sum())
    summary["modalities"] = {m: int(f.shape[1]) for m, f in features.items()}

    data = HeteroData()
    data[USER].num_nodes = num_users
    data[ITEM].num_nodes = num_items
    for m in modalities:
        data[ITEM][f"x_{m}"] = torch.from_numpy(features[m])
    data[UI].edge_index = stage["train"].clone()
    data[IU].edge_index = stage["train"].flip(0).contiguous()
    data.modalities = list(modalities)
    data.dataset_name = name

    rs = RecSplit(num_users, num_items, stage["train"], stage["valid"], stage["test"], summary=summary)
    log.info(format_summary(summary))
    return data, rs


def format_summary(summary: dict) -> str:
    """One readable block describing a loaded dataset."""
    r = summary["rows"]
    total = sum(r.values())
    density = total / max(1, summary["num_users"] * summary["num_items"])
    lines = [
        f"dataset {summary['name']} (split={summary['split']}): {summary['num_users']:,} users, "
        f"{summary['num_items']:,} items, {total:,} interactions "
        f"(train {r['train']:,} / valid {r['valid']:,} / test {r['test']:,}), sparsity {100 * (1 - density):.4f}%",
        "  modalities: "
        + (", ".join(f"{m} {d}-d" for m, d in summary["modalities"].items()) or "none"),
    ]
    for s in ("valid", "test"):
        lines.append(
            f"  {s}: {summary[f'cold_users_{s}']} cold users"
            + (f" ({summary[f'dropped_rows_{s}']} rows dropped)" if f"dropped_rows_{s}" in summary else "")
            + f", {summary[f'cold_items_{s}']} cold items (no train interaction)"
        )
    return "\n".join(lines)
