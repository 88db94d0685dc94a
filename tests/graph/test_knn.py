"""Blockwise kNN graphs: known neighbours, loops, weights, block invariance, co-interactions."""

from __future__ import annotations

import math

import pytest
import torch

from mmgraph.graph import cointeraction_knn_graph, knn_graph, scatter_mean_features, topk_cosine

# Points on a circle at these angles (degrees), with different radii (cosine ignores them).
ANGLES = [0, 20, 50, 90, 140, 200, 270]
RADII = [1.0, 3.0, 0.5, 2.0, 7.0, 1.5, 0.2]
# nearest two others of each point, nearest first (by hand from the angle gaps)
NN2 = {0: [1, 2], 1: [0, 2], 2: [1, 3], 3: [2, 4], 4: [3, 5], 5: [4, 6], 6: [5, 0]}


def circle() -> torch.Tensor:
    a = torch.tensor(ANGLES, dtype=torch.float64) * math.pi / 180
    r = torch.tensor(RADII, dtype=torch.float64)
    return torch.stack([r * torch.cos(a), r * torch.sin(a)], 1).float()


def gap_cos(i: int, j: int) -> float:
    return math.cos(math.radians(ANGLES[i] - ANGLES[j]))


def test_topk_cosine_known_neighbours_without_loop():
    vals, idx = topk_cosine(circle(), 2, loop=False)
    assert idx.tolist() == [NN2[i] for i in range(7)]
    want = torch.tensor([[gap_cos(i, j) for j in NN2[i]] for i in range(7)])
    torch.testing.assert_close(vals, want, atol=1e-6, rtol=0)


def test_topk_cosine_known_neighbours_with_loop():
    vals, idx = topk_cosine(circle(), 3, loop=True)
    assert idx.tolist() == [[i] + NN2[i] for i in range(7)]
    torch.testing.assert_close(vals[:, 0], torch.ones(7), atol=1e-6, rtol=0)


@pytest.mark.parametrize("batch_size", [1, 2, 3, None])
def test_knn_graph_edges_on_circle(batch_size):
    ei, w = knn_graph(circle(), 2, loop=False, weighted=True, batch_size=batch_size)
    assert ei.shape == (2, 14) and w.shape == (14,)
    # edge j -> i: row 0 the neighbour, row 1 the node; k incoming edges per node
    assert ei[1].tolist() == [i for i in range(7) for _ in range(2)]
    assert ei[0].tolist() == [j for i in range(7) for j in NN2[i]]
    want = torch.tensor([gap_cos(i, j) for i in range(7) for j in NN2[i]])
    torch.testing.assert_close(w, want, atol=1e-6, rtol=0)
    assert not (ei[0] == ei[1]).any()


def test_knn_graph_loop_includes_self_and_binary_weights():
    ei, w = knn_graph(circle(), 3, loop=True, weighted=False)
    assert torch.equal(w, torch.ones(21))
    for i in range(7):
        nbrs = ei[0][ei[1] == i].tolist()
        assert nbrs == [i] + NN2[i]
    assert int((ei[0] == ei[1]).sum()) == 7


def test_k_validation():
    x = circle()
    with pytest.raises(ValueError, match="k must be positive"):
        knn_graph(x, 0)
    with pytest.raises(ValueError, match="needs at least 8 nodes, got 7"):
        knn_graph(x, 7, loop=False)
    ei, _ = knn_graph(x, 7, loop=True)  # every node, self included
    assert ei.size(1) == 49
    ei, _ = knn_graph(x, 6, loop=False)
    assert ei.size(1) == 42 and not (ei[0] == ei[1]).any()


def dense_topk(x: torch.Tensor, k: int, loop: bool):
    xn = torch.nn.functional.normalize(x.double(), dim=1)
    S = xn @ xn.t()
    if not loop:
        S.fill_diagonal_(float("-inf"))
    return torch.topk(S, k, dim=1)


@pytest.mark.parametrize("loop", [True, False])
@pytest.mark.parametrize("batch_size", [1, 2, 3, 10, 1000, None])
def test_blockwise_equals_dense(loop, batch_size):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(41, 9, generator=g)
    k = 5
    vals, idx = topk_cosine(x, k, loop=loop, batch_size=batch_size)
    dv, di = dense_topk(x, k, loop)
    assert idx.shape == (41, k)
    assert torch.equal(idx, di)
    torch.testing.assert_close(vals.double(), dv, atol=1e-5, rtol=0)
    assert (vals[:, :-1] >= vals[:, 1:]).all()  # sorted per row


def test_blocks_give_identical_graphs():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(33, 5, generator=g)
    ref = knn_graph(x, 4, loop=False, weighted=True, batch_size=None)
    for bs in (1, 2, 3, 7):
        ei, w = knn_graph(x, 4, loop=False, weighted=True, batch_size=bs)
        assert torch.equal(ei, ref[0])
        torch.testing.assert_close(w, ref[1], atol=1e-6, rtol=0)


def test_knn_graph_accepts_half_and_double_input():
    x = circle()
    for dt in (torch.float16, torch.float64):
        ei, w = knn_graph(x.to(dt), 2, loop=False)
        assert ei[0].tolist() == [j for i in range(7) for j in NN2[i]]
        assert w.dtype == torch.float32


# --------------------------------------------------------------------------- co-interactions


def random_interactions(U=30, I=25, density=0.15, seed=0, empty_users=(7,)):
    g = torch.Generator().manual_seed(seed)
    R = (torch.rand(U, I, generator=g) < density).float()
    for u in empty_users:
        R[u] = 0
    ei = R.nonzero().t()
    ei = ei[:, torch.randperm(ei.size(1), generator=g)]  # unsorted input
    return R, ei


@pytest.mark.parametrize("batch_size", [1, 4, 7, None])
def test_cointeraction_equals_dense_counts(batch_size):
    R, ei = random_interactions()
    U, I = R.shape
    k = 4
    C = R @ R.t()
    C.fill_diagonal_(float("-inf"))
    want_vals = torch.topk(C, k, dim=1).values
    out_ei, w = cointeraction_knn_graph(ei, U, I, k, weighted=True, batch_size=batch_size)
    assert out_ei.shape == (2, U * k)
    assert out_ei[1].tolist() == [u for u in range(U) for _ in range(k)]
    assert not (out_ei[0] == out_ei[1]).any()  # self excluded
    got_vals = w.view(U, k)
    torch.testing.assert_close(got_vals.sort(1, descending=True).values, want_vals)
    # each edge v -> u carries the count c(u, v)
    torch.testing.assert_close(w, (R @ R.t())[out_ei[1], out_ei[0]])
    # no user appears twice in one list
    for u in range(U):
        assert len(set(out_ei[0][out_ei[1] == u].tolist())) == k


def test_cointeraction_user_without_items_gets_zero_weight_edges():
    R, ei = random_interactions(empty_users=(7,))
    out_ei, w = cointeraction_knn_graph(ei, *R.shape, 3)
    assert (out_ei[1] == 7).sum() == 3
    assert (w[out_ei[1] == 7] == 0).all()
    assert not ((out_ei[1] == 7) & (out_ei[0] == 7)).any()


def test_cointeraction_binary_weights():
    R, ei = random_interactions()
    e1, w1 = cointeraction_knn_graph(ei, *R.shape, 3, weighted=True)
    e2, w2 = cointeraction_knn_graph(ei, *R.shape, 3, weighted=False)
    assert torch.equal(e1, e2)
    assert torch.equal(w2, torch.ones_like(w2))
    assert not torch.equal(w1, w2)


def test_cointeraction_hand_example():
    # users 0,1 share items {0,1}; users 1,2 share {2}; user 3 shares item 0 with 0 and 1
    ei = torch.tensor([[0, 0, 1, 1, 1, 2, 3], [0, 1, 0, 1, 2, 2, 0]])
    out, w = cointeraction_knn_graph(ei, 4, 3, 1)
    best = dict(zip(out[1].tolist(), zip(out[0].tolist(), w.tolist())))
    assert best[0] == (1, 2.0)
    assert best[1] == (0, 2.0)
    assert best[2] == (1, 1.0)
    assert best[3][1] == 1.0 and best[3][0] in (0, 1)


def test_scatter_mean_features_equals_dense_mean():
    R, ei = random_interactions(empty_users=(3, 7))
    U, I = R.shape
    x = torch.randn(I, 5, generator=torch.Generator().manual_seed(3))
    got = scatter_mean_features(ei, x, U)
    cnt = R.sum(1, keepdim=True)
    want = (R @ x) / cnt.clamp_min(1)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    assert torch.equal(got[3], torch.zeros(5)) and torch.equal(got[7], torch.zeros(5))
    assert got.shape == (U, 5)
