"""Per-user metric arrays and the cold-start breakdown of the full-ranking evaluator, against
independent oracles: the averaged metrics, a per-user Python loop, and an evaluation on a split
whose catalogue holds only the held-out items."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmgraph.data.split import RecSplit
from mmgraph.evaluation import FullRankingEvaluator
from tests.evaluation.test_full_ranking import TableModel, naive_metric, random_split, random_table

U, I = 60, 45


@pytest.fixture(scope="module")
def case():
    return random_split(U, I, seed=5), random_table(U, I, seed=5)


@pytest.mark.parametrize("stage", ["valid", "test"])
def test_per_user_arrays_average_to_the_metrics(case, stage):
    split, table = case
    ev = FullRankingEvaluator(ks=[5, 20], batch_size=7)
    metrics, rows = ev.evaluate(TableModel(table), None, split, stage, per_user=True)
    assert metrics == ev.evaluate(TableModel(table), None, split, stage)  # same values either way
    assert rows["users"].tolist() == split.eval_users(stage).tolist()
    per_user_keys = {k for k in metrics if not k.startswith(("coverage", "gini"))}
    assert set(rows) - {"users"} == per_user_keys
    for key in per_user_keys:
        assert rows[key].shape == rows["users"].shape and rows[key].dtype == np.float64
        assert rows[key].mean() == pytest.approx(metrics[key], abs=1e-12), key


def test_per_user_values_match_a_loop(case):
    split, table = case
    _, rows = FullRankingEvaluator(ks=[10], metrics=["recall", "ndcg", "mrr"]).evaluate(
        TableModel(table), None, split, "test", per_user=True)
    train = {(u, i) for u, i in split.train.T.tolist()}
    for n, u in enumerate(rows["users"].tolist()):
        gt = set(split.test[1][split.test[0] == u].tolist())
        ranked = sorted((i for i in range(I) if (u, i) not in train), key=lambda i: -table[u, i].item())[:10]
        r = [int(i in gt) for i in ranked] + [0] * (10 - len(ranked))
        for m in ("recall", "ndcg", "mrr"):
            assert rows[f"{m}@10"][n] == pytest.approx(naive_metric(m, r, len(gt), 10), abs=1e-12), (m, u)


# --------------------------------------------------------------------------- cold start

def cold_case(seed: int = 3):
    """20% of the items held out: 4 test-only and 5 valid-only items, never in train."""
    g = torch.Generator().manual_seed(seed)
    held = torch.randperm(I, generator=g)[:9]
    test_items, valid_items = held[:4], held[4:]
    warm = torch.tensor([i for i in range(I) if i not in held.tolist()])
    train, valid, test = [], [], []
    for u in range(U):
        train += [(u, int(i)) for i in warm[torch.randperm(warm.numel(), generator=g)[:12]]]
        if u % 3:  # some users without a test item
            test += [(u, int(i)) for i in test_items[torch.randperm(4, generator=g)[: 1 + u % 3]]]
        valid += [(u, int(valid_items[u % 5]))]
    e = lambda p: torch.tensor(p).T.contiguous()  # noqa: E731
    return RecSplit(U, I, e(train), e(valid), e(test)), test_items


def test_cold_recall_equals_recall_on_the_held_out_catalogue():
    split, test_items = cold_case()
    table = random_table(U, I, seed=9)
    ev = FullRankingEvaluator(ks=[1, 2, 3], metrics=["recall", "ndcg"])
    got = ev.evaluate(TableModel(table), None, split, "test")
    assert {f"cold_{m}@{k}" for m in ("recall", "ndcg", "share") for k in (1, 2, 3)} <= set(got)
    # oracle: the same users and scores, a catalogue of the held-out test items only
    held = torch.sort(test_items).values
    remap = torch.full((I,), -1)
    remap[held] = torch.arange(held.numel())
    sub = RecSplit(U, held.numel(), torch.empty(2, 0, dtype=torch.long), torch.empty(2, 0, dtype=torch.long),
                   torch.stack([split.test[0], remap[split.test[1]]]))
    ref = FullRankingEvaluator(ks=[1, 2, 3], metrics=["recall", "ndcg"], cold_metrics=False).evaluate(
        TableModel(table[:, held]), None, sub, "test")
    for m in ("recall", "ndcg"):
        for k in (1, 2, 3):
            assert got[f"cold_{m}@{k}"] == pytest.approx(ref[f"{m}@{k}"], abs=1e-12), (m, k)


def test_cold_share_counts_held_out_items_in_the_full_top_k():
    split, test_items = cold_case()
    table = random_table(U, I, seed=4)
    table[:, test_items[0]] = 10.0  # one held-out test item on top of every list
    got, rows = FullRankingEvaluator(ks=[1, 5]).evaluate(TableModel(table), None, split, "test", per_user=True)
    assert got["cold_share@1"] == pytest.approx(1.0)
    train = {(u, i) for u, i in split.train.T.tolist()}
    held = set(test_items.tolist())
    ref = []
    for u in rows["users"].tolist():
        ranked = sorted((i for i in range(I) if (u, i) not in train), key=lambda i: -table[u, i].item())[:5]
        ref.append(sum(i in held for i in ranked) / 5)
    assert rows["cold_share@5"].tolist() == pytest.approx(ref, abs=1e-12)
    assert got["cold_share@5"] == pytest.approx(np.mean(ref), abs=1e-12)
    assert np.nanmean(rows["cold_recall@5"]) == pytest.approx(got["cold_recall@5"], abs=1e-12)


def test_cold_metrics_auto_only_on_a_cold_split(case):
    split, table = case  # a random split: held-out items are not the rule
    got = FullRankingEvaluator(ks=[5]).evaluate(TableModel(table), None, split, "test")
    assert not any(k.startswith("cold_") for k in got)
    with pytest.raises(ValueError, match="no item unseen"):
        FullRankingEvaluator(ks=[5], cold_metrics=True).evaluate(
            TableModel(table), None, RecSplit(2, 3, torch.tensor([[0, 1], [0, 1]]), torch.tensor([[0], [1]]),
                                              torch.tensor([[1], [0]])), "test")
    cold_split, _ = cold_case()
    off = FullRankingEvaluator(ks=[5], cold_metrics=False).evaluate(TableModel(table), None, cold_split, "test")
    assert not any(k.startswith("cold_") for k in off)


def test_users_without_held_out_positives_are_nan_in_per_user_cold_arrays():
    split, test_items = cold_case()
    # forced on a split where some test items are warm: only users with a held-out test item count
    warm_test = torch.tensor([[0, 1], [int(split.train[1][0]), int(split.train[1][1])]])
    mixed = RecSplit(U, I, split.train, split.valid, torch.cat([split.test, warm_test], 1))
    got, rows = FullRankingEvaluator(ks=[5], metrics=["recall"], cold_metrics=True).evaluate(
        TableModel(random_table(U, I, seed=1)), None, mixed, "test", per_user=True)
    has_cold = np.isin(rows["users"], split.test[0].numpy())
    assert np.isnan(rows["cold_recall@5"][~has_cold]).all() and not np.isnan(rows["cold_recall@5"][has_cold]).any()
    assert np.nanmean(rows["cold_recall@5"]) == pytest.approx(got["cold_recall@5"], abs=1e-12)
