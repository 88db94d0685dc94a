"""GRCNConv against dense dot-product attention on a small bipartite graph."""

from __future__ import annotations

import pytest
import torch

from mmgraph.graph import to_adj_t
from mmgraph.nn.conv.grcn_conv import GRCNConv

# 3 users x 4 items, 6 interactions (user, item); item 3 has no interaction
U, I = 3, 4
EDGES = [(0, 0), (0, 1), (1, 1), (1, 2), (2, 0), (2, 2)]


def ui_edges() -> torch.Tensor:
    return torch.tensor(EDGES).t()  # [2, E]: user -> item


def dense_attention(x_src, x_dst, edge_index, n_dst):
    """alpha[d, s] = softmax over d's neighbours of <x_d, x_s>; out = alpha @ x_src."""
    mask = torch.zeros(n_dst, x_src.size(0), dtype=torch.bool)
    mask[edge_index[1], edge_index[0]] = True
    logits = (x_dst @ x_src.t()).masked_fill(~mask, float("-inf"))
    alpha = torch.softmax(logits, dim=1).nan_to_num(0.0)  # rows without neighbours: 0
    return alpha @ x_src, alpha


def make(seed=0):
    torch.manual_seed(seed)
    return torch.randn(U, 5, dtype=torch.float64), torch.randn(I, 5, dtype=torch.float64)


def csr(ei: torch.Tensor, n_src: int, n_dst: int) -> torch.Tensor:
    return to_adj_t(ei, torch.rand(ei.size(1), dtype=torch.float64), n_src, n_dst)  # values are ignored


@pytest.mark.parametrize("direction", ["ui", "iu"])
@pytest.mark.parametrize("sparse", [False, True])
def test_equals_dense_attention(direction, sparse):
    x_u, x_i = make()
    ei = ui_edges() if direction == "ui" else ui_edges().flip(0)
    x_src, x_dst = (x_u, x_i) if direction == "ui" else (x_i, x_u)
    adj = csr(ei, x_src.size(0), x_dst.size(0)) if sparse else ei
    out, alpha = GRCNConv()((x_src, x_dst), adj, return_attention_weights=True)
    ref_out, ref_alpha = dense_attention(x_src, x_dst, ei, x_dst.size(0))
    torch.testing.assert_close(out, ref_out)
    if sparse:  # one value per stored entry, in CSR order
        rows = torch.repeat_interleave(torch.arange(x_dst.size(0)), adj.crow_indices().diff())
        torch.testing.assert_close(alpha, ref_alpha[rows, adj.col_indices()])
    else:
        torch.testing.assert_close(alpha, ref_alpha[ei[1], ei[0]])
    assert torch.equal(GRCNConv()((x_src, x_dst), adj), out)


def test_attention_sums_to_one_per_destination_and_isolated_is_zero():
    x_u, x_i = make(1)
    ei = ui_edges()
    out, alpha = GRCNConv()((x_u, x_i), ei, return_attention_weights=True)
    sums = torch.zeros(I, dtype=alpha.dtype).index_add_(0, ei[1], alpha)
    torch.testing.assert_close(sums, torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=alpha.dtype))
    assert torch.equal(out[3], torch.zeros(5, dtype=out.dtype))


def test_gradients_equal_dense_and_permutation_invariance():
    x_u, x_i = make(2)
    x_u.requires_grad_(True)
    x_i.requires_grad_(True)
    ei = ui_edges()
    proj = torch.randn(I, 5, dtype=torch.float64)
    g_ref = torch.autograd.grad((dense_attention(x_u, x_i, ei, I)[0] * proj).sum(), [x_u, x_i])
    for adj in (ei, csr(ei, U, I)):
        g = torch.autograd.grad((GRCNConv()((x_u, x_i), adj) * proj).sum(), [x_u, x_i])
        for a, b in zip(g, g_ref, strict=True):
            torch.testing.assert_close(a, b)
    perm = torch.randperm(ei.size(1))
    out, alpha = GRCNConv()((x_u, x_i), ei[:, perm], return_attention_weights=True)
    ref, ref_alpha = GRCNConv()((x_u, x_i), ei, return_attention_weights=True)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(alpha, ref_alpha[perm])


def test_coo_input_refused_and_repr():
    x_u, x_i = make()
    ei = ui_edges()
    coo = torch.sparse_coo_tensor(ei.flip(0), torch.ones(ei.size(1)), (I, U))
    with pytest.raises(ValueError, match="sparse_csr"):
        GRCNConv()((x_u, x_i), coo)
    assert str(GRCNConv()) == "GRCNConv()"


def test_sparse_path_gradients_at_the_nonzeros_only():
    """The CSR path's custom backward (value gradient per stored entry) passes gradcheck."""
    from mmgraph.nn.conv.grcn_conv import _AttentionSpmm

    x_u, _ = make(3)
    adj = csr(ui_edges(), U, I)
    crow, col = adj.crow_indices(), adj.col_indices()
    rows = torch.repeat_interleave(torch.arange(I), crow.diff())
    values = torch.rand(col.numel(), dtype=torch.float64, requires_grad=True)
    x_u.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v, x: _AttentionSpmm.apply(crow, col, rows, v, x), (values, x_u))
