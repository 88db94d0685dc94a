"""The FFT-based orthonormal DCT-II against scipy."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft
import torch

from mmgraph.nn.dct import dct, dctn


@pytest.mark.parametrize("shape", [(1, 1), (3, 2), (7, 5), (10, 8), (33, 17), (4, 64)])
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_dct_equals_scipy_on_each_axis(shape, dim):
    x = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(sum(shape)))
    ref = scipy.fft.dct(x.numpy(), type=2, norm="ortho", axis=dim)
    for block in (None, 1, 3):  # blocking of the other axis changes nothing
        np.testing.assert_allclose(dct(x, dim, block_size=block).numpy(), ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", [(5, 4), (9, 16), (30, 7)])
def test_dctn_equals_scipy_2d(shape):
    x = torch.randn(*shape, dtype=torch.float64)
    ref = scipy.fft.dctn(x.numpy(), type=2, norm="ortho", axes=(0, 1))
    np.testing.assert_allclose(dctn(x, (0, 1), block_size=2).numpy(), ref, atol=1e-12)


def test_dct_float32_orthonormal_and_invertible():
    x = torch.randn(50, 384)
    y = dct(x, 1)
    assert y.dtype == torch.float32
    np.testing.assert_allclose(y.numpy(), scipy.fft.dct(x.numpy(), type=2, norm="ortho", axis=1), atol=2e-5)
    torch.testing.assert_close(y.norm(dim=1), x.norm(dim=1), rtol=1e-5, atol=1e-5)  # row norms kept
    back = scipy.fft.idct(y.double().numpy(), type=2, norm="ortho", axis=1)
    np.testing.assert_allclose(back, x.double().numpy(), atol=2e-5)


def test_dct_rejects_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        dct(torch.randn(2, 3, 4))
    with pytest.raises(TypeError, match="floating"):
        dct(torch.ones(3, 3, dtype=torch.long))


@pytest.mark.parametrize("shape", [(1, 1), (3, 2), (7, 5), (4, 64), (2, 4096)])
@pytest.mark.parametrize("dim", [0, 1])
def test_idct_equals_scipy_and_inverts_dct(shape, dim):
    from mmgraph.nn.dct import idct

    x = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3 + sum(shape)))
    ref = scipy.fft.idct(x.numpy(), type=2, norm="ortho", axis=dim)
    np.testing.assert_allclose(idct(x, dim).numpy(), ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(idct(dct(x, dim), dim).numpy(), x.numpy(), rtol=0, atol=1e-12)


def test_idct_is_the_transpose_so_it_folds_into_a_linear_layer():
    """DCT(X) W^T = X (W C)^T with W C = idct(W) row-wise; gradients flow to W."""
    from mmgraph.nn.dct import idct

    X = torch.randn(20, 16, dtype=torch.float64)
    W = torch.randn(5, 16, dtype=torch.float64, requires_grad=True)
    direct = dct(X, 1) @ W.t()
    folded = X @ idct(W, 1).t()
    torch.testing.assert_close(folded, direct, rtol=0, atol=1e-12)
    g_direct, = torch.autograd.grad(direct.sum(), W)
    g_folded, = torch.autograd.grad(folded.sum(), W)
    torch.testing.assert_close(g_folded, g_direct, rtol=0, atol=1e-12)
