"""Edge-weight normalisations against hand-computed and dense references.

Convention: ``edge_index[0]`` is the source ``j``, ``edge_index[1]`` the target ``i``;
``W[i, j]`` is the weight of ``j -> i`` and degrees are the row sums of ``W``.
"""

from __future__ import annotations

import math

import pytest
import torch

from mmgraph.graph import bipartite_norm, normalize, row_norm, sym_norm, to_adj_t

# 1->0 (2), 2->0 (2), 0->1 (1), 0->2 (4); row sums d = [4, 1, 4]
HAND_EI = torch.tensor([[1, 2, 0, 0], [0, 0, 1, 2]])
HAND_W = torch.tensor([2.0, 2.0, 1.0, 4.0])


def test_sym_norm_hand_example():
    got = sym_norm(HAND_EI, 3, HAND_W)
    want = torch.tensor([2 / math.sqrt(4 * 1), 2 / math.sqrt(4 * 4), 1 / math.sqrt(1 * 4), 4 / math.sqrt(4 * 4)])
    torch.testing.assert_close(got, want)


def test_row_norm_hand_example():
    got = row_norm(HAND_EI, 3, HAND_W)
    torch.testing.assert_close(got, torch.tensor([0.5, 0.5, 1.0, 1.0]))


def test_unweighted_default_is_ones():
    # 1->0, 2->0, 0->1: in-degrees [2, 1, 0]
    ei = torch.tensor([[1, 2, 0], [0, 0, 1]])
    torch.testing.assert_close(row_norm(ei, 3), torch.tensor([0.5, 0.5, 1.0]))
    # 1->0: 1/sqrt(d0 d1) = 1/sqrt(2); 2->0: d2 = 0 -> weight 0 (no inf)
    torch.testing.assert_close(sym_norm(ei, 3), torch.tensor([1 / math.sqrt(2), 0.0, 1 / math.sqrt(2)]))


def random_graph(n=9, e=25, seed=0, isolated=(8,)):
    g = torch.Generator().manual_seed(seed)
    key = torch.randperm(n * n, generator=g)
    src, dst = key // n, key % n
    keep = (src != dst)
    for v in isolated:
        keep &= (src != v) & (dst != v)
    ei = torch.stack([src[keep][:e], dst[keep][:e]])
    w = torch.rand(ei.size(1), generator=g) + 0.1
    return ei, w


def dense(ei, w, n_src, n_dst):
    W = torch.zeros(n_dst, n_src, dtype=w.dtype)
    W.index_put_((ei[1], ei[0]), w, accumulate=True)
    return W


def inv_pow(d, p):
    out = d.pow(-p)
    out[d == 0] = 0
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sym_norm_equals_dense(seed):
    n = 9
    ei, w = random_graph(n, seed=seed)
    W = dense(ei, w, n, n)
    d = W.sum(1)
    Dm = torch.diag(inv_pow(d, 0.5))
    want = (Dm @ W @ Dm)[ei[1], ei[0]]
    got = sym_norm(ei, n, w)
    torch.testing.assert_close(got, want)
    assert torch.isfinite(got).all()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_row_norm_equals_dense(seed):
    n = 9
    ei, w = random_graph(n, seed=seed)
    W = dense(ei, w, n, n)
    want = (torch.diag(inv_pow(W.sum(1), 1.0)) @ W)[ei[1], ei[0]]
    got = row_norm(ei, n, w)
    torch.testing.assert_close(got, want)
    # each target's incoming weights sum to 1
    sums = torch.zeros(n).index_add_(0, ei[1], got)
    has_in = torch.zeros(n, dtype=torch.bool)
    has_in[ei[1]] = True
    torch.testing.assert_close(sums[has_in], torch.ones(int(has_in.sum())))


def test_degree_is_counted_on_target_not_source():
    # a star: 0 -> 1, 0 -> 2, 0 -> 3. Row sums: d0 = 0, d1 = d2 = d3 = 1.
    ei = torch.tensor([[0, 0, 0], [1, 2, 3]])
    # row_norm: each target has one incoming edge -> 1 (source-degree would give 1/3)
    torch.testing.assert_close(row_norm(ei, 4), torch.ones(3))
    # sym_norm: d_source = 0 -> weight 0, not 1/sqrt(3)
    torch.testing.assert_close(sym_norm(ei, 4), torch.zeros(3))


def test_bipartite_norm_hand_example():
    # u0 -> i0, u0 -> i1, u1 -> i1: deg_u = [2, 1], deg_i = [1, 2]
    ei = torch.tensor([[0, 0, 1], [0, 1, 1]])
    got = bipartite_norm(ei, 2, 3)
    want = torch.tensor([1 / math.sqrt(2 * 1), 1 / math.sqrt(2 * 2), 1 / math.sqrt(1 * 2)])
    torch.testing.assert_close(got, want)


def test_bipartite_norm_equals_lightgcn_dense():
    g = torch.Generator().manual_seed(4)
    U, I = 11, 7
    R = (torch.rand(U, I, generator=g) < 0.3).float()
    R[5] = 0  # a user with no items
    R[:, 2] = 0  # an item with no users
    ei = R.nonzero().t()
    w = torch.rand(ei.size(1), generator=g) + 0.5
    Rw = torch.zeros(U, I)
    Rw[ei[0], ei[1]] = w
    want = (torch.diag(inv_pow(Rw.sum(1), 0.5)) @ Rw @ torch.diag(inv_pow(Rw.sum(0), 0.5)))[ei[0], ei[1]]
    torch.testing.assert_close(bipartite_norm(ei, U, I, w), want)
    # unweighted, and symmetric: the reverse relation gets the same weights
    unw = bipartite_norm(ei, U, I)
    torch.testing.assert_close(bipartite_norm(ei.flip(0), I, U), unw)
    assert torch.isfinite(unw).all()


def test_zero_degree_nodes_give_no_inf():
    ei = torch.tensor([[0], [1]])
    for out in (
        sym_norm(ei, 5),
        row_norm(ei, 5),
        bipartite_norm(ei, 5, 5),
        sym_norm(ei, 5, torch.tensor([0.0])),  # a zero-weight edge: degree 0
        row_norm(ei, 5, torch.tensor([0.0])),
    ):
        assert torch.isfinite(out).all()
    assert torch.equal(sym_norm(ei, 5, torch.tensor([0.0])), torch.tensor([0.0]))


def test_dtype_is_preserved():
    w = HAND_W.double()
    assert sym_norm(HAND_EI, 3, w).dtype == torch.float64
    assert row_norm(HAND_EI, 3, w).dtype == torch.float64


def test_normalize_dispatch():
    torch.testing.assert_close(normalize(HAND_EI, 3, HAND_W, "sym"), sym_norm(HAND_EI, 3, HAND_W))
    torch.testing.assert_close(normalize(HAND_EI, 3, HAND_W, "row"), row_norm(HAND_EI, 3, HAND_W))
    assert torch.equal(normalize(HAND_EI, 3, HAND_W, "none"), HAND_W)
    assert torch.equal(normalize(HAND_EI, 3, None, "none"), torch.ones(4))
    with pytest.raises(ValueError, match="unknown normalisation 'l2'"):
        normalize(HAND_EI, 3, HAND_W, "l2")


def test_to_adj_t_shape_and_entries():
    # bipartite 3 sources -> 2 targets, with a duplicate edge (summed)
    ei = torch.tensor([[0, 2, 1, 2], [1, 0, 1, 0]])
    w = torch.tensor([1.0, 2.0, 3.0, 0.5])
    adj_t = to_adj_t(ei, w, num_src=3, num_dst=2)
    assert adj_t.layout == torch.sparse_csr
    assert adj_t.shape == (2, 3)
    want = torch.tensor([[0.0, 0.0, 2.5], [1.0, 3.0, 0.0]])
    torch.testing.assert_close(adj_t.to_dense(), want)
    x_src = torch.randn(3, 4)
    torch.testing.assert_close(adj_t @ x_src, want @ x_src)


def test_to_adj_t_equals_dense_on_random_graph():
    ei, w = random_graph(9, seed=5)
    adj_t = to_adj_t(ei, w, 9, 9)
    torch.testing.assert_close(adj_t.to_dense(), dense(ei, w, 9, 9))
