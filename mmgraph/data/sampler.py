"""Vectorised uniform negative sampling (no per-user Python loop)."""

from __future__ import annotations

import torch
from torch import Tensor

from mmgraph.data.mmrec import DatasetError
from mmgraph.data.split import RecSplit
from mmgraph.typing import BPRBatch


class UniformNegativeSampler:
    r"""One negative per positive, uniform over the train item pool, excluding the user's train items.

    This is MMRec's distribution (``TrainDataLoader``): the pool is the set of items
    that occur in the train split, and a draw is rejected while it is one of the
    user's train items. Validation/test items of the user may be drawn.

    All draws are done at once; collisions (``u·I + j`` found in the sorted key array
    of train pairs by ``searchsorted``) are redrawn until none is left.

    Args:
        split: the dataset split (its train interactions).
        generator: RNG for the draws (the trainer owns it, so resuming restores it).
    """

    def __init__(self, split: RecSplit, generator: torch.Generator | None = None) -> None:
        self.num_items = split.num_items
        self.pool = split.train_items
        self.train = split.train
        self.keys = torch.sort(self.train[0] * self.num_items + self.train[1]).values
        self.generator = generator
        deg = torch.bincount(self.train[0], minlength=split.num_users)
        full = torch.nonzero(deg >= self.pool.numel()).flatten()
        if full.numel():
            raise DatasetError(
                f"user {int(full[0])} has interacted with every one of the {self.pool.numel()} train items "
                f"({full.numel()} such users in total): no negative item can be sampled for BPR; remove "
                "these users from the .inter file or add items they have not seen"
            )

    def _is_pos(self, users: Tensor, items: Tensor) -> Tensor:
        q = users * self.num_items + items
        pos = torch.searchsorted(self.keys, q).clamp_max(self.keys.numel() - 1)
        return self.keys[pos] == q

    def sample(self, users: Tensor) -> Tensor:
        """A negative item for every entry of ``users`` (``[B] -> [B]``)."""
        neg = self.pool[torch.randint(self.pool.numel(), users.shape, generator=self.generator)]
        bad = torch.nonzero(self._is_pos(users, neg)).flatten()
        while bad.numel():
            neg[bad] = self.pool[torch.randint(self.pool.numel(), bad.shape, generator=self.generator)]
            bad = bad[self._is_pos(users[bad], neg[bad])]
        return neg

    def epoch(self) -> BPRBatch:
        """Every train interaction in a random order, each with a fresh negative."""
        perm = torch.randperm(self.train.size(1), generator=self.generator)
        users, pos = self.train[0][perm], self.train[1][perm]
        return BPRBatch(users, pos, self.sample(users))
