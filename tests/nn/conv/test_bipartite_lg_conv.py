"""BipartiteLGConv: dense LightGCN math, message vs spmm path, HeteroConv == LGConv."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.nn import HeteroConv, LGConv

from mmgraph.graph import bipartite_norm, to_adj_t
from mmgraph.nn.conv import BipartiteLGConv
from mmgraph.typing import ITEM, IU, UI, USER

# 3 users x 4 items, 6 edges (user -> item). Degrees: users (2, 1, 3), items (1, 3, 1, 1).
UI_EDGES = torch.tensor([[0, 0, 1, 2, 2, 2],
                         [0, 1, 1, 1, 2, 3]])
NUM_U, NUM_I = 3, 4


def dense_r(edge_index: torch.Tensor, num_u: int, num_i: int) -> torch.Tensor:
    r = torch.zeros(num_u, num_i, dtype=torch.float64)
    r[edge_index[0], edge_index[1]] = 1.0
    return r


def dense_norm(r: torch.Tensor) -> torch.Tensor:
    """``D_u^{-1/2} R D_i^{-1/2}`` with zero-degree rows/columns left at 0."""
    du, di = r.sum(1), r.sum(0)
    inv_u = torch.where(du > 0, du.pow(-0.5), torch.zeros_like(du))
    inv_i = torch.where(di > 0, di.pow(-0.5), torch.zeros_like(di))
    return inv_u[:, None] * r * inv_i[None, :]


def random_bipartite(num_u: int, num_i: int, num_e: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    key = torch.randperm(num_u * num_i, generator=g)[:num_e]  # distinct (u, i) pairs
    return torch.stack([key // num_i, key % num_i])


def test_dense_math_hand_written_graph():
    torch.manual_seed(0)
    x_u = torch.randn(NUM_U, 5, dtype=torch.float64)
    x_i = torch.randn(NUM_I, 5, dtype=torch.float64)
    a_hat = dense_norm(dense_r(UI_EDGES, NUM_U, NUM_I))
    # the dense reference against weights worked out by hand: w_ui = 1 / sqrt(deg(u) deg(i))
    s2, s3, s6 = 2 ** -0.5, 3 ** -0.5, 6 ** -0.5
    by_hand = torch.tensor([[s2, s6, 0, 0],
                            [0, s3, 0, 0],
                            [0, 1 / 3, s3, s3]], dtype=torch.float64)
    torch.testing.assert_close(a_hat, by_hand, atol=1e-12, rtol=0)
    w_ui = bipartite_norm(UI_EDGES, NUM_U, NUM_I).double()
    conv = BipartiteLGConv()
    # items <- users: x_i' = Â^T x_u
    out_i = conv((x_u, None), UI_EDGES, w_ui, size=(NUM_U, NUM_I))
    torch.testing.assert_close(out_i, a_hat.T @ x_u, atol=1e-6, rtol=0)
    # users <- items: x_u' = Â x_i
    iu = UI_EDGES.flip(0)
    out_u = conv((x_i, None), iu, bipartite_norm(iu, NUM_I, NUM_U).double(), size=(NUM_I, NUM_U))
    torch.testing.assert_close(out_u, a_hat @ x_i, atol=1e-6, rtol=0)
    # x_dst given instead of size: same result, x_dst values are ignored (no self-loops)
    out_i2 = conv((x_u, torch.full((NUM_I, 5), 7.0, dtype=torch.float64)), UI_EDGES, w_ui)
    torch.testing.assert_close(out_i2, out_i, atol=0, rtol=0)


def test_unweighted_is_plain_sum():
    x_u = torch.arange(NUM_U * 2, dtype=torch.float64).view(NUM_U, 2)
    out = BipartiteLGConv()((x_u, None), UI_EDGES, size=(NUM_U, NUM_I))
    torch.testing.assert_close(out, dense_r(UI_EDGES, NUM_U, NUM_I).T @ x_u, atol=0, rtol=0)


def test_normalize_true_computes_weights():
    torch.manual_seed(1)
    x_u = torch.randn(NUM_U, 4, dtype=torch.float64)
    a_hat = dense_norm(dense_r(UI_EDGES, NUM_U, NUM_I))
    conv = BipartiteLGConv(normalize=True)
    out = conv((x_u, None), UI_EDGES, size=(NUM_U, NUM_I))
    torch.testing.assert_close(out, a_hat.T @ x_u, atol=1e-6, rtol=0)
    # with x_dst instead of size
    out2 = conv((x_u, torch.zeros(NUM_I, 4, dtype=torch.float64)), UI_EDGES)
    torch.testing.assert_close(out2, out, atol=1e-12, rtol=0)
    # and it equals the un-normalised conv fed with precomputed weights
    ref = BipartiteLGConv()((x_u, None), UI_EDGES, bipartite_norm(UI_EDGES, NUM_U, NUM_I).double(),
                            size=(NUM_U, NUM_I))
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)


def test_normalize_true_multiplies_given_weights():
    torch.manual_seed(2)
    x_u = torch.randn(NUM_U, 3, dtype=torch.float64)
    w = torch.rand(UI_EDGES.size(1), dtype=torch.float64) + 0.5
    r = torch.zeros(NUM_U, NUM_I, dtype=torch.float64)
    r[UI_EDGES[0], UI_EDGES[1]] = w
    expected = dense_norm(r).T @ x_u  # weighted degrees
    out = BipartiteLGConv(normalize=True)((x_u, None), UI_EDGES, w, size=(NUM_U, NUM_I))
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


def test_isolated_destinations_get_zero_rows():
    x_u = torch.randn(NUM_U, 3)
    # 6 items, items 4 and 5 have no edges: output rows exist and are exactly 0
    out = BipartiteLGConv(normalize=True)((x_u, None), UI_EDGES, size=(NUM_U, 6))
    assert out.shape == (6, 3)
    assert torch.isfinite(out).all()
    assert (out[4:] == 0).all()


@pytest.mark.parametrize("normalize", [False, True])
def test_x_dst_none_requires_size(normalize):
    conv = BipartiteLGConv(normalize=normalize)
    x_u = torch.randn(NUM_U, 3)
    with pytest.raises(ValueError, match="x_dst=None needs size"):
        conv((x_u, None), UI_EDGES)
    # items -> users where max dst index < |S|: without the check PyG would return |S| rows
    with pytest.raises(ValueError, match="x_dst=None needs size"):
        conv((torch.randn(NUM_I, 3), None), UI_EDGES.flip(0))
    assert conv((x_u, None), UI_EDGES, size=(NUM_U, NUM_I)).shape == (NUM_I, 3)


def test_sparse_adj_t_matches_message_path_values_and_grads():
    torch.manual_seed(3)
    ei = random_bipartite(7, 9, 25, seed=3)
    w = bipartite_norm(ei, 7, 9).double()
    adj_t = to_adj_t(ei, w, 7, 9)
    assert adj_t.layout == torch.sparse_csr and adj_t.shape == (9, 7)
    conv = BipartiteLGConv()
    x0 = torch.randn(7, 6, dtype=torch.float64)
    g = torch.randn(9, 6, dtype=torch.float64)

    x_msg = x0.clone().requires_grad_()
    out_msg = conv((x_msg, None), ei, w, size=(7, 9))
    (out_msg * g).sum().backward()

    x_sp = x0.clone().requires_grad_()
    out_sp = conv((x_sp, None), adj_t)
    (out_sp * g).sum().backward()

    assert out_sp.shape == (9, 6)
    torch.testing.assert_close(out_sp, out_msg, atol=1e-12, rtol=0)
    torch.testing.assert_close(x_sp.grad, x_msg.grad, atol=1e-12, rtol=0)
    # the gradient is Â x g (adjoint of the propagation)
    a = torch.zeros(7, 9, dtype=torch.float64)
    a[ei[0], ei[1]] = w
    torch.testing.assert_close(x_msg.grad, a @ g, atol=1e-12, rtol=0)


def test_sparse_path_ignores_normalize_flag():
    """``normalize=True`` only applies to an edge_index input; adj_t values are used as is."""
    ei = random_bipartite(5, 4, 9, seed=4)
    w = bipartite_norm(ei, 5, 4).double()
    x = torch.randn(5, 2, dtype=torch.float64)
    out = BipartiteLGConv(normalize=True)((x, None), to_adj_t(ei, w, 5, 4))
    ref = BipartiteLGConv()((x, None), ei, w, size=(5, 4))
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)


@pytest.mark.parametrize("normalize", [True, False])
def test_hetero_conv_equals_homogeneous_lgconv(normalize):
    torch.manual_seed(5)
    num_u, num_i, dim = 11, 8, 4
    ui = random_bipartite(num_u, num_i, 30, seed=5)
    iu = ui.flip(0)
    x_u = torch.randn(num_u, dim, dtype=torch.float64)
    x_i = torch.randn(num_i, dim, dtype=torch.float64)

    conv = BipartiteLGConv(normalize=normalize)
    hetero = HeteroConv({UI: conv, IU: conv}, aggr="sum")
    if normalize:
        out = hetero({USER: x_u, ITEM: x_i}, {UI: ui, IU: iu})
    else:
        out = hetero({USER: x_u, ITEM: x_i}, {UI: ui, IU: iu},
                     {UI: bipartite_norm(ui, num_u, num_i).double(),
                      IU: bipartite_norm(iu, num_i, num_u).double()})

    # homogeneous (U + I) graph, items offset by U, both directions
    src = torch.cat([ui[0], ui[1] + num_u])
    dst = torch.cat([ui[1] + num_u, ui[0]])
    ref = LGConv()(torch.cat([x_u, x_i]), torch.stack([src, dst]))
    torch.testing.assert_close(out[USER], ref[:num_u], atol=1e-6, rtol=0)
    torch.testing.assert_close(out[ITEM], ref[num_u:], atol=1e-6, rtol=0)


def test_invariant_to_edge_permutation():
    torch.manual_seed(6)
    ei = random_bipartite(10, 12, 40, seed=6)
    w = torch.rand(40, dtype=torch.float64)
    x = torch.randn(10, 5, dtype=torch.float64)
    perm = torch.randperm(40)
    for conv in (BipartiteLGConv(), BipartiteLGConv(normalize=True)):
        a = conv((x, None), ei, w, size=(10, 12))
        b = conv((x, None), ei[:, perm], w[perm], size=(10, 12))
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


def test_no_parameters_and_repr():
    assert list(BipartiteLGConv().parameters()) == []
    assert repr(BipartiteLGConv()) == "BipartiteLGConv(normalize=False)"
    assert repr(BipartiteLGConv(normalize=True)) == "BipartiteLGConv(normalize=True)"
    assert BipartiteLGConv().aggr == "add"


def test_adj_rev_fast_backward_equals_plain_sparse_path():
    """Passing the reverse relation's adj_t changes nothing but the backward's speed."""
    from mmgraph.graph import bipartite_norm, to_adj_t
    from mmgraph.nn.conv import BipartiteLGConv

    g = torch.Generator().manual_seed(0)
    U, I, E = 9, 7, 30
    key = torch.randperm(U * I, generator=g)[:E]
    ei = torch.stack([key // I, key % I])  # user -> item
    w = bipartite_norm(ei, U, I)
    adj_ui = to_adj_t(ei, w, U, I)  # [I, U]
    adj_iu = to_adj_t(ei.flip(0), w, I, U)  # [U, I], the transpose
    conv = BipartiteLGConv()
    x1 = torch.randn(I, 5, generator=g, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_(True)
    gout = torch.randn(U, 5, generator=g)
    out1 = conv((x1, None), adj_iu, size=(I, U))
    out2 = conv((x2, None), adj_iu, size=(I, U), adj_rev=adj_ui)
    torch.testing.assert_close(out1, out2)
    (out1 * gout).sum().backward()
    (out2 * gout).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad)
