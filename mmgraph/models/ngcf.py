"""NGCF on the bipartite user–item graph (LATTICE reference-code form)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import HeteroData

from mmgraph.graph.build import GraphSpec
from mmgraph.models.base import GraphRecommender, edge_inputs
from mmgraph.nn.conv import NGCFConv
from mmgraph.nn.losses import bpr_l2_loss
from mmgraph.typing import ITEM, IU, UI, USER, BPRBatch


class NGCF(GraphRecommender):
    r"""NGCF from `"Neural Graph Collaborative Filtering"
    <https://arxiv.org/abs/1905.08108>`_ (SIGIR'19), as the LATTICE authors' code runs it
    (the NGCF baseline and backbone of the LATTICE paper's Tables 2 and 3).

    .. math::
        \mathbf{S}^{(l)} = \hat{\mathbf{A}} \mathbf{E}^{(l)}, \quad
        \mathbf{E}^{(l+1)} = \mathrm{Dropout}\big(\sigma(\mathbf{S}^{(l)} \mathbf{W}_1^{(l)} + \mathbf{b}_1^{(l)})
            + \sigma((\mathbf{E}^{(l)} \odot \mathbf{S}^{(l)}) \mathbf{W}_2^{(l)} + \mathbf{b}_2^{(l)})\big),
        \quad
        \tilde{\mathbf{E}} = \frac{1}{L+1}\Big(\mathbf{E}^{(0)} + \sum_{l=1}^{L}
            \frac{\mathbf{E}^{(l)}}{\lVert \mathbf{E}^{(l)} \rVert_2}\Big)

    with :math:`\hat{\mathbf{A}} = D^{-1}(A + I)` on the ``U + I`` train graph (edge types
    ``UI``/``IU`` and the node ``self_weight`` of ``GraphSpec(ui_norm='rw_selfloop')``, the
    default), :math:`\sigma` the LeakyReLU (slope 0.01), one :class:`~mmgraph.nn.conv.NGCFConv`
    per layer shared by users and items, and the row-L2-normalised layer outputs averaged
    (the reference averages; the NGCF paper concatenates). The un-normalised
    :math:`\mathbf{E}^{(l)}` feeds the next layer.

    Loss: ``BPR + reg_weight · ½(‖ẽ_u‖² + ‖ẽ_i‖² + ‖ẽ_j‖²) / B`` on the final embeddings of
    the batch (reference code). ID embeddings: Xavier-uniform; linear layers: PyTorch's
    default. LATTICE-code names: ``weight_size`` → ``num_layers`` (all layers
    ``embedding_dim`` wide), ``mess_dropout`` unchanged (a drop probability),
    ``regs[0]`` → ``reg_weight``.

    Args:
        num_users: number of users.
        num_items: number of items.
        embedding_dim: embedding and layer size. (default: ``64``)
        num_layers: propagation layers ``L``. (default: ``2``)
        mess_dropout: dropout probability on each layer's output. (default: ``0.1``)
        reg_weight: L2 weight on the final batch embeddings. (default: ``1e-5``)
        graph: graph spec (default: ``GraphSpec(ui_norm='rw_selfloop')``).
    """

    def __init__(self, num_users: int, num_items: int, *, embedding_dim: int = 64,
                 num_layers: int = 2, mess_dropout: float = 0.1, reg_weight: float = 1e-5,
                 graph: GraphSpec | None = None) -> None:
        super().__init__(num_users, num_items, embedding_dim=embedding_dim,
                         graph=graph if graph is not None else GraphSpec(ui_norm="rw_selfloop"))
        if num_layers < 0:
            raise ValueError(f"num_layers must be >= 0, got {num_layers}")
        if not 0.0 <= mess_dropout < 1.0:
            raise ValueError(f"mess_dropout must lie in [0, 1), got {mess_dropout}")
        self.num_layers = num_layers
        self.mess_dropout = mess_dropout
        self.reg_weight = reg_weight
        self.user_emb = torch.nn.Embedding(num_users, embedding_dim)
        self.item_emb = torch.nn.Embedding(num_items, embedding_dim)
        self.convs = torch.nn.ModuleList(NGCFConv(embedding_dim, embedding_dim) for _ in range(num_layers))
        self.dropout = torch.nn.Dropout(mess_dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        torch.nn.init.xavier_uniform_(self.user_emb.weight)
        torch.nn.init.xavier_uniform_(self.item_emb.weight)
        for conv in self.convs:
            conv.reset_parameters()

    def propagate(self, data: HeteroData, x_user: Tensor, x_item: Tensor) -> tuple[Tensor, Tensor]:
        """NGCF readout of ``(x_user [U, d], x_item [I, d])`` over ``UI``/``IU``."""
        iu, iu_w = edge_inputs(data, IU)  # item -> user
        ui, ui_w = edge_inputs(data, UI)  # user -> item
        self_u = data[USER].get("self_weight")  # [U] or None
        self_i = data[ITEM].get("self_weight")  # [I] or None
        sum_u, sum_i = x_user, x_item
        for conv in self.convs:
            x_user, x_item = (
                self.dropout(conv((x_item, x_user), iu, iu_w, self_weight=self_u)),
                self.dropout(conv((x_user, x_item), ui, ui_w, self_weight=self_i)),
            )
            sum_u = sum_u + F.normalize(x_user, dim=1)
            sum_i = sum_i + F.normalize(x_item, dim=1)
        scale = 1.0 / (self.num_layers + 1)
        return sum_u * scale, sum_i * scale

    def forward(self, data: HeteroData) -> dict[str, Tensor]:
        u, i = self.propagate(data, self.user_emb.weight, self.item_emb.weight)
        return {"user": u, "item": i}

    def loss(self, data: HeteroData, batch: BPRBatch) -> dict[str, Tensor]:
        emb = self(data)
        return bpr_l2_loss(emb["user"], emb["item"], batch, self.reg_weight)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", num_layers={self.num_layers}, mess_dropout={self.mess_dropout}"
