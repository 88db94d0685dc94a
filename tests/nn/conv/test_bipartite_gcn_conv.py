"""BipartiteGCNConv: dense Â X W math (both directions, shared W), message vs spmm path, repr."""

from __future__ import annotations

import torch

from mmgraph.graph import bipartite_norm, to_adj_t
from mmgraph.nn.conv import BipartiteGCNConv

# 3 users x 4 items, 6 edges (user -> item)
UI_EDGES = torch.tensor([[0, 0, 1, 2, 2, 2],
                         [0, 1, 1, 1, 2, 3]])
NUM_U, NUM_I = 3, 4


def dense_a_hat(edge_index: torch.Tensor, num_u: int, num_i: int) -> torch.Tensor:
    r = torch.zeros(num_u, num_i, dtype=torch.float64)
    r[edge_index[0], edge_index[1]] = 1.0
    du, di = r.sum(1), r.sum(0)
    iu = torch.where(du > 0, du.pow(-0.5), torch.zeros_like(du))
    ii = torch.where(di > 0, di.pow(-0.5), torch.zeros_like(di))
    return iu[:, None] * r * ii[None, :]


def test_dense_math_both_directions_shared_weight():
    torch.manual_seed(0)
    conv = BipartiteGCNConv(5, 3).double()
    w = conv.lin.weight.t()  # [5, 3]
    x_u = torch.randn(NUM_U, 5, dtype=torch.float64)
    x_i = torch.randn(NUM_I, 5, dtype=torch.float64)
    a = dense_a_hat(UI_EDGES, NUM_U, NUM_I)
    w_ui = bipartite_norm(UI_EDGES, NUM_U, NUM_I, torch.ones(6, dtype=torch.float64))
    out_i = conv((x_u, None), UI_EDGES, w_ui, size=(NUM_U, NUM_I))
    out_u = conv((x_i, None), UI_EDGES.flip(0), w_ui, size=(NUM_I, NUM_U))
    torch.testing.assert_close(out_i, a.T @ x_u @ w, atol=1e-12, rtol=0)
    torch.testing.assert_close(out_u, a @ x_i @ w, atol=1e-12, rtol=0)
    # the homogeneous (U + I) form Z' = Â_sym Z W
    n = NUM_U + NUM_I
    big = torch.zeros(n, n, dtype=torch.float64)
    big[:NUM_U, NUM_U:], big[NUM_U:, :NUM_U] = a, a.T
    ref = big @ torch.cat([x_u, x_i]) @ w
    torch.testing.assert_close(torch.cat([out_u, out_i]), ref, atol=1e-12, rtol=0)
    # normalize=True computes the same weights (in float32)
    out_n = BipartiteGCNConv(5, 3, normalize=True).double()
    out_n.lin.weight.data.copy_(conv.lin.weight)
    torch.testing.assert_close(out_n((x_u, None), UI_EDGES, size=(NUM_U, NUM_I)), out_i, atol=1e-6, rtol=0)


def test_sparse_path_values_and_grads():
    torch.manual_seed(1)
    conv = BipartiteGCNConv(4, 4).double()
    w = bipartite_norm(UI_EDGES, NUM_U, NUM_I).double()
    adj_t = to_adj_t(UI_EDGES, w, NUM_U, NUM_I)  # [I, U]
    adj_rev = to_adj_t(UI_EDGES.flip(0), w, NUM_I, NUM_U)  # its transpose [U, I]
    x0 = torch.randn(NUM_U, 4, dtype=torch.float64)
    g = torch.randn(NUM_I, 4, dtype=torch.float64)
    grads = []
    for args in ((UI_EDGES, w, (NUM_U, NUM_I), None), (adj_t, None, None, None), (adj_t, None, None, adj_rev)):
        conv.zero_grad()
        x = x0.clone().requires_grad_()
        out = conv((x, None), args[0], args[1], size=args[2], adj_rev=args[3])
        (out * g).sum().backward()
        grads.append((out.detach(), x.grad, conv.lin.weight.grad.clone()))
    for out, gx, gw in grads[1:]:
        torch.testing.assert_close(out, grads[0][0], atol=1e-12, rtol=0)
        torch.testing.assert_close(gx, grads[0][1], atol=1e-12, rtol=0)
        torch.testing.assert_close(gw, grads[0][2], atol=1e-12, rtol=0)


def test_repr_and_parameters():
    conv = BipartiteGCNConv(64, 32)
    assert repr(conv) == "BipartiteGCNConv(64, 32, normalize=False)"
    assert [n for n, _ in conv.named_parameters()] == ["lin.weight"]  # no bias
    assert conv.lin.weight.shape == (32, 64)
