"""Recursive Cross-Modal Attention: the blockwise tanh correlation and the linear kernel equal the
naive dense N × N computation (outputs and gradients), for the function and the whole module."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mmgraph.nn.rca import RecursiveCrossModalAttention, TanhCorrelation, cross_modal_correlation

N, D, DV = 53, 6, 5  # N not a multiple of the blocks: ragged last tiles


def naive(q, k, v, kernel):
    """The dense formula: materialises the n_q × n_k correlation."""
    c = q @ k.t() / math.sqrt(q.size(1))  # [n_q, n_k]
    if kernel == "tanh":
        c = torch.tanh(c)
    return c @ v / k.size(0)


def inputs(seed=0, n_q=N, n_k=N, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    # large enough that tanh saturates in places (tanh' far from 1)
    return [(scale * torch.randn(n, d, generator=g, dtype=torch.float64)).requires_grad_()
            for n, d in ((n_q, D), (n_k, D), (n_k, DV))]


def grads(fn, tensors, g_out):
    out = fn(*tensors)
    return out.detach(), torch.autograd.grad(out, tensors, g_out)


@pytest.mark.parametrize("kernel", ["tanh", "linear"])
@pytest.mark.parametrize("block", [1, 7, 16, 53, 4096])
def test_blockwise_equals_naive_values_and_grads(kernel, block):
    q, k, v = inputs()
    g_out = torch.randn(N, DV, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    out, (dq, dk, dv) = grads(lambda *t: cross_modal_correlation(*t, kernel=kernel, block_size=block),
                              (q, k, v), g_out)
    ref, (rq, rk, rv) = grads(lambda *t: naive(*t, kernel), (q, k, v), g_out)
    for a, b in ((out, ref), (dq, rq), (dk, rk), (dv, rv)):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)


def test_rectangular_and_partial_grads():
    q, k, v = inputs(seed=2, n_q=19, n_k=31)
    out = TanhCorrelation.apply(q, k.detach(), v, 1 / math.sqrt(D), 8)  # no grad wanted for k
    ref = naive(q, k.detach(), v, "tanh")
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)
    dq, dv = torch.autograd.grad(out.sum(), (q, v))
    rq, rv = torch.autograd.grad(ref.sum(), (q, v))
    torch.testing.assert_close(dq, rq, atol=1e-12, rtol=0)
    torch.testing.assert_close(dv, rv, atol=1e-12, rtol=0)


def test_gradcheck_tanh():
    q, k, v = (t.detach()[:9].clone().requires_grad_() for t in inputs(seed=3, scale=1.0))
    assert torch.autograd.gradcheck(lambda a, b, c: TanhCorrelation.apply(a, b, c, 0.4, 4), (q, k, v))


def test_linear_kernel_equals_quadratic_form():
    """(1/N)(Q Kᵀ/√d) V computed as Q (Kᵀ V): the O(N²) and the O(N d²) forms agree."""
    q, k, v = inputs(seed=4)
    quad = (q @ k.t() / math.sqrt(D)) @ v / N
    torch.testing.assert_close(cross_modal_correlation(q, k, v, kernel="linear"), quad, atol=1e-11, rtol=0)


def test_no_grad_forward_and_bad_kernel():
    q, k, v = inputs(seed=5)
    with torch.no_grad():
        out = cross_modal_correlation(q, k, v, block_size=10)
    assert not out.requires_grad
    torch.testing.assert_close(out, naive(q, k, v, "tanh").detach(), atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="kernel"):
        cross_modal_correlation(q, k, v, kernel="softmax")


def naive_rca(rca: RecursiveCrossModalAttention, xs: dict) -> dict:
    """The module's equations (7)-(12) with dense N × N matrices."""
    for _ in range(rca.rounds):
        joint = torch.cat([xs[m] for m in rca.modalities], 1) @ rca.joint.weight.t() + rca.joint.bias
        new = {}
        for m in rca.modalities:
            j_m = joint @ rca.to_modality[m].weight.t()
            if rca.qk_norm:
                c = F.normalize(xs[m], dim=1) @ F.normalize(j_m, dim=1).t()  # cosines [N, N]
            else:
                c = xs[m] @ j_m.t() / math.sqrt(xs[m].size(1))  # [N, N]
            if rca.kernel == "tanh":
                c = torch.tanh(c)
            h = F.relu(c @ xs[m] @ rca.value[m].weight.t() / c.size(1))
            new[m] = h @ rca.out[m].weight.t() + xs[m]
        xs = new
    return xs


@pytest.mark.parametrize("qk_norm", [False, True])
@pytest.mark.parametrize("kernel", ["tanh", "linear"])
def test_module_blockwise_equals_naive(kernel, qk_norm):
    torch.manual_seed(0)
    mods = ["image", "text", "audio"]  # any number of modalities
    rca = RecursiveCrossModalAttention(mods, dim=D, joint_dim=7, hidden_dim=5, rounds=3,
                                       kernel=kernel, block_size=8, qk_norm=qk_norm).double()
    x0 = {m: torch.randn(N, D, dtype=torch.float64, requires_grad=True) for m in mods}
    g = {m: torch.randn(N, D, dtype=torch.float64) for m in mods}
    leaves = list(rca.parameters()) + list(x0.values())

    out = rca(x0)
    got = torch.autograd.grad(sum((out[m] * g[m]).sum() for m in mods), leaves)
    ref = naive_rca(rca, x0)
    want = torch.autograd.grad(sum((ref[m] * g[m]).sum() for m in mods), leaves)
    for m in mods:
        torch.testing.assert_close(out[m], ref[m], atol=1e-11, rtol=1e-10)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, atol=1e-11, rtol=1e-9)
    # the residual keeps the scale: no blow-up over the rounds (the 1/N factor)
    assert all(out[m].norm() < 10 * x0[m].norm() for m in mods)
    assert rca.concat(out).shape == (N, 3 * D)


def test_rounds_share_weights_and_zero_rounds_is_identity():
    rca = RecursiveCrossModalAttention(["a", "b"], dim=4, rounds=5)
    assert sum(p.numel() for p in rca.parameters()) == (8 * 64 + 64) + 2 * (64 * 4 + 4 * 64 + 64 * 4)
    x = {"a": torch.randn(10, 4), "b": torch.randn(10, 4)}
    rca.rounds = 0
    assert rca(x) is x
    assert "rounds=0" in repr(rca) and "kernel='tanh'" in repr(rca)
