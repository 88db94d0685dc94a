"""KNNConv: X' = S X on a weighted square graph, with sym/row normalisation.

Convention: ``edge_index[0]`` is the source ``j``, ``edge_index[1]`` the target ``i``;
the dense ``W[i, j]`` is the weight of edge ``j -> i`` and degrees are row sums of ``W``.
"""

from __future__ import annotations

import pytest
import torch

from mmgraph.graph import normalize as normalize_weights
from mmgraph.graph import to_adj_t
from mmgraph.nn.conv import BipartiteLGConv, KNNConv

# 5 nodes, directed weighted edges j -> i (source, target, weight); node 4 has no
# incoming edge (row sum 0) but sends one; node 2 has a self-loop.
EDGES = [(1, 0, 0.5), (2, 0, 1.5), (0, 1, 2.0), (2, 1, 1.0), (3, 1, 0.25),
         (2, 2, 1.0), (4, 2, 3.0), (0, 3, 0.75), (1, 3, 1.25)]
N = 5


def graph(dtype=torch.float64):
    ei = torch.tensor([[s for s, _, _ in EDGES], [t for _, t, _ in EDGES]])
    w = torch.tensor([w for _, _, w in EDGES], dtype=dtype)
    return ei, w


def dense_w(ei: torch.Tensor, w: torch.Tensor, n: int) -> torch.Tensor:
    m = torch.zeros(n, n, dtype=torch.float64)
    m.index_put_((ei[1], ei[0]), w.double(), accumulate=True)  # W[i, j] = weight of j -> i
    return m


def dense_sym(m: torch.Tensor) -> torch.Tensor:
    d = m.sum(1)
    inv = torch.where(d > 0, d.pow(-0.5), torch.zeros_like(d))
    return inv[:, None] * m * inv[None, :]


def dense_row(m: torch.Tensor) -> torch.Tensor:
    d = m.sum(1)
    inv = torch.where(d > 0, 1.0 / d, torch.zeros_like(d))
    return inv[:, None] * m


def random_knn(n: int, k: int, seed: int):
    """Each node receives k distinct incoming edges with positive weights."""
    g = torch.Generator().manual_seed(seed)
    src = torch.stack([torch.randperm(n, generator=g)[:k] for _ in range(n)]).view(-1)
    dst = torch.arange(n).repeat_interleave(k)
    w = torch.rand(n * k, generator=g, dtype=torch.float64) + 0.1
    return torch.stack([src, dst]), w


def test_dense_equivalents_by_hand():
    ei, w = graph()
    m = dense_w(ei, w, N)
    # rows (targets) sum: node 0 <- 0.5 + 1.5 = 2; node 1 <- 2 + 1 + 0.25 = 3.25
    assert m.sum(1).tolist() == [2.0, 3.25, 4.0, 2.0, 0.0]
    assert m[0, 2] == 1.5 and m[2, 4] == 3.0
    # row normalisation: every non-empty row sums to 1
    torch.testing.assert_close(dense_row(m).sum(1), torch.tensor([1, 1, 1, 1, 0.0], dtype=torch.float64))


@pytest.mark.parametrize("how", [None, "sym", "row"])
def test_equals_dense(how):
    torch.manual_seed(0)
    ei, w = graph()
    x = torch.randn(N, 3, dtype=torch.float64)
    m = dense_w(ei, w, N)
    s = {None: m, "sym": dense_sym(m), "row": dense_row(m)}[how]
    out = KNNConv(normalize=how)(x, ei, w)
    assert out.shape == (N, 3)
    torch.testing.assert_close(out, s @ x, atol=1e-6, rtol=0)
    assert (out[4] == 0).all()  # node 4 has no incoming edge


@pytest.mark.parametrize("how", [None, "sym", "row"])
def test_unweighted_equals_dense_binary(how):
    torch.manual_seed(1)
    ei, w = random_knn(12, 4, seed=1)
    x = torch.randn(12, 5, dtype=torch.float64)
    m = dense_w(ei, torch.ones_like(w), 12)
    s = {None: m, "sym": dense_sym(m), "row": dense_row(m)}[how]
    torch.testing.assert_close(KNNConv(normalize=how)(x, ei), s @ x, atol=1e-6, rtol=0)


def test_row_norm_of_binary_knn_is_mean_of_neighbours():
    """FREEDOM/DRAGON: binary top-k, row-normalised => every weight is 1/k."""
    ei, _ = random_knn(10, 3, seed=2)
    x = torch.randn(10, 4, dtype=torch.float64)
    out = KNNConv(normalize="row")(x, ei)
    ref = x[ei[0]].view(10, 3, 4).mean(1)
    # 1e-6, not 1e-12: without edge_weight, graph.norm creates float32 unit weights
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)


def test_sym_on_random_graph_equals_dense():
    torch.manual_seed(3)
    ei, w = random_knn(30, 5, seed=3)
    x = torch.randn(30, 8, dtype=torch.float64)
    ref = dense_sym(dense_w(ei, w, 30)) @ x
    torch.testing.assert_close(KNNConv(normalize="sym")(x, ei, w), ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("how", ["none", "sym", "row"])
def test_sparse_adj_t_equals_message_path(how):
    torch.manual_seed(4)
    ei, w = random_knn(20, 4, seed=4)
    wn = normalize_weights(ei, 20, w, how)
    adj_t = to_adj_t(ei, wn, 20, 20)
    x0 = torch.randn(20, 6, dtype=torch.float64)
    g = torch.randn(20, 6, dtype=torch.float64)
    conv = KNNConv()

    x_msg = x0.clone().requires_grad_()
    out_msg = conv(x_msg, ei, wn)
    (out_msg * g).sum().backward()
    x_sp = x0.clone().requires_grad_()
    out_sp = conv(x_sp, adj_t)
    (out_sp * g).sum().backward()

    torch.testing.assert_close(out_sp, out_msg, atol=1e-12, rtol=0)
    torch.testing.assert_close(x_sp.grad, x_msg.grad, atol=1e-12, rtol=0)
    # on-the-fly normalisation gives the same result as precomputed weights
    if how != "none":
        torch.testing.assert_close(KNNConv(normalize=how)(x0, ei, w), out_msg.detach(), atol=1e-12, rtol=0)


def test_direction_convention():
    """A single edge 0 -> 1 moves x_0 into row 1, never the other way."""
    ei = torch.tensor([[0], [1]])
    x = torch.tensor([[1.0], [10.0], [100.0]])
    out = KNNConv()(x, ei, torch.tensor([2.0]))
    assert out.view(-1).tolist() == [0.0, 2.0, 0.0]


def test_invariant_to_edge_permutation():
    ei, w = random_knn(15, 4, seed=5)
    x = torch.randn(15, 3, dtype=torch.float64)
    perm = torch.randperm(ei.size(1), generator=torch.Generator().manual_seed(5))
    for how in (None, "sym", "row"):
        conv = KNNConv(normalize=how)
        torch.testing.assert_close(conv(x, ei, w), conv(x, ei[:, perm], w[perm]), atol=1e-12, rtol=0)


@pytest.mark.parametrize("bad", ["none", "SYM", "col", 1, True])
def test_bad_normalize_raises(bad):
    with pytest.raises(ValueError, match="normalize"):
        KNNConv(normalize=bad)


def test_repr_and_no_parameters():
    assert repr(KNNConv()) == "KNNConv(normalize=None)"
    assert repr(KNNConv(normalize="sym")) == "KNNConv(normalize='sym')"
    assert repr(KNNConv(normalize="row")) == "KNNConv(normalize='row')"
    assert list(KNNConv().parameters()) == []
    assert isinstance(KNNConv(), BipartiteLGConv)


def test_sparse_backward_uses_memoised_transpose():
    """The sparse path's gradient equals dense math, and the transpose is computed once per graph object."""
    import pickle

    from mmgraph.graph.norm import to_adj_t

    torch.manual_seed(0)
    n = 40
    ei, w = torch.randint(0, n, (2, 250)), torch.rand(250)
    adj = to_adj_t(ei, w, n, n)
    dense = torch.zeros(n, n).index_put_((ei[1], ei[0]), w, accumulate=True)  # S[dst, src]
    conv = KNNConv()
    x = torch.randn(n, 6, requires_grad=True)
    (g_ref,) = torch.autograd.grad(((dense @ x) ** 2).sum(), x)
    for _ in range(2):
        (g,) = torch.autograd.grad((conv(x, adj) ** 2).sum(), x)
        torch.testing.assert_close(g, g_ref)
    memo = conv._rev_memo
    assert memo is not None and memo[0]() is adj
    conv(x, adj)
    assert conv._rev_memo is memo  # same graph object: no new transpose
    adj2 = to_adj_t(ei, w * 2, n, n)
    (g2,) = torch.autograd.grad((conv(x, adj2) ** 2).sum(), x)
    torch.testing.assert_close(g2, 4 * g_ref)  # a new graph gets its own transpose
    with torch.no_grad():
        conv(x, adj)  # no gradient: no transpose needed
    assert conv._rev_memo[0]() is adj2
    assert pickle.loads(pickle.dumps(conv))._rev_memo is None


def test_edge_weighted_sum_gradients_match_dense_and_chunking():
    """The chunked edge-list path: values and gradients (x and weights) equal dense S X, for any chunk."""
    from mmgraph.nn.conv.knn_conv import edge_weighted_sum

    torch.manual_seed(0)
    n, e, f = 30, 200, 5
    ei = torch.randint(0, n, (2, e))
    w = torch.rand(e, dtype=torch.float64, requires_grad=True)
    x = torch.randn(n, f, dtype=torch.float64, requires_grad=True)
    dense = torch.zeros(n, n, dtype=torch.float64).index_put((ei[1], ei[0]), w, accumulate=True)
    ref = dense @ x
    g_ref = torch.autograd.grad((ref.sin()).sum(), (x, w))
    for chunk in (1, 7, 64, 10_000):
        out = edge_weighted_sum(x, ei, w, n, chunk=chunk)
        torch.testing.assert_close(out, ref)
        g = torch.autograd.grad((out.sin()).sum(), (x, w))
        torch.testing.assert_close(g[0], g_ref[0])
        torch.testing.assert_close(g[1], g_ref[1])
    assert torch.autograd.gradcheck(lambda a, b: edge_weighted_sum(a, ei, b, n, chunk=13), (x, w))


def test_knn_conv_learned_weights_take_the_lean_path():
    """KNNConv with differentiable edge weights equals the PyG message path (explain mode forces it)."""
    torch.manual_seed(1)
    n = 25
    ei = torch.randint(0, n, (2, 120))
    w = torch.rand(120, requires_grad=True)
    x = torch.randn(n, 4, requires_grad=True)
    conv = KNNConv()
    out = conv(x, ei, w)
    gx, gw = torch.autograd.grad(out.square().sum(), (x, w))
    ref = conv.propagate(ei, x=(x, x), edge_weight=w, size=None, adj_rev=None)  # PyG's message path
    rx, rw = torch.autograd.grad(ref.square().sum(), (x, w))
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(gx, rx)
    torch.testing.assert_close(gw, rw)
