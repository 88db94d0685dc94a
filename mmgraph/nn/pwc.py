"""Progressive Weight Copying (PWC) of LIRDRec: per-user weights of representation blocks."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

#: Schedules of the DNN share ``w1`` over epochs (see :func:`pwc_weights`).
SCHEDULES = ("code", "eq19", "alg2")
#: What the copied target θ is: a trained per-user parameter (code) or a copy-only buffer (paper).
THETA_MODES = ("param", "buffer")


def _decay_exponent(n: int, schedule: str) -> float:
    # exponent p with τ_n = τ_0 · γ^p after n updates (η_n = γ^n multiplies in once or twice)
    return n * (n + 1) / 2 if schedule in ("code", "eq19") else float(n * (n + 1))


def pwc_weights(n: int, tau: float, gamma: float, schedule: str = "code") -> tuple[float, float]:
    r"""The mixing coefficients ``(w1, w2)`` of PWC at epoch ``n`` (closed forms).

    Every schedule starts from ``w1 = τ``, ``w2 = 1 − τ`` (``n = 0``, before the first
    update) and applies one update per epoch, ``n = 1, 2, …``, with :math:`\eta_n = \gamma^n`;
    ``w2 = 1 − w1`` always.

    * ``'code'`` (the authors' code): ``w1 ← w1·η / (w1·η + w2)``, i.e. the odds of ``w1``
      are multiplied by :math:`\eta_n` each epoch:
      :math:`\operatorname{logit} w_1 = \operatorname{logit}\tau + \tfrac{n(n+1)}{2}\ln\gamma`.
    * ``'eq19'`` (paper eq. 19): :math:`w_1 = \tau_{n-1}\eta_n / (\tau_{n-1}\eta_n + 1 - \tau_{n-1})`
      then :math:`\tau_n = \tau_{n-1}\eta_n`, so :math:`\tau_n = \tau\gamma^{n(n+1)/2}`.
    * ``'alg2'`` (paper Algorithm 2): the same coefficient with :math:`\tau_n = \tau_{n-1}\eta_n^2`,
      so :math:`\tau_n = \tau\gamma^{n(n+1)}`.

    Args:
        n: number of updates so far (the 1-based epoch; ``0`` before training).
        tau: initial decay rate :math:`\tau \in (0, 1)` (``decay_weight``).
        gamma: decay base :math:`\gamma \in (0, 1)` (``decay_base``).
        schedule: ``'code'``, ``'eq19'`` or ``'alg2'``.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"PWC schedule must be one of {SCHEDULES}, got {schedule!r}")
    if n <= 0:
        return tau, 1.0 - tau
    if schedule == "code":
        z = math.log(tau) - math.log1p(-tau) + n * (n + 1) / 2 * math.log(gamma)
        w1 = 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0
        return w1, 1.0 - w1
    tau_prev = tau * gamma ** _decay_exponent(n - 1, schedule)
    a = tau_prev * gamma**n
    w1 = a / (a + 1.0 - tau_prev)
    return w1, 1.0 - w1


class ProgressiveWeightCopying(torch.nn.Module):
    r"""Progressive Weight Copying from `"Learning Item Representations Directly from
    Multimodal Features for Effective Recommendation" <https://arxiv.org/abs/2505.04960>`_
    (eqs. 18–20), with the authors' code semantics by default.

    The user representation is split into ``B`` blocks :math:`\mathbf{E}_u^b` of ``d``
    columns. Each block gets a score from its own MLP :math:`f_b` (``d → d_h → 1``, LeakyReLU),
    mixed with a copied target :math:`\theta_u`, softmaxed over the blocks and used to
    re-weight them:

    .. math::
        \boldsymbol\alpha_u = \operatorname{softmax}_b\big(w_1 f_b(\mathbf{E}_u^b) + w_2 \theta_{u,b}\big),
        \qquad \mathbf{H}_u = \alpha_{u,0}\mathbf{E}_u^0 \oplus \dots \oplus \alpha_{u,B-1}\mathbf{E}_u^{B-1}

    ``(w1, w2)`` follow :func:`pwc_weights` at the current epoch ``n`` (buffer ``step``).
    At the start of epoch ``n > 1`` (:meth:`advance`) :math:`\theta` is overwritten with the
    weights :math:`\boldsymbol\alpha` of the last training forward of the previous epoch
    (kept in the buffer ``last_alpha``). With ``theta='param'`` (code) :math:`\theta` is a
    per-user ``[U, B]`` parameter that the optimiser also trains between overwrites;
    ``'buffer'`` makes it a copy-only target (the paper's wording).

    Args:
        num_users: number of users ``U``.
        num_blocks: number of blocks ``B``.
        block_dim: block width ``d``.
        hidden_dim: MLP hidden size ``d_h``. (default: ``d // 4``, the code's value)
        tau: initial decay rate. (default: ``0.9``)
        gamma: decay base. (default: ``0.9``)
        schedule: ``'code'``, ``'eq19'`` or ``'alg2'``. (default: ``'code'``)
        theta: ``'param'`` or ``'buffer'``. (default: ``'param'``)

    Shapes:
        - **input:** ``[U, B·d]``.
        - **output:** ``([U, B·d], α [U, B])``.
    """

    def __init__(self, num_users: int, num_blocks: int, block_dim: int, hidden_dim: int | None = None,
                 tau: float = 0.9, gamma: float = 0.9, schedule: str = "code", theta: str = "param") -> None:
        super().__init__()
        if schedule not in SCHEDULES:
            raise ValueError(f"PWC schedule must be one of {SCHEDULES}, got {schedule!r}")
        if theta not in THETA_MODES:
            raise ValueError(f"PWC theta must be one of {THETA_MODES}, got {theta!r}")
        if not (0.0 < tau < 1.0 and 0.0 < gamma < 1.0):
            raise ValueError(f"PWC needs 0 < tau < 1 and 0 < gamma < 1, got tau={tau}, gamma={gamma}")
        self.num_blocks = num_blocks
        self.block_dim = block_dim
        self.hidden_dim = hidden_dim or max(1, block_dim // 4)
        self.tau, self.gamma, self.schedule, self.theta_mode = tau, gamma, schedule, theta
        self.scorers = torch.nn.ModuleList(
            torch.nn.Sequential(torch.nn.Linear(block_dim, self.hidden_dim), torch.nn.LeakyReLU(),
                                torch.nn.Linear(self.hidden_dim, 1))
            for _ in range(num_blocks))
        theta_init = torch.empty(num_users, num_blocks)
        if theta == "param":
            self.theta = torch.nn.Parameter(theta_init)
        else:
            self.register_buffer("theta", theta_init)
        self.register_buffer("step", torch.tensor(0, dtype=torch.long))
        self.register_buffer("last_alpha", torch.zeros(num_users, num_blocks))
        self.register_buffer("has_alpha", torch.tensor(False))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Default ``Linear`` init for the scorers, Xavier-normal ``θ`` (as the code); schedule restarts."""
        for s in self.scorers:
            for layer in s:
                if isinstance(layer, torch.nn.Linear):
                    layer.reset_parameters()
        with torch.no_grad():
            torch.nn.init.xavier_normal_(self.theta)
            self.step.zero_()
            self.last_alpha.zero_()
            self.has_alpha.fill_(False)

    def weights(self) -> tuple[float, float]:
        """``(w1, w2)`` at the current epoch."""
        return pwc_weights(int(self.step), self.tau, self.gamma, self.schedule)

    @torch.no_grad()
    def advance(self, n: int) -> None:
        """Enter epoch ``n`` (1-based): ``θ ← α`` of the last training forward (for ``n > 1``)."""
        if n == int(self.step):
            return
        if bool(self.has_alpha):
            self.theta.copy_(self.last_alpha)
        self.step.fill_(n)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Re-weight the blocks of ``x [U, B·d]``; returns ``(H [U, B·d], α [U, B])``."""
        blocks = x.view(x.size(0), self.num_blocks, self.block_dim)  # [U, B, d]
        scores = torch.cat([f(blocks[:, b]) for b, f in enumerate(self.scorers)], dim=1)  # [U, B]
        w1, w2 = self.weights()
        alpha = F.softmax(w1 * scores + w2 * self.theta, dim=1)  # [U, B]
        if self.training:  # copied into θ at the next epoch start (code: the last batch's α)
            with torch.no_grad():
                self.last_alpha.copy_(alpha)
                self.has_alpha.fill_(True)
        return (blocks * alpha.unsqueeze(-1)).reshape(x.shape), alpha

    def extra_repr(self) -> str:
        return (f"num_blocks={self.num_blocks}, block_dim={self.block_dim}, hidden_dim={self.hidden_dim}, "
                f"tau={self.tau}, gamma={self.gamma}, schedule={self.schedule!r}, theta={self.theta_mode!r}")


__all__ = ["ProgressiveWeightCopying", "pwc_weights", "SCHEDULES", "THETA_MODES"]
