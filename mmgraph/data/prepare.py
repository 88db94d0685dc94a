"""Raw interactions (+ item text, + item images) → an MMRec-format dataset folder.

Steps (:func:`prepare_dataset`; command line: ``experiments/prepare_dataset.py``):

1. read the interaction table (CSV/TSV with a header, or ``columns=`` for a header-less file):
   user and item columns (any strings), optional rating and timestamp (numbers);
2. optionally keep only rows with ``rating >= min_rating`` (explicit → implicit feedback);
3. duplicates of a ``(user, item)`` pair: keep the earliest (by timestamp, then file order;
   ``duplicates='first'``), the latest (``'last'``) or refuse (``'error'``);
4. iterative k-core: drop users with fewer than ``user_k`` and items with fewer than ``item_k``
   interactions until none is left (the unique largest sub-table satisfying both);
5. contiguous ids ``0..U-1`` / ``0..I-1`` in sorted order of the raw ids (numeric order when all
   are integers), written to ``u_id_mapping.csv`` / ``i_id_mapping.csv`` (tab-separated,
   ``raw_id`` then ``userID`` / ``itemID``, the layout of MMRec's mapping files);
6. ``x_label`` per interaction: ``split='random'``: MMRec's per-user rule
   (:func:`mmgraph.data.split.mmrec_random_labels`, seeded); ``split='time'``: the same per-user
   counts, the latest interactions (by timestamp, ties in file order) to test and the ones before
   them to validation;
7. ``<name>.inter`` (tab-separated: ``userID itemID [rating] [timestamp] x_label``, rows by user
   then time / file order);
8. features of the items (``text_feat.npy``, ``image_feat.npy`` and their masks) through
   :func:`mmgraph.features.extract.extract_features`, keyed by the raw item id;
9. ``prepare.json`` (every count above and the arguments), then the folder is read back with
   :func:`mmgraph.data.mmrec.load_mmrec` as a check.

Every bad input raises :class:`~mmgraph.data.mmrec.DatasetError` naming the file, the line and
what was expected.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmgraph.data.mmrec import DatasetError, load_mmrec
from mmgraph.data.split import SplitError, mmrec_random_labels
from mmgraph.utils.io import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

#: Column names tried, in order, when ``user_col`` / ``item_col`` are not given.
USER_ALIASES = ("user", "userID", "user_id", "userId", "uid", "reviewerID", "UserID")
ITEM_ALIASES = ("item", "itemID", "item_id", "itemId", "iid", "asin", "movieId", "artistID", "ItemID")
SPLITS = ("random", "time")
DUPLICATES = ("first", "last", "error")
_NAME = re.compile(r"[A-Za-z0-9_.-]+")


@dataclass
class RawInteractions:
    """The parsed interaction table: one entry per data row (``line`` = its line in the file)."""

    users: np.ndarray  # raw ids, str objects
    items: np.ndarray
    rating: np.ndarray | None
    time: np.ndarray | None
    line: np.ndarray
    path: Path
    columns: dict[str, str] = field(default_factory=dict)  # role -> column name

    def __len__(self) -> int:
        return int(self.line.shape[0])

    def take(self, keep: np.ndarray) -> RawInteractions:
        """The rows where ``keep`` (a mask or an index array)."""
        return RawInteractions(self.users[keep], self.items[keep],
                               None if self.rating is None else self.rating[keep],
                               None if self.time is None else self.time[keep], self.line[keep], self.path,
                               self.columns)


def _number(v: str) -> float:
    x = float(v)
    if not math.isfinite(x):
        raise ValueError(v)
    return x


def read_interactions(path: str | Path, user_col: str | None = None, item_col: str | None = None,
                      rating_col: str | None = None, time_col: str | None = None, sep: str | None = None,
                      columns: Sequence[str] | None = None) -> RawInteractions:
    """Read and validate a raw interaction table.

    Args:
        path: CSV/TSV file (delimiter from the extension or ``sep``).
        user_col, item_col: column names (default: the first of :data:`USER_ALIASES` /
            :data:`ITEM_ALIASES` in the header).
        rating_col, time_col: optional numeric columns (a timestamp must be a number, e.g. Unix
            seconds).
        columns: names of the columns of a file without a header line.

    Raises:
        DatasetError: missing file or column, a row with the wrong number of fields, an empty
            user or item, a non-numeric rating or timestamp, or no rows.
    """
    from mmgraph.features.common import Table

    t = Table(path, sep, what="interaction file", header=columns, error=DatasetError)

    def pick(name: str | None, aliases: Sequence[str], role: str) -> int:
        if name is not None:
            return t.column(name, role)
        for a in aliases:
            if a in t.header:
                return t.header.index(a)
        raise DatasetError(
            f"{t.path}:1: no {role} column: none of {list(aliases)} in the columns {t.header}; "
            f"name it with --{role}-col (and check the delimiter: {'tab' if t.sep == chr(9) else repr(t.sep)})"
        )

    cu, ci = pick(user_col, USER_ALIASES, "user"), pick(item_col, ITEM_ALIASES, "item")
    if cu == ci:
        raise DatasetError(f"{t.path}: user and item columns are the same column {t.header[cu]!r}")
    cr = t.column(rating_col, "rating") if rating_col is not None else None
    ct = t.column(time_col, "timestamp") if time_col is not None else None
    users: list[str] = []
    items: list[str] = []
    ratings: list[float] = []
    times: list[float] = []
    lines: list[int] = []
    for ln, f in t.rows():
        u, i = f[cu].strip(), f[ci].strip()
        if not u or not i:
            col = t.header[cu] if not u else t.header[ci]
            raise DatasetError(f"{t.path}:{ln}: empty {('user' if not u else 'item')} id in column {col!r}")
        for c, out, role, hint in ((cr, ratings, "rating", ""),
                                   (ct, times, "timestamp", " (e.g. Unix seconds; convert dates first)")):
            if c is None:
                continue
            v = f[c].strip()
            try:
                out.append(_number(v))
            except ValueError:
                raise DatasetError(f"{t.path}:{ln}: column {t.header[c]!r} ({role}) must be a number{hint}, "
                                   f"found {v!r}") from None
        users.append(u)
        items.append(i)
        lines.append(ln)
    if not lines:
        raise DatasetError(f"{t.path}: no interactions after the header line")
    roles = {"user": t.header[cu], "item": t.header[ci]}
    if cr is not None:
        roles["rating"] = t.header[cr]
    if ct is not None:
        roles["timestamp"] = t.header[ct]
    return RawInteractions(np.array(users, dtype=object), np.array(items, dtype=object),
                           np.array(ratings, dtype=np.float64) if cr is not None else None,
                           np.array(times, dtype=np.float64) if ct is not None else None,
                           np.array(lines, dtype=np.int64), t.path, roles)


def _sorted_ids(raw: np.ndarray) -> np.ndarray:
    """Unique raw ids, numerically sorted when all are integers, else as strings."""
    uniq = np.unique(raw.astype(str))
    if all(s.lstrip("-").isdigit() for s in uniq):
        uniq = np.array(sorted(uniq, key=int), dtype=uniq.dtype)
    return uniq


def _codes(raw: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Index of each raw id in ``order`` (a sorted-unique list from :func:`_sorted_ids`)."""
    idx = {k: n for n, k in enumerate(order.tolist())}
    return np.fromiter((idx[k] for k in raw.astype(str).tolist()), dtype=np.int64, count=raw.shape[0])


def deduplicate(inter: RawInteractions, keep: str = "first") -> tuple[RawInteractions, int]:
    """One row per ``(user, item)``: the earliest (``'first'``, by timestamp then file line), the
    latest (``'last'``), or an error naming both lines (``'error'``). Returns ``(rows, removed)``."""
    if keep not in DUPLICATES:
        raise DatasetError(f"duplicates={keep!r}; expected one of {DUPLICATES}")
    u = _codes(inter.users, np.unique(inter.users.astype(str)))
    i = _codes(inter.items, np.unique(inter.items.astype(str)))
    t = inter.time if inter.time is not None else np.zeros(len(inter))
    order = np.lexsort((inter.line, t, i, u))  # by pair, then time, then line
    pair = u[order] * (int(i.max()) + 1) + i[order]
    first = np.ones(order.shape[0], dtype=bool)
    first[1:] = pair[1:] != pair[:-1]
    n_dup = int((~first).sum())
    if not n_dup:
        return inter, 0
    if keep == "error":
        j = int(np.nonzero(~first)[0][0])
        a, b = sorted((int(inter.line[order[j - 1]]), int(inter.line[order[j]])))
        raise DatasetError(f"{inter.path}:{b}: duplicate interaction (user {inter.users[order[j]]!r}, item "
                           f"{inter.items[order[j]]!r}), first on line {a} ({n_dup} duplicate rows); "
                           "pass duplicates='first' or 'last' to keep one")
    if keep == "first":
        sel = order[first]
    else:
        last = np.ones(order.shape[0], dtype=bool)
        last[:-1] = pair[:-1] != pair[1:]
        sel = order[last]
    return inter.take(np.sort(sel)), n_dup


def kcore(users: np.ndarray, items: np.ndarray, user_k: int, item_k: int) -> tuple[np.ndarray, int]:
    """Iterative k-core filter. Returns ``(keep mask, rounds)``: every kept user has at least
    ``user_k`` and every kept item at least ``item_k`` kept interactions."""
    keep = np.ones(users.shape[0], dtype=bool)
    rounds = 0
    while True:
        uc = np.bincount(users[keep], minlength=int(users.max(initial=-1)) + 1)
        ic = np.bincount(items[keep], minlength=int(items.max(initial=-1)) + 1)
        bad = keep & ((uc[users] < user_k) | (ic[items] < item_k))
        if not bad.any():
            return keep, rounds
        keep &= ~bad
        rounds += 1


def _per_user_counts(n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MMRec's per-user ``(valid, test)`` counts for ``n`` interactions."""
    vt = np.where(n < 10, 2, (0.2 * n).astype(np.int64))
    val = np.where(n < 10, 1, vt // 2)
    return val, vt - val


def chronological_labels(users: np.ndarray, time: np.ndarray, line: np.ndarray) -> np.ndarray:
    """Per-user chronological ``x_label``: MMRec's per-user counts, the latest rows to test, the
    ones before them to validation, the rest to train (ties by file line)."""
    order = np.lexsort((line, time, users))
    u_sorted = users[order]
    counts = np.bincount(u_sorted)
    small = np.nonzero((counts > 0) & (counts < 3))[0]
    if small.size:
        raise SplitError(f"user {int(small[0])} has {int(counts[small[0]])} interaction(s); the split needs "
                         f"at least 3 per user ({small.size} such users)")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pos = np.arange(order.shape[0]) - starts[u_sorted]
    n = counts[u_sorted]
    val, test = _per_user_counts(n)
    n_train = n - val - test
    lab_sorted = np.where(pos < n_train, 0, np.where(pos < n_train + val, 1, 2))
    labels = np.empty_like(lab_sorted)
    labels[order] = lab_sorted
    return labels


def _fmt_numbers(x: np.ndarray) -> list[str]:
    if np.all(x == np.round(x)) and np.abs(x).max(initial=0) < 2**53:
        return [str(int(v)) for v in x]
    return [repr(float(v)) for v in x]


def _write_table(path: Path, header: Sequence[str], cols: Sequence[Sequence[str]]) -> None:
    body = "\n".join("\t".join(row) for row in zip(*cols))
    atomic_write_text(path, "\t".join(header) + "\n" + body + "\n")


@dataclass
class PrepareResult:
    """What :func:`prepare_dataset` wrote."""

    folder: Path
    name: str
    summary: dict[str, Any]


def prepare_dataset(
    interactions: str | Path,
    out_root: str | Path,
    name: str,
    *,
    user_col: str | None = None,
    item_col: str | None = None,
    rating_col: str | None = None,
    time_col: str | None = None,
    sep: str | None = None,
    columns: Sequence[str] | None = None,
    min_rating: float | None = None,
    duplicates: str = "first",
    user_k: int = 5,
    item_k: int = 5,
    split: str = "random",
    seed: int = 123,
    text_table: str | Path | None = None,
    images: str | Path | None = None,
    image_list: str | Path | None = None,
    feature_options: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    check: bool = True,
) -> PrepareResult:
    """Write ``<out_root>/<name>/`` in MMRec's format (see the module docstring for the steps).

    Args:
        interactions: the raw interaction table.
        out_root: the data root; the dataset goes to ``<out_root>/<name>/``.
        name: dataset name (``<name>.inter``; letters, digits, ``_``, ``.``, ``-``).
        text_table: item text table keyed by the raw item id (see
            :func:`mmgraph.features.text.read_text_table`).
        images, image_list: item images named / listed by the raw item id.
        feature_options: further keyword arguments of
            :func:`mmgraph.features.extract.extract_features` (``text_cols``, ``text_model``,
            ``image_model``, ``device``, ``fill``...).
        overwrite: replace an existing ``<name>.inter`` (else an error).
        check: read the result back with :func:`load_mmrec`.

    Raises:
        DatasetError: bad input (file, line, what was expected), nothing left after filtering,
            or an existing dataset without ``overwrite``.
    """
    if not _NAME.fullmatch(name):
        raise DatasetError(f"dataset name {name!r}: use letters, digits, '_', '.' or '-'")
    if split not in SPLITS:
        raise DatasetError(f"split={split!r}; expected one of {SPLITS}")
    if split == "time" and time_col is None:
        raise DatasetError("split='time' needs the timestamp column (time_col / --time-col)")
    if user_k < 1 or item_k < 1:
        raise DatasetError(f"user_k and item_k must be >= 1, got {user_k} and {item_k}")
    folder = Path(out_root).expanduser() / name
    inter_path = folder / f"{name}.inter"
    if inter_path.exists() and not overwrite:
        raise DatasetError(f"{inter_path} exists; pass overwrite=True (--overwrite) to replace the dataset")

    raw = read_interactions(interactions, user_col, item_col, rating_col, time_col, sep, columns)
    summary: dict[str, Any] = {"source": str(raw.path), "columns": raw.columns, "raw_rows": len(raw)}
    log.info("%s: %d interactions (columns %s)", raw.path, len(raw), raw.columns)
    inter = raw
    if min_rating is not None:
        if inter.rating is None:
            raise DatasetError("min_rating needs the rating column (rating_col / --rating-col)")
        inter = inter.take(inter.rating >= min_rating)
        summary["rows_after_min_rating"] = len(inter)
        if not len(inter):
            raise DatasetError(f"{raw.path}: no interaction has rating >= {min_rating}")
    inter, n_dup = deduplicate(inter, duplicates)
    summary["duplicates_removed"] = n_dup
    if n_dup:
        log.info("removed %d duplicate (user, item) rows (kept the %s)", n_dup,
                 "earliest" if duplicates == "first" else "latest")

    u_all = _codes(inter.users, np.unique(inter.users.astype(str)))
    i_all = _codes(inter.items, np.unique(inter.items.astype(str)))
    keep, rounds = kcore(u_all, i_all, user_k, item_k)
    summary["kcore"] = {"user_k": user_k, "item_k": item_k, "rounds": rounds,
                        "rows_removed": int((~keep).sum())}
    if not keep.any():
        raise DatasetError(
            f"{raw.path}: nothing is left after the {user_k}/{item_k}-core filter (users need >= {user_k} and "
            f"items >= {item_k} interactions; before it: {len(inter)} interactions, "
            f"{len(np.unique(u_all))} users, {len(np.unique(i_all))} items); lower --user-k / --item-k"
        )
    inter = inter.take(keep)
    user_ids, item_ids = _sorted_ids(inter.users), _sorted_ids(inter.items)
    users, items = _codes(inter.users, user_ids), _codes(inter.items, item_ids)
    num_users, num_items = len(user_ids), len(item_ids)
    log.info("after the %d/%d-core filter (%d rounds): %d interactions, %d users, %d items", user_k, item_k,
             rounds, len(inter), num_users, num_items)

    per_user = np.bincount(users, minlength=num_users)
    few = np.nonzero(per_user < 3)[0]
    if few.size:
        raise DatasetError(
            f"{raw.path}: user {str(user_ids[few[0]])!r} has {int(per_user[few[0]])} interaction(s) after the "
            f"filters ({few.size} users have fewer than 3); the {split} split gives every user at least one "
            "train, one validation and one test interaction: raise --user-k to at least 3"
        )
    try:
        if split == "random":
            label = mmrec_random_labels(users, seed)
        else:
            assert inter.time is not None
            label = chronological_labels(users, inter.time, inter.line)
    except SplitError as e:  # pragma: no cover - guarded by the check above
        raise DatasetError(f"{raw.path}: {e}") from None

    order = np.lexsort((inter.line, inter.time if inter.time is not None else np.zeros(len(inter)), users))
    folder.mkdir(parents=True, exist_ok=True)
    header = ["userID", "itemID"]
    cols: list[Sequence[str]] = [users[order].astype(str).tolist(), items[order].astype(str).tolist()]
    if inter.rating is not None:
        header.append("rating")
        cols.append(_fmt_numbers(inter.rating[order]))
    if inter.time is not None:
        header.append("timestamp")
        cols.append(_fmt_numbers(inter.time[order]))
    header.append("x_label")
    cols.append(label[order].astype(str).tolist())
    _write_table(inter_path, header, cols)
    _write_table(folder / "u_id_mapping.csv", ["raw_id", "userID"],
                 [user_ids.tolist(), [str(n) for n in range(num_users)]])
    _write_table(folder / "i_id_mapping.csv", ["raw_id", "itemID"],
                 [item_ids.tolist(), [str(n) for n in range(num_items)]])
    summary.update({
        "num_users": num_users, "num_items": num_items, "interactions": len(inter),
        "density": len(inter) / (num_users * num_items), "split": split, "seed": seed if split == "random" else None,
        "rows": {s: int((label == k).sum()) for k, s in enumerate(("train", "valid", "test"))},
    })

    if text_table is not None or images is not None or image_list is not None:
        from mmgraph.features.extract import extract_features

        done = extract_features(folder, item_ids.tolist(), text_table=text_table, image_folder=images,
                                image_list=image_list, **dict(feature_options or {}))
        summary["features"] = {m: {"dim": int(d["dim"]), "missing": int(d["missing"])} for m, d in done.items()}
    stale = [p.name for p in folder.glob("*_feat.npy")
             if p.name[: -len("_feat.npy")] not in summary.get("features", {})]
    if stale:
        log.warning("%s also holds %s from before: the loader reads every *_feat.npy; delete the stale ones",
                    folder, stale)
    summary["arguments"] = {"user_k": user_k, "item_k": item_k, "min_rating": min_rating, "duplicates": duplicates,
                            "split": split, "seed": seed, "text_table": str(text_table) if text_table else None,
                            "images": str(images) if images else None,
                            "image_list": str(image_list) if image_list else None,
                            "feature_options": {k: v if isinstance(v, (str, int, float, bool, list, type(None))) else str(v)
                                                for k, v in (feature_options or {}).items()}}
    atomic_write_json(folder / "prepare.json", summary)
    if check:
        _, rs = load_mmrec(Path(out_root).expanduser(), name)
        summary["loaded"] = rs.summary["rows"]
    log.info("wrote %s: %s", folder, json.dumps({k: summary[k] for k in ("num_users", "num_items", "rows")}))
    return PrepareResult(folder=folder, name=name, summary=summary)
