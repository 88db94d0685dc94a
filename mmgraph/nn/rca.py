r"""Recursive Cross-Modal Attention (RCA) of CRANE, with an entity × entity correlation
that is never materialised.

Each RCA round correlates every entity (user or item) with every other one, per modality,
through an ``N × N`` matrix :math:`C = k(Q K^\top / \sqrt{d})` with ``N = |U| + |I|``
(261 GB per matrix at Amazon Electronics size). :func:`cross_modal_correlation` computes
:math:`\frac{1}{N} C V` without storing :math:`C`:

* ``kernel='tanh'`` (the paper's): :class:`TanhCorrelation`, an autograd function that
  walks cache-sized tiles of :math:`C` in the forward pass, keeps only the
  ``N × d`` result, and in the backward pass recomputes each tile from the saved
  :math:`Q, K, V` to accumulate the gradients. Memory is ``O(N·d + tile)``; the
  outputs and gradients are those of the dense computation (up to the order of the
  floating-point sums).
* ``kernel='linear'`` (beyond the paper): without the tanh the correlation is bilinear,
  so by associativity :math:`(Q K^\top) V = Q (K^\top V)` is computed exactly in
  ``O(N·d²)`` time and ``O(N·d)`` memory, with ordinary autograd.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from mmgraph.utils.precision import dense_fp32, fp32_region

KERNELS = ("tanh", "linear")


class TanhCorrelation(torch.autograd.Function):
    r"""``out = (1/n_k) · tanh(scale · Q Kᵀ) V`` in tiles, with recomputation.

    Tiles are ``rows × block`` with ``rows = max(1, 2**20 // block)`` (about 4 MB of float32,
    so each tile stays in cache between the matrix product and the elementwise pass);
    nothing of size ``n_q × n_k`` is kept.

    **tanh through the logistic function.** PyTorch's CPU ``tanh`` costs about five times
    its ``sigmoid`` per element, which made the elementwise passes as expensive as the
    matrix products. With :math:`P = \sigma(2 z)` and :math:`\tanh z = 2P - 1`, the affine
    part is folded into the products, so each tile needs one ``sigmoid`` and no other
    full-tile pass in the forward:

    .. math::
        \mathrm{out}_B = \tfrac{1}{n_k}\Big(2 \sum_C P_{BC} V_C - \mathbf{1} \textstyle\sum_j v_j^\top\Big)

    Backward (``G`` = incoming gradient divided by ``n_k``, :math:`\tanh' = 1 - T^2 = 4P(1 - P)`):

    .. math::
        \partial V_C = 2 \sum_B P_{BC}^\top G_B - \mathbf{1}\textstyle\sum_i g_i^\top, \quad
        S = (G_B V_C^\top) \odot P (1 - P), \quad
        \partial Q_B \mathrel{+}= 4\,\mathrm{scale}\; S K_C, \quad
        \partial K_C \mathrel{+}= 4\,\mathrm{scale}\; S^\top Q_B

    Outputs and gradients equal the dense ``tanh`` computation up to float rounding
    (absolute error of ``2P - 1`` ≈ one unit in the last place of 1).

    Inputs: ``q [n_q, d]``, ``k [n_k, d]``, ``v [n_k, d_v]``, ``scale`` (float),
    ``block`` (int). Output: ``[n_q, d_v]``.
    """

    @staticmethod
    def _rows(block: int) -> int:
        return max(1, (1 << 20) // block)

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, scale: float, block: int) -> Tensor:  # noqa: D102
        n_q, n_k = q.size(0), k.size(0)
        rows = TanhCorrelation._rows(block)
        q2 = q * (2.0 * scale)  # sigma(2 z) with z = scale · q kᵀ
        k_t = k.t()
        v_sum = v.sum(0)  # [d_v]
        out = q.new_empty(n_q, v.size(1))
        for rs in range(0, n_q, rows):
            re = min(rs + rows, n_q)
            acc = q.new_zeros(re - rs, v.size(1))  # [r, d_v]
            for cs in range(0, n_k, block):
                ce = min(cs + block, n_k)
                p = torch.mm(q2[rs:re], k_t[:, cs:ce]).sigmoid_()  # [r, c] tile of P
                acc.addmm_(p, v[cs:ce])
            out[rs:re] = acc.mul_(2.0).sub_(v_sum).div_(n_k)  # (2 P V - 1 1ᵀV) / n_k = tanh(z) V / n_k
        ctx.save_for_backward(q2, k, v)
        ctx.scale, ctx.block = scale, block
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):  # noqa: D102
        q2, k, v = ctx.saved_tensors
        scale, block = ctx.scale, ctx.block
        rows = TanhCorrelation._rows(block)
        n_q, n_k = q2.size(0), k.size(0)
        need_q, need_k, need_v = ctx.needs_input_grad[:3]
        g = grad.contiguous() / n_k  # [n_q, d_v]
        dq = torch.zeros_like(q2) if need_q else None
        dk = torch.zeros_like(k) if need_k else None
        dv = torch.zeros_like(v) if need_v else None
        k_t, v_t = k.t(), v.t()
        for cs in range(0, n_k, block):  # column blocks outer: dk, dv rows stay in cache
            ce = min(cs + block, n_k)
            k_c, v_c = k_t[:, cs:ce], v_t[:, cs:ce]  # [d, c], [d_v, c]
            for rs in range(0, n_q, rows):
                re = min(rs + rows, n_q)
                q_b, g_b = q2[rs:re], g[rs:re]
                p = torch.mm(q_b, k_c).sigmoid_()  # recomputed tile of P  [r, c]
                if need_v:
                    dv[cs:ce].addmm_(p.t(), g_b)
                if need_q or need_k:
                    s = torch.mm(g_b, v_c)  # dL/dT  [r, c]
                    s.mul_(p.addcmul_(p, p, value=-1.0))  # ⊙ P(1 - P); the factor 4 is applied below
                    if need_q:
                        dq[rs:re].addmm_(s, k_c.t())
                    if need_k:
                        dk[cs:ce].addmm_(s.t(), q_b)
        if need_v:
            dv.mul_(2.0).sub_(g.sum(0))
        if need_q:
            dq.mul_(4.0 * scale)
        if need_k:
            dk.mul_(2.0)  # q2 = 2·scale·q already carries 2·scale of the 4·scale
        return dq, dk, dv, None, None


def cross_modal_correlation(q: Tensor, k: Tensor, v: Tensor, kernel: str = "tanh",
                            block_size: int = 2048, qk_norm: bool = False) -> Tensor:
    r"""Correlation-weighted mean :math:`\frac{1}{n_k}\, \kappa(Q K^\top/\sqrt{d})\, V`.

    :math:`\kappa` is ``tanh`` (``kernel='tanh'``, blockwise with recomputation, see
    :class:`TanhCorrelation`) or the identity (``kernel='linear'``, computed as
    :math:`Q (K^\top V)`). Neither materialises the ``n_q × n_k`` matrix.

    Args:
        q: queries ``[n_q, d]``.
        k: keys ``[n_k, d]``.
        v: values ``[n_k, d_v]``.
        kernel: ``'tanh'`` or ``'linear'``. (default: ``'tanh'``)
        block_size: columns per tile of the tanh kernel (a tile holds about ``max(block_size, 2**20)``
            entries). (default: ``2048``)
        qk_norm: L2-normalise the rows of ``q`` and ``k`` and drop the :math:`1/\sqrt{d}`, so the
            correlation is :math:`\kappa(\cos(q_i, k_j))` with entries in ``[-1, 1]`` for both
            kernels (beyond the paper; it keeps the linear kernel bounded). (default: ``False``)

    Returns:
        ``[n_q, d_v]``.
    """
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    if k.size(0) != v.size(0) or q.size(1) != k.size(1):
        raise ValueError(f"shape mismatch: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    scale = 1.0 / math.sqrt(q.size(1))
    if qk_norm:
        q, k, scale = F.normalize(q, dim=1), F.normalize(k, dim=1), 1.0
    if kernel == "linear":
        return q @ (k.t() @ v) * (scale / k.size(0))  # [n_q, d] @ [d, d_v]: exact, O(N·d²)
    with fp32_region(q.device.type):  # hand-written backward: one dtype (fp32) throughout
        return TanhCorrelation.apply(*dense_fp32((q, k, v)), scale, int(block_size))


class RecursiveCrossModalAttention(torch.nn.Module):
    r"""Recursive Cross-Modal Attention of `"Cross-Modal Attention Network with Dual Graph
    Learning in Multimodal Recommendation" <https://arxiv.org/abs/2601.11151>`_ (CRANE,
    eqs. 7–13, as rebuilt in our spec), for any number ``M ≥ 1`` of modalities.

    For ``r = 1..R`` with the **same** parameters in every round, and each modality
    :math:`m`, over the ``N`` stacked entities:

    .. math::
        \tilde{J} &= [X_1^{(r-1)} \,\|\, \dots \,\|\, X_M^{(r-1)}]\, W_{tr} + b_{tr} \\
        J_m &= \tilde{J} W_{J,m} \\
        C_m &= \kappa\big(X_m^{(r-1)} J_m^\top / \sqrt{d}\big) \qquad (N \times N,
            \text{ never stored}) \\
        H_m &= \mathrm{ReLU}\big(\tfrac{1}{N}\, C_m X_m^{(r-1)} W_{c,m}\big) \\
        X_m^{(r)} &= H_m W_{h,m} + X_m^{(r-1)}

    and the output is :math:`E = [X_1^{(R)} \| \dots \| X_M^{(R)}]`. :math:`\kappa` is
    ``tanh`` (the paper) or the identity (``kernel='linear'``, exact in ``O(N·d²)``); see
    :func:`cross_modal_correlation`. :math:`X_m W_{c,m}` is formed before the correlation
    (same value by associativity, ``N·d`` instead of ``N·N`` work). ``R = 0`` returns the
    concatenated inputs (the paper's "w/o Attention" ablation).

    Args:
        modalities: modality names, in the order of the concatenation.
        dim: entity feature size :math:`d` (inputs and outputs). (default: ``64``)
        joint_dim: :math:`d_J`. (default: ``64``)
        hidden_dim: :math:`d_h`. (default: ``64``)
        rounds: :math:`R`. (default: ``3``)
        kernel: ``'tanh'`` or ``'linear'``. (default: ``'tanh'``)
        block_size: tile size of the tanh correlation. (default: ``2048``)
        qk_norm: correlate cosines instead of scaled dot products (see
            :func:`cross_modal_correlation`; beyond the paper). (default: ``False``)

    Shapes:
        - **input:** ``{m: (N, d)}``.
        - **output:** ``{m: (N, d)}`` (:math:`X_m^{(R)}`); :meth:`concat` gives ``(N, M·d)``.
    """

    def __init__(self, modalities: list[str], dim: int = 64, joint_dim: int = 64, hidden_dim: int = 64,
                 rounds: int = 3, kernel: str = "tanh", block_size: int = 2048, qk_norm: bool = False) -> None:
        super().__init__()
        if not modalities:
            raise ValueError("RecursiveCrossModalAttention needs at least one modality")
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
        if rounds < 0 or block_size < 1:
            raise ValueError(f"rounds must be >= 0 and block_size >= 1, got {rounds}, {block_size}")
        self.modalities = list(modalities)
        self.dim, self.joint_dim, self.hidden_dim = dim, joint_dim, hidden_dim
        self.rounds = rounds
        self.kernel = kernel
        self.block_size = block_size
        self.qk_norm = qk_norm
        self.joint = torch.nn.Linear(len(self.modalities) * dim, joint_dim)  # W_tr, b_tr   (eq. 8)
        self.to_modality = torch.nn.ModuleDict(  # W_{J,m}                                 (eq. 9)
            {m: torch.nn.Linear(joint_dim, dim, bias=False) for m in self.modalities})
        self.value = torch.nn.ModuleDict(  # W_{c,m}                                       (eq. 11)
            {m: torch.nn.Linear(dim, hidden_dim, bias=False) for m in self.modalities})
        self.out = torch.nn.ModuleDict(  # W_{h,m}                                         (eq. 12)
            {m: torch.nn.Linear(hidden_dim, dim, bias=False) for m in self.modalities})
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform weights, zero biases."""
        for lin in [self.joint, *self.to_modality.values(), *self.value.values(), *self.out.values()]:
            torch.nn.init.xavier_uniform_(lin.weight)
            if lin.bias is not None:
                torch.nn.init.zeros_(lin.bias)

    def step(self, xs: dict[str, Tensor]) -> dict[str, Tensor]:
        """One round (eqs. 7–12)."""
        joint = self.joint(torch.cat([xs[m] for m in self.modalities], dim=1))  # [N, M·d] -> [N, d_J]
        new = {}
        for m in self.modalities:
            key = self.to_modality[m](joint)  # J_m  [N, d]
            val = self.value[m](xs[m])  # X_m W_c  [N, d_h]
            h = F.relu(cross_modal_correlation(xs[m], key, val, self.kernel, self.block_size,
                                                   self.qk_norm))  # [N, d_h]
            new[m] = self.out[m](h) + xs[m]  # residual  [N, d]
        return new

    def forward(self, xs: dict[str, Tensor]) -> dict[str, Tensor]:
        """``R`` rounds with shared weights; returns :math:`X_m^{(R)}` per modality."""
        missing = [m for m in self.modalities if m not in xs]
        if missing:
            raise KeyError(f"RecursiveCrossModalAttention: inputs of modalities {missing} are missing")
        for _ in range(self.rounds):
            xs = self.step(xs)
        return xs

    def concat(self, xs: dict[str, Tensor]) -> Tensor:
        """:math:`E = [X_1 \\| \\dots \\| X_M]` ``[N, M·d]`` (eq. 13)."""
        return torch.cat([xs[m] for m in self.modalities], dim=1)

    def extra_repr(self) -> str:
        return (f"modalities={self.modalities}, dim={self.dim}, rounds={self.rounds}, "
                f"kernel={self.kernel!r}, block_size={self.block_size}, qk_norm={self.qk_norm}")


__all__ = ["RecursiveCrossModalAttention", "TanhCorrelation", "cross_modal_correlation", "KERNELS"]
