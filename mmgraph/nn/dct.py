"""Orthonormal type-II discrete cosine transform in torch, computed with an FFT.

:func:`dct` equals ``scipy.fft.dct(x, type=2, norm='ortho', axis=dim)`` and
:func:`dctn` equals ``scipy.fft.dctn(x, type=2, norm='ortho', axes=dims)``; neither
ever forms an ``N × N`` cosine matrix. The transform along one axis uses Makhoul's
reordering (J. Makhoul, "A fast cosine transform in one and two dimensions", IEEE
TASSP 1980): with ``v = [x_0, x_2, x_4, …, x_5, x_3, x_1]`` (even-indexed entries,
then the odd-indexed ones reversed) and ``V = FFT(v)``,

.. math::
    \\sum_{n=0}^{N-1} x_n \\cos\\frac{\\pi k (2n + 1)}{2N}
    = \\operatorname{Re}\\big(e^{-i\\pi k / (2N)}\\, V_k\\big),

so a length-``N`` DCT costs one length-``N`` FFT. The ``'ortho'`` scaling multiplies
coefficient ``k`` by ``sqrt(1/N)`` for ``k = 0`` and ``sqrt(2/N)`` otherwise, which
makes the transform an orthogonal matrix (norms are preserved, the inverse is the
transpose).

The work is done in blocks of the other axis (``block_size`` rows for the last axis,
columns for the first), so the complex FFT workspace stays small: an ``[I, F]``
feature matrix of Amazon Electronics size (63,001 × 4,096) is transformed along
either axis with a few hundred MB of workspace on top of input and output.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _dct_last(x: Tensor) -> Tensor:
    """Orthonormal DCT-II along the last axis of a 2-D ``[R, N]`` tensor."""
    n = x.size(-1)
    v = torch.cat([x[..., ::2], x[..., 1::2].flip(-1)], dim=-1)  # Makhoul's reordering
    spec = torch.fft.rfft(v, dim=-1)  # [R, N//2+1]
    k = torch.arange(n, device=x.device, dtype=torch.float64)
    # V_k for k > N/2 is conj(V_{N-k}) (real input): expand the half spectrum.
    half = spec.size(-1)
    if n > half:
        tail = spec[..., 1:n - half + 1].flip(-1).conj()
        spec = torch.cat([spec, tail], dim=-1)  # [R, N]
    twiddle = torch.polar(torch.ones_like(k), -math.pi * k / (2 * n)).to(spec.dtype)  # e^{-iπk/2N}
    out = (spec * twiddle).real
    scale = torch.full((n,), math.sqrt(2.0 / n), dtype=out.dtype, device=x.device)
    scale[0] = math.sqrt(1.0 / n)
    return (out * scale).to(x.dtype)


def _idct_last(y: Tensor) -> Tensor:
    """Inverse of :func:`_dct_last` (orthonormal DCT-III) along the last axis, by Makhoul's inverse:
    with unnormalised coefficients ``X_k`` (and ``X_N = 0``), ``V_k = e^{iπk/2N} (X_k − i X_{N−k})``,
    ``v = IFFT(V)``, then ``x_{2n} = v_n`` and ``x_{2n+1} = v_{N−1−n}``."""
    n = y.size(-1)
    scale = torch.full((n,), math.sqrt(2.0 / n), dtype=torch.float64, device=y.device)
    scale[0] = math.sqrt(1.0 / n)
    X = y.double() / scale
    X_rev = torch.cat([torch.zeros_like(X[..., :1]), X[..., 1:].flip(-1)], dim=-1)  # X_{N-k}
    k = torch.arange(n, device=y.device, dtype=torch.float64)
    twiddle = torch.polar(torch.ones_like(k), math.pi * k / (2 * n))
    v = torch.fft.ifft(twiddle * torch.complex(X, -X_rev), dim=-1).real
    half = (n + 1) // 2
    x = torch.cat([v[..., :half].unsqueeze(-1), _pad_to(v[..., half:].flip(-1), half).unsqueeze(-1)], dim=-1)
    return x.reshape(*v.shape[:-1], 2 * half)[..., :n].to(y.dtype)


def _pad_to(t: Tensor, length: int) -> Tensor:
    """``t`` padded with zeros on the right of its last axis to ``length`` entries."""
    if t.size(-1) == length:
        return t
    return torch.cat([t, t.new_zeros(*t.shape[:-1], length - t.size(-1))], dim=-1)


def idct(x: Tensor, dim: int = -1) -> Tensor:
    """Inverse of :func:`dct` (``scipy.fft.idct(type=2, norm='ortho')``, the transposed matrix), along
    ``dim`` of a 2-D tensor; differentiable (used to fold the DCT into a linear layer's weights)."""
    if x.dim() != 2:
        raise ValueError(f"idct expects a 2-D tensor, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"idct expects a floating-point tensor, got {x.dtype}")
    if x.numel() == 0:
        return x.clone()
    return _idct_last(x) if dim % 2 == 1 else _idct_last(x.t()).t()


def dct(x: Tensor, dim: int = -1, *, block_size: int | None = None) -> Tensor:
    """Orthonormal DCT-II of a 2-D tensor along ``dim`` (``scipy.fft.dct(type=2, norm='ortho')``).

    Args:
        x: ``[R, C]`` real tensor (float32 or float64).
        dim: axis to transform, ``0``/``-2`` or ``1``/``-1``. (default: ``-1``)
        block_size: slices of the other axis transformed at once (default: about 16M
            entries per block).

    Returns:
        A tensor of the shape and dtype of ``x``.
    """
    if x.dim() != 2:
        raise ValueError(f"dct expects a 2-D tensor, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"dct expects a floating-point tensor, got {x.dtype}")
    dim = dim % 2
    n = x.size(dim)
    if n == 0 or x.numel() == 0:
        return x.clone()
    other = x.size(1 - dim)
    bs = block_size or max(1, (1 << 24) // n)
    out = torch.empty_like(x)
    for s in range(0, other, bs):
        e = min(other, s + bs)
        if dim == 1:
            out[s:e] = _dct_last(x[s:e])
        else:  # transform columns: transpose a column block, transform its rows, write back
            out[:, s:e] = _dct_last(x[:, s:e].t().contiguous()).t()
    return out


def dctn(x: Tensor, dims: tuple[int, ...] = (0, 1), *, block_size: int | None = None) -> Tensor:
    """Orthonormal DCT-II along several axes of a 2-D tensor (``scipy.fft.dctn(type=2, norm='ortho')``)."""
    for d in dims:
        x = dct(x, d, block_size=block_size)
    return x


__all__ = ["dct", "dctn", "idct"]
