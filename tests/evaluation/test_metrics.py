"""Top-K metrics on hit matrices: hand-computed values, a naive per-user reference
implementation of the protocol definitions (MMRec's), and PyG's LinkPred metrics."""

from __future__ import annotations

import math
import random

import pytest
import torch

from mmgraph.evaluation.metrics import (
    METRICS,
    compute,
    hit_at_k,
    map_at_k,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
)

KS = (5, 10, 20, 50)


def run(name: str, hits: torch.Tensor, num_pos: torch.Tensor, k: int) -> list[float]:
    return compute(name, hits, num_pos, k).tolist()


# --------------------------------------------------------------------------- by hand

# 4 users x 3 ranks (RecBole-style); columns are ranks 1, 2, 3.
HITS = torch.tensor([[1, 0, 1],
                     [0, 1, 0],
                     [0, 0, 0],
                     [1, 1, 0]], dtype=torch.bool)
NUM_POS = torch.tensor([3, 1, 2, 5])
D2 = 1 / math.log2(3)  # discount of rank 2; rank 1 -> 1, rank 3 -> 1/log2(4) = 1/2

EXPECTED = {
    # hits@k / P_u
    "recall": {1: [1 / 3, 0, 0, 1 / 5], 2: [1 / 3, 1, 0, 2 / 5], 3: [2 / 3, 1, 0, 2 / 5]},
    # hits@k / k
    "precision": {1: [1, 0, 0, 1], 2: [1 / 2, 1 / 2, 0, 1], 3: [2 / 3, 1 / 3, 0, 2 / 3]},
    "hit": {1: [1, 0, 0, 1], 2: [1, 1, 0, 1], 3: [1, 1, 0, 1]},
    # DCG / IDCG with IDCG over min(k, P_u) ideal hits:
    # u0 (P=3): k=1 1/1; k=2 1/(1+D2); k=3 (1+1/2)/(1+D2+1/2)
    # u1 (P=1): k=1 0; k=2 D2/1; k=3 D2/1
    # u3 (P=5): k=1 1/1; k=2 (1+D2)/(1+D2); k=3 (1+D2)/(1+D2+1/2)
    "ndcg": {
        1: [1, 0, 0, 1],
        2: [1 / (1 + D2), D2, 0, 1],
        3: [1.5 / (1 + D2 + 0.5), D2, 0, (1 + D2) / (1 + D2 + 0.5)],
    },
    # Σ_j r_j · prec@j / min(k, P_u):
    # u0: k=1 1/1; k=2 1/2; k=3 (1 + 2/3)/3 = 5/9
    # u1: k=1 0;   k=2 (1/2)/1; k=3 (1/2)/1
    # u3: k=1 1/1; k=2 (1 + 1)/2; k=3 (1 + 1)/3
    "map": {1: [1, 0, 0, 1], 2: [1 / 2, 1 / 2, 0, 1], 3: [5 / 9, 1 / 2, 0, 2 / 3]},
    # 1 / rank of the first hit: u0 rank 1, u1 rank 2, u2 none, u3 rank 1
    "mrr": {1: [1, 0, 0, 1], 2: [1, 1 / 2, 0, 1], 3: [1, 1 / 2, 0, 1]},
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("k", [1, 2, 3])
def test_hand_computed(name, k):
    assert run(name, HITS, NUM_POS, k) == pytest.approx(EXPECTED[name][k], abs=1e-12)


def test_hand_computed_float_hits_and_direct_functions():
    """The same values from the direct functions and a float hit matrix."""
    h = HITS.float()
    for k in (1, 2, 3):
        assert recall_at_k(h, NUM_POS, k).tolist() == pytest.approx(EXPECTED["recall"][k], abs=1e-12)
        assert precision_at_k(h, k).tolist() == pytest.approx(EXPECTED["precision"][k], abs=1e-12)
        assert ndcg_at_k(h, NUM_POS, k).tolist() == pytest.approx(EXPECTED["ndcg"][k], abs=1e-12)
        assert map_at_k(h, NUM_POS, k).tolist() == pytest.approx(EXPECTED["map"][k], abs=1e-12)
        assert hit_at_k(h, k).tolist() == pytest.approx(EXPECTED["hit"][k], abs=1e-12)


def test_output_is_per_user_float64():
    for name in METRICS:
        out = compute(name, HITS, NUM_POS, 2)
        assert out.shape == (4,) and out.dtype == torch.float64


# --------------------------------------------------------------------------- edge cases

@pytest.mark.parametrize("k", [1, 3, 5, 8])
def test_perfect_ranking(k):
    width = 8
    num_pos = torch.tensor([1, 2, 5, 8, 12])
    # the first P_u ranks are hits
    hits = torch.arange(width)[None, :] < num_pos[:, None]
    for name in ("ndcg", "map", "hit"):
        assert run(name, hits, num_pos, k) == pytest.approx([1.0] * 5, abs=1e-12), name
    recall = run("recall", hits, num_pos, k)
    for u, p in enumerate(num_pos.tolist()):
        assert recall[u] == pytest.approx(1.0 if p <= k else k / p, abs=1e-12)
    prec = run("precision", hits, num_pos, k)
    assert prec == pytest.approx([min(p, k) / k for p in num_pos.tolist()], abs=1e-12)


def test_no_hits_gives_zero():
    hits = torch.zeros(6, 10, dtype=torch.bool)
    num_pos = torch.tensor([1, 2, 3, 10, 20, 50])
    for name in METRICS:
        for k in (1, 5, 10):
            out = compute(name, hits, num_pos, k)
            assert torch.isfinite(out).all()
            assert (out == 0).all(), (name, k)


def test_fewer_positives_than_k():
    """P_u < K: NDCG and MAP normalise by min(K, P_u); Recall by P_u; Precision by K."""
    # one positive at rank 3, K = 5
    hits = torch.tensor([[0, 0, 1, 0, 0]], dtype=torch.bool)
    num_pos = torch.tensor([1])
    assert run("recall", hits, num_pos, 5) == pytest.approx([1.0])
    assert run("precision", hits, num_pos, 5) == pytest.approx([1 / 5])
    assert run("ndcg", hits, num_pos, 5) == pytest.approx([0.5])  # (1/log2 4) / 1
    assert run("map", hits, num_pos, 5) == pytest.approx([1 / 3])  # (1/3) / min(5, 1)
    # two positives, both found at ranks 2 and 5, K = 5
    hits = torch.tensor([[0, 1, 0, 0, 1]], dtype=torch.bool)
    num_pos = torch.tensor([2])
    idcg = 1 + 1 / math.log2(3)
    assert run("ndcg", hits, num_pos, 5) == pytest.approx([(1 / math.log2(3) + 1 / math.log2(6)) / idcg])
    assert run("map", hits, num_pos, 5) == pytest.approx([(1 / 2 + 2 / 5) / 2])
    assert run("recall", hits, num_pos, 5) == pytest.approx([1.0])


def test_recall_denominator_is_num_pos_not_min_k():
    hits = torch.ones(1, 5, dtype=torch.bool)
    assert run("recall", hits, torch.tensor([20]), 5) == pytest.approx([5 / 20])
    # ... while NDCG/MAP are 1 (ideal ranking within the cut-off)
    assert run("ndcg", hits, torch.tensor([20]), 5) == pytest.approx([1.0])
    assert run("map", hits, torch.tensor([20]), 5) == pytest.approx([1.0])


@pytest.mark.parametrize("name", METRICS)
def test_k_larger_than_width_raises(name):
    with pytest.raises(ValueError, match="exceeds"):
        compute(name, HITS, NUM_POS, 4)


def test_unknown_metric_raises():
    with pytest.raises(ValueError, match="unknown metric"):
        compute("auc", HITS, NUM_POS, 2)


def test_k_equal_to_width_works():
    for name in METRICS:
        assert compute(name, HITS, NUM_POS, 3).shape == (4,)


# --------------------------------------------------------------------------- naive reference

def naive(name: str, r: list[int], p: int, k: int) -> float:
    """One user's metric from the protocol definitions, in pure Python."""
    r = r[:k]
    n_hit = sum(r)
    if name == "recall":
        return n_hit / p
    if name == "precision":
        return n_hit / k
    if name == "hit":
        return 1.0 if n_hit > 0 else 0.0
    if name == "ndcg":
        dcg = 0.0
        for j, rel in enumerate(r, start=1):
            if rel:
                dcg += 1.0 / math.log2(j + 1)
        idcg = 0.0
        for j in range(1, min(k, p) + 1):
            idcg += 1.0 / math.log2(j + 1)
        return dcg / idcg
    if name == "map":
        total, found = 0.0, 0
        for j, rel in enumerate(r, start=1):
            if rel:
                found += 1
                total += found / j
        return total / min(k, p)
    if name == "mrr":
        for j, rel in enumerate(r, start=1):
            if rel:
                return 1.0 / j
        return 0.0
    raise AssertionError(name)


def random_hits(num_users: int, width: int, seed: int) -> tuple[list[list[int]], list[int]]:
    """Consistent random users: P_u in [1, 3 * width], hits <= P_u, varied densities,
    with many users having fewer positives than K."""
    rng = random.Random(seed)
    rows, num_pos = [], []
    for u in range(num_users):
        mode = u % 4
        if mode == 0:
            p = rng.randint(1, 4)  # fewer positives than any K in KS
        elif mode == 1:
            p = rng.randint(1, width)
        else:
            p = rng.randint(1, 3 * width)
        n_hit = rng.randint(0, min(p, width))
        if mode == 3 and u % 8 == 3:
            n_hit = 0  # some users without any hit
        cols = set(rng.sample(range(width), n_hit))
        rows.append([1 if j in cols else 0 for j in range(width)])
        num_pos.append(p)
    return rows, num_pos


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", METRICS)
def test_matches_naive_reference(name, seed):
    width = max(KS)
    rows, num_pos = random_hits(400, width, seed)
    hits = torch.tensor(rows, dtype=torch.bool)
    np_t = torch.tensor(num_pos)
    assert sum(p < 5 for p in num_pos) > 50  # many users with P_u < K
    for k in KS:
        got = compute(name, hits, np_t, k).tolist()
        ref = [naive(name, r, p, k) for r, p in zip(rows, num_pos)]
        assert got == pytest.approx(ref, abs=1e-6), (name, k)
        # the hit matrix may be wider than k; cutting it first changes nothing
        got_cut = compute(name, hits[:, :k], np_t, k).tolist()
        assert got_cut == pytest.approx(got, abs=1e-12), (name, k)


@pytest.mark.parametrize("name", METRICS)
def test_matches_naive_reference_dense_hits(name):
    """Dense hit matrices (every user has many hits, P_u close to the hit count)."""
    rng = random.Random(7)
    width = 50
    rows, num_pos = [], []
    for _ in range(300):
        r = [1 if rng.random() < 0.7 else 0 for _ in range(width)]
        rows.append(r)
        num_pos.append(max(1, sum(r) + rng.randint(0, 3)))
    hits = torch.tensor(rows, dtype=torch.float32)
    for k in (1, 2, 3, *KS):
        got = compute(name, hits, torch.tensor(num_pos), k).tolist()
        ref = [naive(name, r, p, k) for r, p in zip(rows, num_pos)]
        assert got == pytest.approx(ref, abs=1e-6), (name, k)


# --------------------------------------------------------------------------- PyG cross-check

def to_pyg(rows: list[list[int]], num_pos: list[int]):
    """Rankings with the given hit pattern: user u's prediction at rank j is item j;
    the relevant items are the hit columns plus (P_u - hits) items outside the ranking."""
    width = len(rows[0])
    pred = torch.arange(width).repeat(len(rows), 1)
    users, items = [], []
    for u, (r, p) in enumerate(zip(rows, num_pos)):
        rel = [j for j, v in enumerate(r) if v]
        rel += [width + m for m in range(p - len(rel))]
        users += [u] * len(rel)
        items += rel
    return pred, torch.tensor([users, items])


# PyG 2.8.1's LinkPred metrics (binary relevance, unweighted) use the same definitions
# as MMRec: Recall divides by the label count (not min(K, P_u)), Precision by k, NDCG's
# IDCG sums 1/log2(j+1) over min(k, P_u) ranks, MAP divides by min(k, P_u), and
# HitRatio is 1[any hit]. They average over users with >= 1 label, in float32. They
# differ for *weighted* NDCG (graded relevance), which the zoo does not use, and
# LATTICE's original NDCG (IDCG over the hits found) differs from both.
PYG = {
    "recall": "LinkPredRecall",
    "precision": "LinkPredPrecision",
    "ndcg": "LinkPredNDCG",
    "map": "LinkPredMAP",
    "hit": "LinkPredHitRatio",
    "mrr": "LinkPredMRR",
}


@pytest.mark.parametrize("name", METRICS)
def test_matches_pyg_linkpred(name):
    pyg_metrics = pytest.importorskip("torch_geometric.metrics")
    cls = getattr(pyg_metrics, PYG[name], None)
    if cls is None:
        pytest.skip(f"{PYG[name]} not in this PyG version")
    rows, num_pos = random_hits(200, max(KS), seed=11)
    pred, label_index = to_pyg(rows, num_pos)
    hits = torch.tensor(rows, dtype=torch.bool)
    for k in KS:
        ours = compute(name, hits, torch.tensor(num_pos), k)
        # mean over all users
        metric = cls(k)
        metric.update(pred, label_index)
        assert metric.compute().item() == pytest.approx(ours.mean().item(), abs=1e-6), (name, k)
        # per user (one user per metric object) on a sample of users
        for u in range(0, 200, 9):
            m = cls(k)
            m.update(pred[u:u + 1], label_index[:, label_index[0] == u] * torch.tensor([[0], [1]]))
            assert m.compute().item() == pytest.approx(ours[u].item(), abs=1e-6), (name, k, u)


# --------------------------------------------------------------------------- beyond accuracy

def test_avg_pop_coverage_gini_by_hand():
    from mmgraph.evaluation.metrics import avg_pop_at_k, coverage, gini

    top = torch.tensor([[0, 1, 2], [0, 3, 1]])
    pop = torch.tensor([10, 4, 0, 2, 7])
    assert avg_pop_at_k(top, pop, 2).tolist() == pytest.approx([7.0, 6.0])
    assert avg_pop_at_k(top, pop, 3).tolist() == pytest.approx([14 / 3, 16 / 3])
    counts = torch.bincount(top[:, :2].reshape(-1), minlength=5)  # item 0: 2, 1: 1, 3: 1
    assert coverage(counts) == pytest.approx(3 / 5)
    # sorted counts 0, 0, 1, 1, 2 over n = 5: sum (2i - 6) c_i = (0 + 0 + 0 + 2 + 8) / (5 * 4)
    assert gini(counts) == pytest.approx(10 / 20)
    assert gini(torch.ones(7)) == pytest.approx(0.0)  # equal exposure
    assert gini(torch.tensor([0.0, 0, 0, 5])) == pytest.approx(3 / 4)  # all on one item: (n-1)/n


@pytest.mark.parametrize("seed", [0, 1])
def test_beyond_accuracy_match_naive_and_pyg(seed):
    """avg_pop and coverage against loops and PyG's LinkPredAveragePopularity / LinkPredCoverage;
    gini against the textbook mean-absolute-difference formula."""
    from mmgraph.evaluation.metrics import avg_pop_at_k, coverage, gini

    g = torch.Generator().manual_seed(seed)
    num_items, num_users, k = 60, 40, 10
    top = torch.stack([torch.randperm(num_items, generator=g)[:k] for _ in range(num_users)])
    top[:10] = top[0]  # some identical lists: uneven exposure
    pop = torch.randint(0, 30, (num_items,), generator=g)
    ours = avg_pop_at_k(top, pop, k)
    assert ours.tolist() == pytest.approx([sum(pop[i].item() for i in row) / k for row in top.tolist()])
    counts = torch.bincount(top.reshape(-1), minlength=num_items)
    assert coverage(counts) == pytest.approx(len(set(top.reshape(-1).tolist())) / num_items)
    c = counts.double()
    mad = (c[:, None] - c[None, :]).abs().sum() / (2 * num_items ** 2 * c.mean())
    assert gini(counts) == pytest.approx(mad.item(), abs=1e-12)
    pyg_metrics = pytest.importorskip("torch_geometric.metrics")
    labels = torch.stack([torch.arange(num_users), top[:, 0]])  # any labels: these metrics ignore them
    m = pyg_metrics.LinkPredCoverage(k, num_items)
    m.update(top, labels)
    assert m.compute().item() == pytest.approx(coverage(counts), abs=1e-6)
    m = pyg_metrics.LinkPredAveragePopularity(k, pop.float())
    m.update(top, labels)
    # PyG averages popularity over all K slots of all users (our per-user mean, averaged)
    assert m.compute().item() == pytest.approx(ours.mean().item(), rel=1e-5)
