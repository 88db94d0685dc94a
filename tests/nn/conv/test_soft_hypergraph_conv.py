"""SoftHypergraphConv: dense math H_out Hᵀ X, dense vs message path (values and gradients)."""

from __future__ import annotations

import pytest
import torch

from mmgraph.nn.conv import SoftHypergraphConv


def dense_to_edges(h: torch.Tensor):
    """Every non-zero of ``h [N, K]`` as a (node, hyperedge) edge with its value."""
    idx = h.nonzero().t()
    return idx, h[idx[0], idx[1]]


def test_dense_math_hand_written():
    # 3 nodes, 2 hyperedges
    h = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]], dtype=torch.float64)
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], dtype=torch.float64)
    # Λ = Hᵀ X = [[1 + 1.5, 2 + 2], [1.5 + 5, 2 + 6]] = [[2.5, 4], [6.5, 8]]
    lam = torch.tensor([[2.5, 4.0], [6.5, 8.0]], dtype=torch.float64)
    expected = torch.stack([lam[0], 0.5 * (lam[0] + lam[1]), lam[1]])
    out = SoftHypergraphConv()(x, h)
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=0)


def test_dense_equals_dense_matrix_product_with_output_incidence():
    g = torch.Generator().manual_seed(0)
    N, N_out, K, F = 9, 6, 4, 5
    h = torch.softmax(torch.randn(N, K, generator=g, dtype=torch.float64), dim=1)
    h_out = torch.softmax(torch.randn(N_out, K, generator=g, dtype=torch.float64), dim=1)
    x = torch.randn(N, F, generator=g, dtype=torch.float64)
    conv = SoftHypergraphConv()
    torch.testing.assert_close(conv(x, h, h_out), (h_out @ h.t()) @ x, atol=1e-12, rtol=0)
    torch.testing.assert_close(conv(x, h), (h @ h.t()) @ x, atol=1e-12, rtol=0)
    # stacking output incidences stacks the outputs (LGMRec: [H_U; H_I] in one call)
    both = conv(x, h, torch.cat([h_out, h]))
    torch.testing.assert_close(both[:N_out], conv(x, h, h_out), atol=1e-12, rtol=0)
    torch.testing.assert_close(both[N_out:], conv(x, h), atol=1e-12, rtol=0)


@pytest.mark.parametrize("with_out", [False, True])
def test_message_path_matches_dense_values_and_grads(with_out):
    g = torch.Generator().manual_seed(1)
    N, N_out, K, F = 8, 5, 3, 4
    h = torch.rand(N, K, generator=g, dtype=torch.float64)
    h[h < 0.4] = 0  # sparse incidence
    h_out = torch.rand(N_out, K, generator=g, dtype=torch.float64) if with_out else None
    x0 = torch.randn(N, F, generator=g, dtype=torch.float64)
    gout = torch.randn(N_out if with_out else N, F, generator=g, dtype=torch.float64)
    conv = SoftHypergraphConv()

    x1 = x0.clone().requires_grad_()
    dense = conv(x1, h, h_out)
    (dense * gout).sum().backward()

    x2 = x0.clone().requires_grad_()
    idx, w = dense_to_edges(h)
    if with_out:
        idx_o, w_o = dense_to_edges(h_out)
        msg = conv(x2, idx, idx_o, edge_weight=w, num_hyperedges=K, edge_weight_out=w_o, num_nodes_out=N_out)
    else:
        msg = conv(x2, idx, edge_weight=w, num_hyperedges=K)
    (msg * gout).sum().backward()
    torch.testing.assert_close(msg, dense, atol=1e-12, rtol=0)
    torch.testing.assert_close(x2.grad, x1.grad, atol=1e-12, rtol=0)
    # the adjoint: d/dx <H_out Hᵀ x, g> = H H_outᵀ g
    ho = h if h_out is None else h_out
    torch.testing.assert_close(x1.grad, h @ (ho.t() @ gout), atol=1e-12, rtol=0)


def test_gradients_reach_the_incidence():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(7, 3, generator=g, dtype=torch.float64, requires_grad=True)
    x = torch.randn(7, 2, generator=g, dtype=torch.float64)
    h = torch.softmax(logits, dim=1)
    SoftHypergraphConv()(x, h).pow(2).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_errors_and_repr():
    conv = SoftHypergraphConv()
    x = torch.randn(4, 2)
    with pytest.raises(ValueError, match=r"\[N=4, K\]"):
        conv(x, torch.rand(5, 3))
    with pytest.raises(ValueError, match=r"\[N_out, K=3\]"):
        conv(x, torch.rand(4, 3), torch.rand(2, 2))
    idx = torch.tensor([[0, 1], [0, 1]])
    with pytest.raises(ValueError, match="num_hyperedges"):
        conv(x, idx)
    with pytest.raises(ValueError, match="num_nodes_out"):
        conv(x, idx, idx, num_hyperedges=2)
    assert list(conv.parameters()) == [] and repr(conv) == "SoftHypergraphConv()" and conv.aggr == "add"


def test_halves_compose_to_forward():
    g = torch.Generator().manual_seed(3)
    h = torch.softmax(torch.randn(6, 3, generator=g, dtype=torch.float64), dim=1)
    h_out = torch.rand(4, 3, generator=g, dtype=torch.float64)
    x = torch.randn(6, 2, generator=g, dtype=torch.float64)
    conv = SoftHypergraphConv()
    lam = conv.to_hyperedges(x, h)
    torch.testing.assert_close(lam, h.t() @ x, atol=1e-12, rtol=0)
    torch.testing.assert_close(conv.to_nodes(lam, h_out), conv(x, h, h_out), atol=1e-12, rtol=0)
    idx, w = dense_to_edges(h)
    torch.testing.assert_close(conv.to_hyperedges(x, idx, edge_weight=w, num_hyperedges=3), lam,
                               atol=1e-12, rtol=0)
