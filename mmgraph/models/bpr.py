"""Matrix factorisation with BPR."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from mmgraph.graph.build import GraphSpec
from mmgraph.models.base import GraphRecommender
from mmgraph.nn.losses import bpr_loss, emb_loss
from mmgraph.typing import BPRBatch


class BPR(GraphRecommender):
    r"""MF trained with BPR, from `"BPR: Bayesian Personalized Ranking from Implicit
    Feedback" <https://arxiv.org/abs/1205.2618>`_ (UAI'09), as MMRec's ``BPR``.

    .. math::
        \hat y_{ui} = \mathbf{e}_u^\top \mathbf{e}_i, \qquad
        \mathcal{L} = \mathrm{BPR} + \lambda\,\mathrm{EmbLoss}(\mathbf{e}_u, \mathbf{e}_i, \mathbf{e}_j)

    Uses no graph. Embeddings are initialised with Xavier-normal (MMRec parity).
    MMRec names: ``embedding_size`` → ``embedding_dim``, ``reg_weight`` unchanged.

    Args:
        num_users: number of users.
        num_items: number of items.
        embedding_dim: embedding size. (default: ``64``)
        reg_weight: weight ``λ`` of the embedding regulariser. (default: ``1e-4``)
        graph: graph spec (only the user–item graph is built; unused by the model).
    """

    required_edge_types: ClassVar[tuple] = ()

    def __init__(self, num_users: int, num_items: int, *, embedding_dim: int = 64,
                 reg_weight: float = 1e-4, graph: GraphSpec | None = None) -> None:
        super().__init__(num_users, num_items, embedding_dim=embedding_dim, graph=graph)
        self.reg_weight = reg_weight
        self.user_emb = torch.nn.Embedding(num_users, embedding_dim)
        self.item_emb = torch.nn.Embedding(num_items, embedding_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        torch.nn.init.xavier_normal_(self.user_emb.weight)
        torch.nn.init.xavier_normal_(self.item_emb.weight)

    def forward(self, data: HeteroData) -> dict[str, Tensor]:
        return {"user": self.user_emb.weight, "item": self.item_emb.weight}

    def loss(self, data: HeteroData, batch: BPRBatch) -> dict[str, Tensor]:
        u = self.user_emb(batch.users)  # [B, d]
        i = self.item_emb(batch.pos_items)
        j = self.item_emb(batch.neg_items)
        bpr = bpr_loss((u * i).sum(-1), (u * j).sum(-1))
        reg = emb_loss(u, i, j)
        return {"loss": bpr + self.reg_weight * reg, "bpr": bpr, "reg": reg}
