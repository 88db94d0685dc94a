"""VBPR: matrix factorisation with a linear projection of the item content features."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from mmgraph.graph.build import GraphSpec
from mmgraph.models.base import GraphRecommender, resolve_modalities
from mmgraph.nn.losses import bpr_loss, emb_loss
from mmgraph.typing import ITEM, BPRBatch


class VBPR(GraphRecommender):
    r"""VBPR from `"VBPR: Visual Bayesian Personalized Ranking from Implicit Feedback"
    <https://arxiv.org/abs/1510.01784>`_ (AAAI'16), as MMRec's ``VBPR`` (no bias terms, all
    modalities' features concatenated and projected by one linear layer).

    .. math::
        \mathbf{e}_i = \big[\boldsymbol\gamma_i \,;\, \mathbf{W}[\mathbf{x}^{m_1}_i; \dots;
        \mathbf{x}^{m_M}_i] + \mathbf{b}\big] \in \mathbb{R}^{2d}, \qquad
        \mathbf{e}_u \in \mathbb{R}^{2d}, \qquad \hat y_{ui} = \mathbf{e}_u^\top \mathbf{e}_i

    .. math::
        \mathcal{L} = \mathrm{BPR}(\hat y_{ui}, \hat y_{uj})
        + \lambda\,\mathrm{EmbLoss}(\mathbf{e}_u, \mathbf{e}_i, \mathbf{e}_j)

    The features are frozen (MMRec keeps them as a plain tensor). The projection of the
    concatenation is stored per modality, :math:`\mathbf{W}[\mathbf{x}^{1}; \dots] =
    \sum_m \mathbf{W}_m \mathbf{x}^m` (a ``ModuleDict`` of bias-free ``Linear`` blocks and one
    bias), so no ``[I, ΣF_m]`` concatenation is ever built; MMRec's Xavier-normal init of the
    whole ``W`` is reproduced by drawing every block with the concatenation's standard
    deviation :math:`\sqrt{2 / (\sum_m F_m + d)}` (bias 0). The concatenation order (MMRec:
    text, then image) is only a permutation of the columns of ``W`` and changes nothing in
    distribution. ID parameters :math:`\mathbf{e}_u` (``[U, 2d]``) and
    :math:`\boldsymbol\gamma_i` (``[I, d]``) are Xavier-uniform, as MMRec. Uses no graph.

    Differences from MMRec: in training only the batch's items are projected (the same
    values and gradients as projecting the whole table); evaluation always uses a fresh
    :meth:`forward`, never embeddings cached from the last training batch.

    MMRec names: ``embedding_size`` → ``embedding_dim`` (users get ``2·embedding_dim``),
    ``reg_weight`` unchanged (MMRec grid ``[2.0, 1.0, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5]``; our default
    is the reference setting 1e-4, as for ``BPR``).

    Args:
        num_users: number of users.
        num_items: number of items.
        modality_dims: feature size of every modality (passed by the pipeline).
        embedding_dim: size ``d`` of the ID part and of the projected-feature part. (default: ``64``)
        reg_weight: weight ``λ`` of the embedding regulariser. (default: ``1e-4``)
        modalities: modalities to use (``None``: all of ``modality_dims``). (default: ``None``)
        graph: graph spec (only the user–item graph is built; unused by the model).
    """

    required_edge_types: ClassVar[tuple] = ()

    def __init__(self, num_users: int, num_items: int, *, modality_dims: dict[str, int],
                 embedding_dim: int = 64, reg_weight: float = 1e-4, modalities: list[str] | None = None,
                 graph: GraphSpec | None = None) -> None:
        super().__init__(num_users, num_items, embedding_dim=embedding_dim, graph=graph)
        mods = resolve_modalities("VBPR", modality_dims, modalities)
        self.modalities = mods
        self.required_modalities = tuple(mods)  # type: ignore[misc]
        self.reg_weight = reg_weight
        self.user_emb = torch.nn.Parameter(torch.empty(num_users, 2 * embedding_dim))
        self.item_emb = torch.nn.Parameter(torch.empty(num_items, embedding_dim))
        self.projections = torch.nn.ModuleDict(
            {m: torch.nn.Linear(int(modality_dims[m]), embedding_dim, bias=False) for m in mods})
        self.bias = torch.nn.Parameter(torch.zeros(embedding_dim))
        self.feat_dim = sum(int(modality_dims[m]) for m in mods)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform ID tables; Xavier-normal ``W`` of the concatenated features, zero bias."""
        torch.nn.init.xavier_uniform_(self.user_emb)
        torch.nn.init.xavier_uniform_(self.item_emb)
        std = math.sqrt(2.0 / (self.feat_dim + self.embedding_dim))  # xavier_normal_ of [d, ΣF_m]
        for lin in self.projections.values():
            torch.nn.init.normal_(lin.weight, 0.0, std)
        torch.nn.init.zeros_(self.bias)

    def project(self, data: HeteroData, items: Tensor | None = None) -> Tensor:
        """``W [x^1; ...; x^M] + b`` of ``items`` (``None``: all), ``[B or I, d]``."""
        out = self.bias
        for m, lin in self.projections.items():
            x = data[ITEM][f"x_{m}"]
            out = out + lin(x if items is None else x[items])
        return out

    def item_embedding(self, data: HeteroData, items: Tensor | None = None) -> Tensor:
        """``[γ_i ; W x_i + b]`` of ``items`` (``None``: all), ``[B or I, 2d]``."""
        gamma = self.item_emb if items is None else self.item_emb[items]
        return torch.cat([gamma, self.project(data, items)], dim=-1)

    def forward(self, data: HeteroData) -> dict[str, Tensor]:
        return {"user": self.user_emb, "item": self.item_embedding(data)}

    def loss(self, data: HeteroData, batch: BPRBatch) -> dict[str, Tensor]:
        u = self.user_emb[batch.users]  # [B, 2d]
        i = self.item_embedding(data, batch.pos_items)
        j = self.item_embedding(data, batch.neg_items)
        bpr = bpr_loss((u * i).sum(-1), (u * j).sum(-1))
        reg = emb_loss(u, i, j)
        return {"loss": bpr + self.reg_weight * reg, "bpr": bpr, "reg": reg}

    def extra_repr(self) -> str:
        return super().extra_repr() + f", modalities={self.modalities}, reg_weight={self.reg_weight}"
