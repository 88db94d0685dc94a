"""LayerRefinedConv: dense math diag(cos(ÂX, R)) ÂX, groups, message vs spmm path, homogeneous equality."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.nn import HeteroConv

from mmgraph.graph import bipartite_norm, to_adj_t
from mmgraph.nn.conv import BipartiteLGConv
from mmgraph.nn.conv.layer_refined_conv import LayerRefinedConv
from mmgraph.typing import ITEM, IU, UI, USER

# 3 users x 5 items, 6 edges (user -> item); item 4 has no edge.
UI_EDGES = torch.tensor([[0, 0, 1, 2, 2, 2],
                         [0, 1, 1, 1, 2, 3]])
NUM_U, NUM_I = 3, 5


def dense_a_hat(edge_index: torch.Tensor, num_u: int, num_i: int) -> torch.Tensor:
    r = torch.zeros(num_u, num_i, dtype=torch.float64)
    r[edge_index[0], edge_index[1]] = 1.0
    du, di = r.sum(1), r.sum(0)
    inv_u = torch.where(du > 0, du.pow(-0.5), torch.zeros_like(du))
    inv_i = torch.where(di > 0, di.pow(-0.5), torch.zeros_like(di))
    return inv_u[:, None] * r * inv_i[None, :]  # [U, I]


def norm64(edge_index: torch.Tensor, num_u: int, num_i: int) -> torch.Tensor:
    """LightGCN weights computed in float64."""
    return bipartite_norm(edge_index, num_u, num_i, torch.ones(edge_index.size(1), dtype=torch.float64))


def dense_cos(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Row cosine as PyTorch defines it: a·b / (max(|a|, eps) max(|b|, eps))."""
    return (a * b).sum(1) / (a.norm(dim=1).clamp_min(eps) * b.norm(dim=1).clamp_min(eps))


def test_dense_math_hand_written_graph():
    torch.manual_seed(0)
    x_u = torch.randn(NUM_U, 4, dtype=torch.float64)
    ref_i = torch.randn(NUM_I, 4, dtype=torch.float64)
    a = dense_a_hat(UI_EDGES, NUM_U, NUM_I)
    conv = LayerRefinedConv()
    out = conv((x_u, None), UI_EDGES, norm64(UI_EDGES, NUM_U, NUM_I), ref=ref_i,
               size=(NUM_U, NUM_I))
    z = a.T @ x_u  # [I, 4]
    torch.testing.assert_close(out, dense_cos(z, ref_i)[:, None] * z, atol=1e-12, rtol=0)
    assert (out[4] == 0).all()  # isolated item: zero message, zero row, no nan
    # item 0 has the single neighbour user 0 with weight 1/sqrt(2 * 1): z_0 = x_u[0] / sqrt(2)
    c0 = torch.dot(x_u[0], ref_i[0]) / (x_u[0].norm() * ref_i[0].norm())
    torch.testing.assert_close(out[0], c0 * x_u[0] / 2 ** 0.5, atol=1e-12, rtol=0)


def test_reference_equal_to_input_direction_keeps_norm_scale():
    """With ref = z itself, the cosine is 1 and the layer is plain LightGCN."""
    torch.manual_seed(1)
    x_u = torch.randn(NUM_U, 3, dtype=torch.float64)
    w = norm64(UI_EDGES, NUM_U, NUM_I)
    z = BipartiteLGConv()((x_u, None), UI_EDGES, w, size=(NUM_U, NUM_I))
    out = LayerRefinedConv()((x_u, None), UI_EDGES, w, ref=3.0 * z, size=(NUM_U, NUM_I))
    torch.testing.assert_close(out, z, atol=1e-12, rtol=0)
    # the opposite direction flips the sign
    out = LayerRefinedConv()((x_u, None), UI_EDGES, w, ref=-z, size=(NUM_U, NUM_I))
    torch.testing.assert_close(out[:4], -z[:4], atol=1e-12, rtol=0)


def test_groups_equal_separate_calls():
    torch.manual_seed(2)
    G, f = 3, 4
    x_u = torch.randn(NUM_U, G * f, dtype=torch.float64)
    ref = torch.randn(NUM_I, G * f, dtype=torch.float64)
    w = norm64(UI_EDGES, NUM_U, NUM_I)
    wide = LayerRefinedConv(groups=G)((x_u, None), UI_EDGES, w, ref=ref, size=(NUM_U, NUM_I))
    one = LayerRefinedConv()
    parts = [one((x_u[:, g * f:(g + 1) * f], None), UI_EDGES, w, ref=ref[:, g * f:(g + 1) * f],
                 size=(NUM_U, NUM_I)) for g in range(G)]
    torch.testing.assert_close(wide, torch.cat(parts, 1), atol=1e-12, rtol=0)
    # a single group over the 12 channels is a different (coarser) rule
    coarse = one((x_u, None), UI_EDGES, w, ref=ref, size=(NUM_U, NUM_I))
    assert not torch.allclose(coarse, wide)


def test_sparse_adj_t_matches_message_path_values_and_grads():
    torch.manual_seed(3)
    U, I = 7, 9
    key = torch.randperm(U * I, generator=torch.Generator().manual_seed(3))[:25]
    ei = torch.stack([key // I, key % I])
    w = norm64(ei, U, I)
    adj_ui, adj_iu = to_adj_t(ei, w, U, I), to_adj_t(ei.flip(0), w, I, U)
    conv = LayerRefinedConv(groups=2)
    x0 = torch.randn(U, 6, dtype=torch.float64)
    r0 = torch.randn(I, 6, dtype=torch.float64)
    g = torch.randn(I, 6, dtype=torch.float64)
    grads = []
    for adj, ew, rev in ((ei, w, None), (adj_ui, None, None), (adj_ui, None, adj_iu)):
        x, r = x0.clone().requires_grad_(), r0.clone().requires_grad_()
        out = conv((x, None), adj, ew, ref=r, size=(U, I), adj_rev=rev)
        (out * g).sum().backward()
        grads.append((out.detach(), x.grad, r.grad))
    for other in grads[1:]:
        for a, b in zip(grads[0], other):
            torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    # gradient against the dense rule, through the (not detached) cosine weights
    a = dense_a_hat(ei, U, I)
    x, r = x0.clone().requires_grad_(), r0.clone().requires_grad_()
    z = (a.T @ x).view(I, 2, 3)
    rr = r.view(I, 2, 3)
    cos = (z * rr).sum(-1) / (z.norm(dim=-1) * rr.norm(dim=-1))
    (((z * cos[..., None]).reshape(I, 6)) * g).sum().backward()
    torch.testing.assert_close(grads[0][1], x.grad, atol=1e-10, rtol=0)
    torch.testing.assert_close(grads[0][2], r.grad, atol=1e-10, rtol=0)


def test_hetero_conv_equals_homogeneous_rule():
    """On the (U + I) node graph: X' = diag(cos(ÂX, R)) ÂX with Â = D^-1/2 A D^-1/2 (the reference's loop)."""
    torch.manual_seed(4)
    U, I, dim = 11, 8, 5
    key = torch.randperm(U * I, generator=torch.Generator().manual_seed(4))[:30]
    ui = torch.stack([key // I, key % I])
    iu = ui.flip(0)
    x_u, x_i = torch.randn(U, dim, dtype=torch.float64), torch.randn(I, dim, dtype=torch.float64)
    r_u, r_i = torch.randn(U, dim, dtype=torch.float64), torch.randn(I, dim, dtype=torch.float64)
    conv = LayerRefinedConv()
    w_ui = norm64(ui, U, I)
    out_u = conv((x_i, None), iu, w_ui, ref=r_u, size=(I, U))
    out_i = conv((x_u, None), ui, w_ui, ref=r_i, size=(U, I))
    A = torch.zeros(U + I, U + I, dtype=torch.float64)
    A[ui[0], U + ui[1]] = 1.0
    A[U + ui[1], ui[0]] = 1.0
    d = A.sum(1).pow(-0.5)
    d[torch.isinf(d)] = 0.0
    A = d[:, None] * A * d[None, :]
    z = A @ torch.cat([x_u, x_i])
    ref = torch.nn.functional.cosine_similarity(z, torch.cat([r_u, r_i]), dim=-1)[:, None] * z
    torch.testing.assert_close(torch.cat([out_u, out_i]), ref, atol=1e-12, rtol=0)
    # the same through HeteroConv, the reference embeddings passed per edge type
    hetero = HeteroConv({UI: conv, IU: conv}, aggr="sum")
    out = hetero({USER: x_u, ITEM: x_i}, {UI: ui, IU: iu}, {UI: w_ui, IU: w_ui}, ref_dict={UI: r_i, IU: r_u})
    torch.testing.assert_close(torch.cat([out[USER], out[ITEM]]), ref, atol=1e-12, rtol=0)


def test_invariant_to_edge_permutation():
    torch.manual_seed(5)
    w = torch.rand(UI_EDGES.size(1), dtype=torch.float64)
    x = torch.randn(NUM_U, 4, dtype=torch.float64)
    r = torch.randn(NUM_I, 4, dtype=torch.float64)
    perm = torch.randperm(UI_EDGES.size(1))
    conv = LayerRefinedConv(normalize=True)
    a = conv((x, None), UI_EDGES, w, ref=r, size=(NUM_U, NUM_I))
    b = conv((x, None), UI_EDGES[:, perm], w[perm], ref=r, size=(NUM_U, NUM_I))
    torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


def test_argument_checks_repr_and_no_parameters():
    with pytest.raises(ValueError, match="groups must be >= 1"):
        LayerRefinedConv(groups=0)
    conv = LayerRefinedConv(groups=2)
    x = torch.randn(NUM_U, 3)
    with pytest.raises(ValueError, match="do not split into 2 groups"):
        conv((x, None), UI_EDGES, ref=torch.randn(NUM_I, 3), size=(NUM_U, NUM_I))
    with pytest.raises(ValueError, match="ref has shape"):
        conv((torch.randn(NUM_U, 4), None), UI_EDGES, ref=torch.randn(NUM_I, 2), size=(NUM_U, NUM_I))
    assert repr(conv) == "LayerRefinedConv(groups=2, normalize=False)"
    assert list(conv.parameters()) == [] and conv.aggr == "add"
    assert isinstance(conv, BipartiteLGConv)
