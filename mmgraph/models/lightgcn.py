"""LightGCN on the bipartite user–item graph."""

from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from mmgraph.graph.build import GraphSpec
from mmgraph.models.base import GraphRecommender, edge_inputs
from mmgraph.nn.conv import BipartiteLGConv
from mmgraph.nn.losses import batch_bpr, emb_loss
from mmgraph.typing import ITEM, IU, UI, USER, BPRBatch


class LightGCN(GraphRecommender):
    r"""LightGCN from `"LightGCN: Simplifying and Powering Graph Convolution Network
    for Recommendation" <https://arxiv.org/abs/2002.02126>`_ (SIGIR'20), as MMRec's ``LightGCN``.

    .. math::
        \mathbf{E}_u^{(l+1)} = \hat{\mathbf{A}}_{UI} \mathbf{E}_i^{(l)}, \quad
        \mathbf{E}_i^{(l+1)} = \hat{\mathbf{A}}_{IU} \mathbf{E}_u^{(l)}, \quad
        \mathbf{E} = \frac{1}{L+1}\sum_{l=0}^{L} \mathbf{E}^{(l)}

    with ``Â = D_u^{-1/2} R D_i^{-1/2}`` on the train interactions (edge types ``UI``
    and ``IU``, weights from ``GraphSpec(ui_norm='sym')``; with ``ui_norm='rw_selfloop'``
    it propagates with ``D^{-1}(A + I)`` instead, see :meth:`propagate`). Loss:
    ``BPR + λ·EmbLoss(E⁰_u[u], E⁰_i[i], E⁰_i[j])`` on the layer-0 embeddings of the
    batch (MMRec parity). Xavier-uniform initialisation.
    MMRec names: ``n_layers`` → ``num_layers``, ``embedding_size`` → ``embedding_dim``.

    Args:
        num_users: number of users.
        num_items: number of items.
        embedding_dim: embedding size. (default: ``64``)
        num_layers: propagation layers ``L``. (default: ``3``)
        reg_weight: weight ``λ``. (default: ``1e-4``)
        graph: graph spec (default: the ``'sym'``-normalised user–item graph).
    """

    def __init__(self, num_users: int, num_items: int, *, embedding_dim: int = 64,
                 num_layers: int = 3, reg_weight: float = 1e-4, graph: GraphSpec | None = None) -> None:
        super().__init__(num_users, num_items, embedding_dim=embedding_dim, graph=graph)
        if num_layers < 0:
            raise ValueError(f"num_layers must be >= 0, got {num_layers}")
        self.num_layers = num_layers
        self.reg_weight = reg_weight
        self.user_emb = torch.nn.Embedding(num_users, embedding_dim)
        self.item_emb = torch.nn.Embedding(num_items, embedding_dim)
        self.conv = BipartiteLGConv()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        torch.nn.init.xavier_uniform_(self.user_emb.weight)
        torch.nn.init.xavier_uniform_(self.item_emb.weight)

    def propagate(self, data: HeteroData, x_user: Tensor, x_item: Tensor) -> tuple[Tensor, Tensor]:
        """Layer-mean LightGCN readout of ``(x_user [U, d], x_item [I, d])`` over ``UI``/``IU``.

        See :func:`lightgcn_propagate` (which other models call for other readouts).
        """
        return lightgcn_propagate(self.conv, data, x_user, x_item, self.num_layers)

    def forward(self, data: HeteroData) -> dict[str, Tensor]:
        u, i = self.propagate(data, self.user_emb.weight, self.item_emb.weight)
        return {"user": u, "item": i}

    def loss(self, data: HeteroData, batch: BPRBatch) -> dict[str, Tensor]:
        emb = self(data)
        bpr, u, i, j = batch_bpr(emb["user"], emb["item"], batch)  # u, i, j: [B, d]
        reg = emb_loss(self.user_emb(batch.users), self.item_emb(batch.pos_items), self.item_emb(batch.neg_items))
        return {"loss": bpr + self.reg_weight * reg, "bpr": bpr, "reg": reg}

    def extra_repr(self) -> str:
        return super().extra_repr() + f", num_layers={self.num_layers}"


def lightgcn_propagate(conv: BipartiteLGConv, data: HeteroData, x_user: Tensor, x_item: Tensor,
                       num_layers: int, *, readout: str = "mean") -> tuple[Tensor, Tensor]:
    """LightGCN propagation of ``(x_user [U, d], x_item [I, d])`` over ``UI``/``IU``, layers 0..L read out.

    ``readout='mean'`` (LightGCN, MMRec) averages the layers, ``'sum'`` adds them (LIRDRec).
    When the data layer stored self-loop weights (``GraphSpec(ui_norm='rw_selfloop')``:
    ``data['user'].self_weight``, ``data['item'].self_weight``), each layer also adds
    ``self_weight · x``, i.e. propagates with ``D^{-1}(A + I)`` (LATTICE's reference code).
    """
    if readout not in ("mean", "sum"):
        raise ValueError(f"readout must be 'mean' or 'sum', got {readout!r}")
    num_users, num_items = x_user.size(0), x_item.size(0)
    iu, iu_w = edge_inputs(data, IU)  # item -> user
    ui, ui_w = edge_inputs(data, UI)  # user -> item
    self_u = data[USER].get("self_weight")  # [U] or None
    self_i = data[ITEM].get("self_weight")  # [I] or None
    sum_u, sum_i = x_user, x_item
    for _ in range(num_layers):
        # Each direction's backward multiplies by the other direction's adjacency.
        new_u = conv((x_item, None), iu, iu_w, size=(num_items, num_users),
                     adj_rev=ui if iu_w is None else None)
        new_i = conv((x_user, None), ui, ui_w, size=(num_users, num_items),
                     adj_rev=iu if ui_w is None else None)
        if self_u is not None:
            new_u = new_u + self_u.view(-1, 1) * x_user
        if self_i is not None:
            new_i = new_i + self_i.view(-1, 1) * x_item
        x_user, x_item = new_u, new_i
        sum_u = sum_u + x_user
        sum_i = sum_i + x_item
    if readout == "sum":
        return sum_u, sum_i
    scale = 1.0 / (num_layers + 1)
    return sum_u * scale, sum_i * scale
