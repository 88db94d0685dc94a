"""Loss functions with MMRec's exact definitions."""

from __future__ import annotations

import torch
from torch import Tensor

from mmgraph.typing import BPRBatch


def bpr_loss(pos: Tensor, neg: Tensor, gamma: float = 1e-10) -> Tensor:
    r"""BPR loss :math:`-\mathrm{mean}\,\log(\gamma + \sigma(\hat y_{ui} - \hat y_{uj}))` (MMRec's ``BPRLoss``)."""
    return -torch.log(gamma + torch.sigmoid(pos - neg)).mean()


def batch_bpr(user: Tensor, item: Tensor, batch: BPRBatch) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    r"""BPR loss of a batch scored by dot products of full embedding tables.

    Args:
        user: user embeddings ``[U, d]``.
        item: item embeddings ``[I, d]``.
        batch: the ``(users, pos_items, neg_items)`` triples.

    Returns:
        ``(bpr, u, i, j)``: :func:`bpr_loss` of :math:`u \cdot i` against :math:`u \cdot j`,
        and the gathered rows ``[B, d]`` (for a regulariser on them).
    """
    u, i, j = user[batch.users], item[batch.pos_items], item[batch.neg_items]
    return bpr_loss((u * i).sum(-1), (u * j).sum(-1)), u, i, j


def emb_loss(*embeddings: Tensor) -> Tensor:
    r"""MMRec's ``EmbLoss``: :math:`\sum_t \lVert t \rVert_F / \mathrm{rows}(t_{last})` (norms, not squared)."""
    total = sum(torch.linalg.vector_norm(e) for e in embeddings)
    return total / embeddings[-1].shape[0]  # type: ignore[return-value]


def l2_reg(*embeddings: Tensor) -> Tensor:
    r"""Squared L2 term :math:`\tfrac12 \sum_t \lVert t \rVert_F^2 / B` (MMRec's ``L2Loss``-style models)."""
    total = sum(e.pow(2).sum() for e in embeddings)
    return 0.5 * total / embeddings[-1].shape[0]  # type: ignore[operator]


def bpr_l2_loss(user: Tensor, item: Tensor, batch: BPRBatch, reg_weight: float) -> dict[str, Tensor]:
    r"""The loss terms of models trained with BPR + :func:`l2_reg` on the batch's final embeddings.

    Returns ``{"loss": bpr + reg_weight · reg, "bpr": bpr, "reg": reg}`` (the model ``loss`` contract)
    with ``(bpr, u, i, j) = batch_bpr(user, item, batch)`` and ``reg = l2_reg(u, i, j)``.
    Used by NGCF, LATTICE and ULF.
    """
    bpr, u, i, j = batch_bpr(user, item, batch)  # u, i, j: [B, d]
    reg = l2_reg(u, i, j)
    return {"loss": bpr + reg_weight * reg, "bpr": bpr, "reg": reg}


def info_nce(anchor: Tensor, positive: Tensor, temperature: float) -> Tensor:
    r"""In-batch InfoNCE with cosine similarity, one direction (anchor → positive).

    .. math::
        -\frac{1}{B} \sum_{b} \log \frac{\exp(\cos(a_b, p_b)/\tau)}{\sum_{c} \exp(\cos(a_b, p_c)/\tau)}

    Row ``b`` of ``positive`` is the positive of row ``b`` of ``anchor``; the other rows are
    its negatives. Inputs ``[B, d]``; returns a scalar.
    """
    a = torch.nn.functional.normalize(anchor, dim=1)
    p = torch.nn.functional.normalize(positive, dim=1)
    logits = a @ p.t() / temperature  # [B, B]
    return torch.nn.functional.cross_entropy(logits, torch.arange(a.size(0), device=a.device))
