"""NGCFConv against dense NGCF math on the homogeneous U + I graph with D^{-1}(A + I)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmgraph.graph import rw_selfloop_norm, to_adj_t
from mmgraph.nn.conv import NGCFConv

# 3 users x 4 items, 6 interactions (user, item); item 3 has no interaction
U, I = 3, 4
EDGES = [(0, 0), (0, 1), (1, 1), (1, 2), (2, 0), (2, 2)]


def ui_edges() -> torch.Tensor:
    return torch.tensor(EDGES).t()  # [2, E]: user -> item


def dense_rw_selfloop() -> torch.Tensor:
    """D^{-1}(A + I) of the symmetric (U + I) adjacency, dense."""
    A = torch.zeros(U + I, U + I, dtype=torch.float64)
    for u, i in EDGES:
        A[u, U + i] = A[U + i, u] = 1.0
    A = A + torch.eye(U + I, dtype=torch.float64)
    return A / A.sum(1, keepdim=True)


def dense_ngcf(conv: NGCFConv, E: torch.Tensor) -> torch.Tensor:
    side = dense_rw_selfloop() @ E
    W1, b1, W2, b2 = conv.lin1.weight, conv.lin1.bias, conv.lin2.weight, conv.lin2.bias
    return F.leaky_relu(side @ W1.t() + b1, 0.01) + F.leaky_relu((E * side) @ W2.t() + b2, 0.01)


def hetero_ngcf(conv: NGCFConv, E: torch.Tensor, sparse: bool) -> torch.Tensor:
    ei = ui_edges()
    w_ui, self_i = rw_selfloop_norm(ei, I)
    w_iu, self_u = rw_selfloop_norm(ei.flip(0), U)
    w_ui, w_iu, self_i, self_u = (t.double() for t in (w_ui, w_iu, self_i, self_u))
    x_u, x_i = E[:U], E[U:]
    if sparse:
        new_u = conv((x_i, x_u), to_adj_t(ei.flip(0), w_iu, I, U), self_weight=self_u)
        new_i = conv((x_u, x_i), to_adj_t(ei, w_ui, U, I), self_weight=self_i)
    else:
        new_u = conv((x_i, x_u), ei.flip(0), w_iu, self_weight=self_u)
        new_i = conv((x_u, x_i), ei, w_ui, self_weight=self_i)
    return torch.cat([new_u, new_i])


def make(seed: int = 0):
    torch.manual_seed(seed)
    conv = NGCFConv(5, 3).double()
    E = torch.randn(U + I, 5, dtype=torch.float64)
    return conv, E


def test_rows_of_rw_selfloop_sum_to_one():
    torch.testing.assert_close(dense_rw_selfloop().sum(1), torch.ones(U + I, dtype=torch.float64))


def test_equals_dense_ngcf_layer_both_paths():
    conv, E = make()
    expect = dense_ngcf(conv, E)
    torch.testing.assert_close(hetero_ngcf(conv, E, sparse=False), expect)
    torch.testing.assert_close(hetero_ngcf(conv, E, sparse=True), expect)


def test_gradients_equal_dense():
    conv, E = make(1)
    E.requires_grad_(True)
    proj = torch.randn(U + I, 3, dtype=torch.float64)
    params = [E, *conv.parameters()]
    g = torch.autograd.grad((hetero_ngcf(conv, E, sparse=False) * proj).sum(), params)
    g_ref = torch.autograd.grad((dense_ngcf(conv, E) * proj).sum(), params)
    for a, b in zip(g, g_ref, strict=True):
        torch.testing.assert_close(a, b)


def test_without_self_weight_and_permutation_invariance():
    conv, E = make(2)
    ei = ui_edges()
    w = torch.rand(ei.size(1), dtype=torch.float64)
    x_u, x_i = E[:U], E[U:]
    out = conv((x_u, x_i), ei, w)
    A = torch.zeros(I, U, dtype=torch.float64).index_put((ei[1], ei[0]), w, accumulate=True)
    side = A @ x_u
    expect = (F.leaky_relu(conv.lin1(side), 0.01) + F.leaky_relu(conv.lin2(x_i * side), 0.01))
    torch.testing.assert_close(out, expect)
    perm = torch.randperm(ei.size(1))
    torch.testing.assert_close(conv((x_u, x_i), ei[:, perm], w[perm]), out)
    # an isolated destination (item 3) without self-loop: side = 0, output = σ(b1) + σ(b2)
    torch.testing.assert_close(out[3], F.leaky_relu(conv.lin1.bias, 0.01) + F.leaky_relu(conv.lin2.bias, 0.01))


def test_repr_and_reset():
    conv = NGCFConv(64, 32)
    assert str(conv) == "NGCFConv(64, 32)"
    before = conv.lin1.weight.clone()
    conv.reset_parameters()
    assert not torch.equal(before, conv.lin1.weight)
