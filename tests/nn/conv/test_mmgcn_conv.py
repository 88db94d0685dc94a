"""MMGCNConv against dense MMGCN math on the homogeneous U + I graph with mean aggregation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmgraph.graph import to_adj_t
from mmgraph.nn.conv.mmgcn_conv import MMGCNConv

# 3 users x 4 items, 6 interactions (user, item); item 3 has no interaction
U, I = 3, 4
EDGES = [(0, 0), (0, 1), (1, 1), (1, 2), (2, 0), (2, 2)]


def ui_edges() -> torch.Tensor:
    return torch.tensor(EDGES).t()  # [2, E]: user -> item


def dense_mean_adj() -> torch.Tensor:
    """D^{-1} A of the symmetric (U + I) adjacency (rows of isolated nodes stay 0): PyG's aggr='mean'."""
    A = torch.zeros(U + I, U + I, dtype=torch.float64)
    for u, i in EDGES:
        A[u, U + i] = A[U + i, u] = 1.0
    return A / A.sum(1, keepdim=True).clamp_min(1.0)


def dense_layer(conv: MMGCNConv, x: torch.Tensor, id_emb: torch.Tensor | None) -> torch.Tensor:
    """MMRec's GCN layer: h = lrelu(conv(x)), x_hat = lrelu(W_l x) + id, x' = lrelu(g([h; x_hat]))."""
    h = F.leaky_relu(dense_mean_adj() @ (x @ conv.weight))
    x_hat = F.leaky_relu(conv.lin(x)) + (id_emb if id_emb is not None else 0)
    if conv.concat:
        return F.leaky_relu(conv.lin_g(torch.cat([h, x_hat], 1)))
    return F.leaky_relu(conv.lin_g(h) + x_hat)


def hetero_layer(conv: MMGCNConv, x: torch.Tensor, id_emb: torch.Tensor | None, sparse: bool) -> torch.Tensor:
    ei = ui_edges()
    ones = torch.ones(ei.size(1), dtype=torch.float64)
    x_u, x_i = x[:U], x[U:]
    id_u, id_i = (id_emb[:U], id_emb[U:]) if id_emb is not None else (None, None)
    if sparse:
        new_u = conv((x_i, x_u), to_adj_t(ei.flip(0), ones, I, U), id_u)
        new_i = conv((x_u, x_i), to_adj_t(ei, ones, U, I), id_i)
    else:
        new_u = conv((x_i, x_u), ei.flip(0), id_u)
        new_i = conv((x_u, x_i), ei, id_i)
    return torch.cat([new_u, new_i])


def make(concat: bool, seed: int = 0):
    torch.manual_seed(seed)
    conv = MMGCNConv(5, 3, concat=concat).double()
    x = torch.randn(U + I, 5, dtype=torch.float64)
    id_emb = torch.randn(U + I, 3, dtype=torch.float64)
    return conv, x, id_emb


@pytest.mark.parametrize("concat", [True, False])
@pytest.mark.parametrize("with_id", [True, False])
def test_equals_dense_layer_both_paths(concat, with_id):
    conv, x, id_emb = make(concat)
    id_emb = id_emb if with_id else None
    expect = dense_layer(conv, x, id_emb)
    torch.testing.assert_close(hetero_layer(conv, x, id_emb, sparse=False), expect)
    torch.testing.assert_close(hetero_layer(conv, x, id_emb, sparse=True), expect)


def test_shapes_and_isolated_destination():
    conv, x, id_emb = make(True)
    assert conv.weight.shape == (5, 5) and conv.lin.weight.shape == (3, 5) and conv.lin_g.weight.shape == (3, 8)
    assert MMGCNConv(5, 3, concat=False).lin_g.weight.shape == (3, 5)
    out = hetero_layer(conv, x, id_emb, sparse=True)
    assert out.shape == (U + I, 3)
    # item 3 has no neighbour: h = lrelu(0) = 0
    x_hat = F.leaky_relu(conv.lin(x[U + 3])) + id_emb[U + 3]
    torch.testing.assert_close(out[U + 3], F.leaky_relu(conv.lin_g(torch.cat([torch.zeros(5, dtype=x.dtype), x_hat]))))


def test_gradients_equal_dense():
    conv, x, id_emb = make(True, seed=1)
    x.requires_grad_(True)
    id_emb.requires_grad_(True)
    proj = torch.randn(U + I, 3, dtype=torch.float64)
    params = [x, id_emb, *conv.parameters()]
    for sparse in (False, True):
        g = torch.autograd.grad((hetero_layer(conv, x, id_emb, sparse) * proj).sum(), params)
        g_ref = torch.autograd.grad((dense_layer(conv, x, id_emb) * proj).sum(), params)
        for a, b in zip(g, g_ref, strict=True):
            torch.testing.assert_close(a, b)


def test_permutation_invariance_and_repr():
    conv, x, id_emb = make(True, seed=2)
    ei = ui_edges()
    perm = torch.randperm(ei.size(1))
    a = conv((x[:U], x[U:]), ei, id_emb[U:])
    b = conv((x[:U], x[U:]), ei[:, perm], id_emb[U:])
    torch.testing.assert_close(a, b)
    assert str(MMGCNConv(256, 64)) == "MMGCNConv(256, 64, concat=True)"
