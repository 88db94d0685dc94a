"""Split rules (MMRec's per-user random rule, item cold start) and RecSplit's views."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
import torch

from mmgraph.data import RecSplit, SplitError, cold_item_labels, load_mmrec, mmrec_random_labels
from mmgraph.data.split import to_csr


def expected_counts(n: int) -> tuple[int, int, int]:
    """MMRec's rule, written out independently (train, valid, test)."""
    if n < 10:
        return n - 2, 1, 1
    vt = int(0.2 * n)
    val = vt // 2
    return n - vt, val, vt - val


def interleaved_users(sizes: dict[int, int], seed: int = 0) -> np.ndarray:
    users = np.concatenate([np.full(n, u) for u, n in sizes.items()])
    return np.random.default_rng(seed).permutation(users)


# --------------------------------------------------------------------------- mmrec_random_labels


def test_expected_counts_reference():
    # a few values of the rule, by hand
    assert expected_counts(3) == (1, 1, 1)
    assert expected_counts(9) == (7, 1, 1)
    assert expected_counts(10) == (8, 1, 1)
    assert expected_counts(14) == (12, 1, 1)
    assert expected_counts(15) == (12, 1, 2)
    assert expected_counts(29) == (24, 2, 3)
    assert expected_counts(100) == (80, 10, 10)


def test_random_labels_follow_mmrec_rule_exactly():
    sizes = {u: n for u, n in enumerate(list(range(3, 40)) + [49, 50, 51, 99, 100, 101, 333])}
    users = interleaved_users(sizes)
    labels = mmrec_random_labels(users, seed=7)
    assert labels.dtype == np.int64 and labels.shape == users.shape
    assert set(np.unique(labels).tolist()) <= {0, 1, 2}
    for u, n in sizes.items():
        got = np.bincount(labels[users == u], minlength=3)
        assert tuple(got.tolist()) == expected_counts(n), (u, n)


def test_random_labels_handle_gaps_in_user_ids():
    users = interleaved_users({0: 5, 7: 12, 100: 3})
    labels = mmrec_random_labels(users, seed=0)
    for u, n in ((0, 5), (7, 12), (100, 3)):
        assert tuple(np.bincount(labels[users == u], minlength=3).tolist()) == expected_counts(n)


def test_random_labels_are_seeded():
    users = interleaved_users({u: 5 + u for u in range(40)})
    a = mmrec_random_labels(users, seed=3)
    b = mmrec_random_labels(users.copy(), seed=3)
    np.testing.assert_array_equal(a, b)
    c = mmrec_random_labels(users, seed=4)
    assert not np.array_equal(a, c)
    # the choice within a user is random: each row is held out under some seed
    held = np.zeros(users.shape[0], dtype=bool)
    for s in range(60):
        held |= mmrec_random_labels(users, seed=s) > 0
    assert held[users == 0].all()


@pytest.mark.parametrize("n", [1, 2])
def test_random_labels_refuse_users_with_fewer_than_three(n):
    users = interleaved_users({0: 5, 1: 6, 2: n, 3: n})
    with pytest.raises(SplitError, match=rf"user 2 has {n} interaction\(s\).*at least 3 .*\(2 such users\)"):
        mmrec_random_labels(users, seed=0)


# --------------------------------------------------------------------------- cold_item_labels


@pytest.mark.parametrize("num_items,ratio", [(50, 0.2), (55, 0.2), (101, 0.2), (40, 0.5)])
def test_cold_item_labels_hold_out_items(num_items, ratio):
    rng = np.random.default_rng(0)
    items = np.concatenate([np.arange(num_items), rng.integers(0, num_items, size=10 * num_items)])
    labels = cold_item_labels(items, num_items, seed=5, ratio=ratio)
    assert labels.shape == items.shape and labels.dtype == np.int64
    per_item = defaultdict(set)
    for i, lab in zip(items.tolist(), labels.tolist()):
        per_item[i].add(lab)
    assert all(len(v) == 1 for v in per_item.values())  # every interaction of an item: one stage
    item_label = {i: v.pop() for i, v in per_item.items()}
    held = int(ratio * num_items)
    n_test = sum(lab == 2 for lab in item_label.values())
    n_valid = sum(lab == 1 for lab in item_label.values())
    assert n_test + n_valid == held
    assert n_test == held // 2 and n_valid == held - held // 2


def test_cold_item_labels_are_seeded():
    items = np.arange(200).repeat(3)
    a = cold_item_labels(items, 200, seed=1)
    np.testing.assert_array_equal(a, cold_item_labels(items, 200, seed=1))
    assert not np.array_equal(a, cold_item_labels(items, 200, seed=2))


def test_cold_item_labels_count_items_without_interactions():
    # ids that never occur still belong to the item set that is sampled from
    # (a label is a function of the item id and the seed, not of which items occur)
    full = cold_item_labels(np.arange(1000), 1000, seed=0)
    assert int((full > 0).sum()) == 200
    items = np.array([5, 999, 5, 17, 400])
    np.testing.assert_array_equal(cold_item_labels(items, 1000, seed=0), full[items])


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.1, 1.5])
def test_cold_item_labels_reject_bad_ratio(ratio):
    with pytest.raises(SplitError, match="cold_ratio"):
        cold_item_labels(np.arange(10), 10, seed=0, ratio=ratio)


# --------------------------------------------------------------------------- load_mmrec splits


def write_unlabelled(root, n_users=30, n_items=40, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        for i in sorted(rng.choice(n_items, size=3 + (u * 7) % 15, replace=False).tolist()):
            rows.append((u, i))
    # make every item occur
    have = {i for _, i in rows}
    rows += [(0, i) for i in range(n_items) if i not in have and (0, i) not in rows]
    folder = root / "plain"
    folder.mkdir()
    body = "\n".join(f"{u}\t{i}\t1" for u, i in rows)
    (folder / "plain.inter").write_text("userID\titemID\trating\n" + body + "\n")
    return rows


def as_pairs(e):
    return set(map(tuple, e.t().tolist()))


def test_load_random_split_on_file_without_label(tmp_path):
    rows = write_unlabelled(tmp_path)
    with pytest.raises(Exception, match="x_label"):
        load_mmrec(tmp_path, "plain", modalities=[])  # split='label' needs x_label
    data, split = load_mmrec(tmp_path, "plain", modalities=[], split="random", split_seed=11)
    users = np.array([u for u, _ in rows])
    labels = mmrec_random_labels(users, 11)
    for lab, stage in enumerate(("train", "valid", "test")):
        assert as_pairs(split.edge_label_index(stage)) == {r for r, lb in zip(rows, labels) if lb == lab}
    assert split.summary["split"] == "random"
    assert split.summary["cold_users_valid"] == 0 and split.summary["cold_users_test"] == 0
    for u in set(users.tolist()):
        n = int((users == u).sum())
        got = (
            int((split.train[0] == u).sum()),
            int((split.valid[0] == u).sum()),
            int((split.test[0] == u).sum()),
        )
        assert got == expected_counts(n)
    _, again = load_mmrec(tmp_path, "plain", modalities=[], split="random", split_seed=11)
    assert torch.equal(again.test, split.test)
    _, other = load_mmrec(tmp_path, "plain", modalities=[], split="random", split_seed=12)
    assert as_pairs(other.test) != as_pairs(split.test)


def test_load_cold_split(tmp_path):
    write_unlabelled(tmp_path, n_users=60, n_items=50)
    _, split = load_mmrec(
        tmp_path, "plain", modalities=[], split="cold", split_seed=3, filter_cold_users=False
    )
    train_items = set(split.train[1].tolist())
    valid_items = set(split.valid[1].tolist())
    test_items = set(split.test[1].tolist())
    assert valid_items and test_items
    assert not (valid_items & train_items) and not (test_items & train_items)
    assert not (valid_items & test_items)
    assert len(valid_items | test_items) == int(0.2 * 50)
    assert split.summary["cold_items_valid"] == len(valid_items)
    assert split.summary["cold_items_test"] == len(test_items)
    _, other = load_mmrec(tmp_path, "plain", modalities=[], split="cold", split_seed=4, filter_cold_users=False)
    assert set(other.test[1].tolist()) != test_items
    _, wider = load_mmrec(
        tmp_path, "plain", modalities=[], split="cold", split_seed=3, cold_ratio=0.4, filter_cold_users=False
    )
    assert len(set(wider.valid[1].tolist()) | set(wider.test[1].tolist())) == 20


# --------------------------------------------------------------------------- RecSplit views


@pytest.fixture
def random_split():
    g = torch.Generator().manual_seed(0)
    U, I = 23, 31
    key = torch.randperm(U * I, generator=g)[:200]
    users, items = key // I, key % I
    lab = torch.randint(0, 5, (200,), generator=g).clamp_max(2)  # mostly train
    e = torch.stack([users, items])
    return RecSplit(U, I, e[:, lab == 0], e[:, lab == 1], e[:, lab == 2])


@pytest.mark.parametrize("stage", ["train", "valid", "test"])
def test_csr_matches_naive(random_split, stage):
    e = random_split.edge_label_index(stage)
    naive = defaultdict(list)
    for u, i in e.t().tolist():
        naive[u].append(i)
    indptr, items = random_split.csr(stage)
    assert indptr.shape == (random_split.num_users + 1,)
    assert int(indptr[0]) == 0 and int(indptr[-1]) == e.size(1)
    for u in range(random_split.num_users):
        got = items[indptr[u] : indptr[u + 1]].tolist()
        assert got == sorted(naive.get(u, [])), u
    assert random_split.csr(stage)[0] is indptr  # cached


@pytest.mark.parametrize("stage", ["train", "valid", "test"])
def test_eval_users_matches_naive(random_split, stage):
    e = random_split.edge_label_index(stage)
    assert random_split.eval_users(stage).tolist() == sorted(set(e[0].tolist()))


def test_train_items_matches_naive(random_split):
    assert random_split.train_items.tolist() == sorted(set(random_split.train[1].tolist()))
    assert len(random_split.train_items) < random_split.num_items  # some items not in train


def test_edge_label_index_rejects_unknown_stage(random_split):
    with pytest.raises(ValueError, match="unknown stage 'val'"):
        random_split.edge_label_index("val")


def test_to_labels_roundtrip(random_split):
    users, items, labels = random_split.to_labels()
    rebuilt = {(u, i): lab for u, i, lab in zip(users.tolist(), items.tolist(), labels.tolist())}
    for lab, stage in enumerate(("train", "valid", "test")):
        for p in as_pairs(random_split.edge_label_index(stage)):
            assert rebuilt[p] == lab
    assert len(rebuilt) == sum(random_split.edge_label_index(s).size(1) for s in ("train", "valid", "test"))


def test_to_csr_handles_unsorted_input_and_empty_rows():
    rows = torch.tensor([3, 0, 3, 3, 0])
    cols = torch.tensor([9, 4, 1, 5, 2])
    indptr, idx = to_csr(rows, cols, 5)
    assert indptr.tolist() == [0, 2, 2, 2, 5, 5]
    assert idx.tolist() == [2, 4, 1, 5, 9]
