"""Train/validation/test splits and their CSR views.

The :class:`RecSplit` holds the interactions of each stage as PyG-style
``edge_label_index`` tensors (``[2, E]``: row 0 users, row 1 items). Validation and
test interactions live only here; they never enter the message-passing graph.

Split rules (all seeded, all vectorised):

* :func:`mmrec_random_labels`: MMRec's per-user random rule (``1splitting.ipynb``):
  a user with ``n < 10`` interactions gets exactly one validation and one test
  interaction; with ``n >= 10``, ``vt = int(0.2 n)``, ``val = vt // 2``,
  ``test = vt - val``.
* :func:`cold_item_labels`: LATTICE's item cold-start split: a seeded 20% of the
  items is held out, the first half for test and the second half for validation;
  every interaction of a held-out item goes to its stage, every other interaction
  to train.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import Tensor

Stage = Literal["train", "valid", "test"]
STAGES: tuple[str, ...] = ("train", "valid", "test")


class SplitError(ValueError):
    """A split cannot be made or is empty."""


def mmrec_random_labels(users: np.ndarray, seed: int) -> np.ndarray:
    """Per-user random ~8:1:1 labels with MMRec's rule.

    Args:
        users: user id of every interaction, ``[E]``.
        seed: RNG seed.

    Returns:
        ``x_label`` per interaction (0 train, 1 valid, 2 test), ``[E]`` int64.

    Raises:
        SplitError: if a user has fewer than 3 interactions (the rule would leave
            them with no training interaction).
    """
    users = np.asarray(users, dtype=np.int64)
    rng = np.random.default_rng(seed)
    order = rng.permutation(users.shape[0])
    order = order[np.argsort(users[order], kind="stable")]  # shuffled, grouped by user
    u_sorted = users[order]
    counts = np.bincount(u_sorted, minlength=int(u_sorted.max(initial=-1)) + 1)
    small = np.nonzero((counts > 0) & (counts < 3))[0]
    if small.size:
        raise SplitError(
            f"user {int(small[0])} has {int(counts[small[0]])} interaction(s); MMRec's random split "
            f"needs at least 3 per user ({small.size} such users). Filter the data to a k-core "
            "first (experiments/prepare_dataset.py does that) or provide x_label."
        )
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pos = np.arange(u_sorted.shape[0]) - starts[u_sorted]  # rank inside the user's rows
    n = counts[u_sorted]
    vt = np.where(n < 10, 2, (0.2 * n).astype(np.int64))
    val = np.where(n < 10, 1, vt // 2)
    n_train = n - vt
    labels_sorted = np.where(pos < n_train, 0, np.where(pos < n_train + val, 1, 2))
    labels = np.empty_like(labels_sorted)
    labels[order] = labels_sorted
    return labels


def cold_item_labels(items: np.ndarray, num_items: int, seed: int, ratio: float = 0.2) -> np.ndarray:
    """Item cold-start labels (LATTICE's ``cold_start.py`` recipe, seeded).

    ``int(ratio * num_items)`` item ids are drawn without replacement; the first half
    become test items, the rest validation items.

    Returns:
        ``x_label`` per interaction, ``[E]`` int64.
    """
    if not 0.0 < ratio < 1.0:
        raise SplitError(f"cold_ratio must be in (0, 1), got {ratio}")
    rng = np.random.default_rng(seed)
    held = rng.choice(num_items, size=int(ratio * num_items), replace=False)
    n_test = held.shape[0] // 2
    item_label = np.zeros(num_items, dtype=np.int64)
    item_label[held[:n_test]] = 2
    item_label[held[n_test:]] = 1
    return item_label[np.asarray(items, dtype=np.int64)]


def to_csr(rows: Tensor, cols: Tensor, num_rows: int) -> tuple[Tensor, Tensor]:
    """CSR ``(indptr [num_rows + 1], indices [E])`` of ``(rows, cols)`` pairs, columns sorted per row."""
    key = rows * (int(cols.max()) + 1 if cols.numel() else 1) + cols
    perm = torch.argsort(key)
    counts = torch.bincount(rows, minlength=num_rows)
    indptr = torch.zeros(num_rows + 1, dtype=torch.long)
    indptr[1:] = torch.cumsum(counts, 0)
    return indptr, cols[perm]


@dataclass
class RecSplit:
    """Interactions of each stage.

    Args:
        num_users: number of users (``max(userID) + 1`` over the whole file).
        num_items: number of items (``max(itemID) + 1`` over the whole file).
        train: train interactions ``[2, E_train]`` (user, item).
        valid: validation interactions ``[2, E_valid]``.
        test: test interactions ``[2, E_test]``.
        summary: load statistics (counts, cold users/items, dropped rows).
    """

    num_users: int
    num_items: int
    train: Tensor
    valid: Tensor
    test: Tensor
    summary: dict = field(default_factory=dict)
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def edge_label_index(self, stage: Stage) -> Tensor:
        """Interactions of ``stage`` as ``[2, E]``."""
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")
        return getattr(self, stage)

    def csr(self, stage: Stage) -> tuple[Tensor, Tensor]:
        """CSR ``(indptr [U + 1], items)`` of ``stage``'s interactions, items sorted per user."""
        key = ("csr", stage)
        if key not in self._cache:
            e = self.edge_label_index(stage)
            self._cache[key] = to_csr(e[0], e[1], self.num_users)
        return self._cache[key]

    def eval_users(self, stage: Stage) -> Tensor:
        """Users with at least one interaction in ``stage``, ascending."""
        key = ("users", stage)
        if key not in self._cache:
            self._cache[key] = torch.unique(self.edge_label_index(stage)[0])
        return self._cache[key]

    @property
    def train_items(self) -> Tensor:
        """Items that occur in the train split (MMRec's negative-sampling pool), ascending."""
        if "train_items" not in self._cache:
            self._cache["train_items"] = torch.unique(self.train[1])
        return self._cache["train_items"]

    def to_labels(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All interactions as ``(users, items, x_label)`` arrays (for writing MMRec files)."""
        us, its, ls = [], [], []
        for label, stage in enumerate(STAGES):
            e = self.edge_label_index(stage)
            us.append(e[0].numpy())
            its.append(e[1].numpy())
            ls.append(np.full(e.size(1), label, dtype=np.int64))
        return np.concatenate(us), np.concatenate(its), np.concatenate(ls)
