"""UniformNegativeSampler: MMRec's negative distribution, vectorised and seeded."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from mmgraph.data import RecSplit, UniformNegativeSampler


def make_split(seed: int = 0, U: int = 40, I: int = 60, per_user: int = 12) -> RecSplit:
    """Random train rows; items >= I - 5 occur only in valid/test (not in the pool)."""
    rng = np.random.default_rng(seed)
    train, valid = [], []
    for u in range(U):
        its = rng.choice(I - 5, size=per_user, replace=False)
        train += [(u, int(i)) for i in its[:-1]]
        valid.append((u, int(its[-1])))
        valid.append((u, int(I - 1 - u % 5)))
    t = torch.tensor(train).t().contiguous()
    v = torch.tensor(valid).t().contiguous()
    return RecSplit(U, I, t, v, v[:, :0])


def user_items(split: RecSplit) -> dict[int, set[int]]:
    out: dict[int, set[int]] = {}
    for u, i in split.train.t().tolist():
        out.setdefault(u, set()).add(i)
    return out


def test_negatives_are_never_train_items_of_the_user_and_always_in_the_pool():
    split = make_split()
    s = UniformNegativeSampler(split, torch.Generator().manual_seed(0))
    users = split.train[0].repeat(20)
    neg = s.sample(users)
    assert neg.shape == users.shape and neg.dtype == torch.long
    pos = user_items(split)
    pool = set(split.train_items.tolist())
    assert len(pool) < split.num_items  # the test means something
    for u, j in zip(users.tolist(), neg.tolist()):
        assert j not in pos[u]
        assert j in pool


def test_negatives_follow_uniform_distribution_over_allowed_items():
    # user 0 has 5 train items; the pool has 25 items; 20 are allowed
    train = [(0, i) for i in range(5)] + [(1, i) for i in range(5, 25)] + [(2, 3), (2, 24)]
    split = RecSplit(3, 30, torch.tensor(train).t().contiguous(), torch.tensor([[0], [7]]), torch.tensor([[0], [29]]))
    s = UniformNegativeSampler(split, torch.Generator().manual_seed(123))
    n = 40000
    neg = s.sample(torch.zeros(n, dtype=torch.long))
    counts = Counter(neg.tolist())
    allowed = set(range(5, 25))
    assert set(counts) == allowed  # every allowed item is drawn, nothing else
    expected = n / len(allowed)
    chi2 = sum((counts[j] - expected) ** 2 / expected for j in allowed)
    # 19 degrees of freedom: the 99.99% quantile is about 47
    assert chi2 < 47, chi2
    assert 7 in counts  # the user's validation item may be drawn (MMRec)


def test_a_single_allowed_item_is_always_found():
    # user 0 has every pool item but one: rejection must converge to it
    train = [(0, i) for i in range(9)] + [(1, 9)]
    split = RecSplit(2, 10, torch.tensor(train).t().contiguous(), torch.tensor([[0], [9]]), torch.tensor([[1], [0]]))
    s = UniformNegativeSampler(split, torch.Generator().manual_seed(0))
    neg = s.sample(torch.tensor([0] * 500 + [1] * 500))
    assert (neg[:500] == 9).all()
    assert not (neg[500:] == 9).any()


def test_deterministic_with_seeded_generator():
    split = make_split()
    users = split.train[0]
    a = UniformNegativeSampler(split, torch.Generator().manual_seed(7)).sample(users)
    b = UniformNegativeSampler(split, torch.Generator().manual_seed(7)).sample(users)
    c = UniformNegativeSampler(split, torch.Generator().manual_seed(8)).sample(users)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    ea = UniformNegativeSampler(split, torch.Generator().manual_seed(7)).epoch()
    eb = UniformNegativeSampler(split, torch.Generator().manual_seed(7)).epoch()
    assert all(torch.equal(x, y) for x, y in zip(ea, eb))


def test_generator_state_advances():
    split = make_split()
    s = UniformNegativeSampler(split, torch.Generator().manual_seed(7))
    assert not torch.equal(s.sample(split.train[0]), s.sample(split.train[0]))


def test_raises_when_a_user_has_every_train_item():
    train = [(0, i) for i in range(6)] + [(1, 2), (2, 4)]
    split = RecSplit(3, 8, torch.tensor(train).t().contiguous(), torch.tensor([[1], [7]]), torch.tensor([[2], [0]]))
    with pytest.raises(ValueError, match="user 0 has interacted with every one of the .* train items"):
        UniformNegativeSampler(split)


def test_epoch_covers_every_train_row_once():
    split = make_split(seed=3)
    s = UniformNegativeSampler(split, torch.Generator().manual_seed(1))
    batch = s.epoch()
    assert batch.users.shape == batch.pos_items.shape == batch.neg_items.shape == (split.train.size(1),)
    got = Counter(zip(batch.users.tolist(), batch.pos_items.tolist()))
    want = Counter(map(tuple, split.train.t().tolist()))
    assert got == want and max(got.values()) == 1
    assert not torch.equal(batch.users, split.train[0])  # shuffled
    pos = user_items(split)
    assert all(j not in pos[u] for u, j in zip(batch.users.tolist(), batch.neg_items.tolist()))
    second = s.epoch()
    assert not torch.equal(second.users, batch.users)
    assert Counter(zip(second.users.tolist(), second.pos_items.tolist())) == want


def test_default_generator_works():
    split = make_split()
    neg = UniformNegativeSampler(split).sample(split.train[0][:50])
    pos = user_items(split)
    assert all(j not in pos[u] for u, j in zip(split.train[0][:50].tolist(), neg.tolist()))
