"""MGCN: multi-view graph convolution with behaviour-guided purification and behaviour-aware fusion."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import HeteroData

from mmgraph.graph.build import GraphSpec
from mmgraph.models.base import GraphRecommender, edge_inputs, resolve_modalities
from mmgraph.models.lightgcn import lightgcn_propagate
from mmgraph.nn.conv import BipartiteLGConv, KNNConv
from mmgraph.nn.losses import info_nce, l2_reg
from mmgraph.typing import ITEM, IU, UI, BPRBatch, item_knn_type


class MGCN(GraphRecommender):
    r"""MGCN from `"Multi-View Graph Convolutional Network for Multimedia Recommendation"
    <https://arxiv.org/abs/2308.03588>`_ (ACM MM'23), as MMRec's ``MGCN``.

    **Behaviour-guided purifier.** Per modality :math:`m`, the (trainable) raw item features
    are projected, :math:`\mathbf{f}_m = \mathbf{W}^f_m \mathbf{x}_m + \mathbf{b}^f_m`, and gate
    the item ID embeddings: :math:`\tilde{\mathbf{e}}^m_i = \mathbf{E}^{ID}_i \odot
    \sigma(\mathbf{W}^g_m \mathbf{f}_m + \mathbf{b}^g_m)`.

    **Item–item view.** :math:`\tilde{\mathbf{e}}^m_I \leftarrow S_m^{L_{ii}} \tilde{\mathbf{e}}^m_I`
    with the frozen per-modality kNN graph :math:`S_m` (each item's ``knn_k`` most
    cosine-similar items, itself included, cosine weights, :math:`D^{-1/2} W D^{-1/2}` with
    row-sum degrees; edge types ``('item', 'knn_<m>', 'item')``), and users
    :math:`\tilde{\mathbf{e}}^m_U = \hat R\, \tilde{\mathbf{e}}^m_I` with :math:`\hat R = D_u^{-1/2}
    R D_i^{-1/2}` (the user block of :math:`\hat A`, edge type ``IU``).

    **User–item view.** LightGCN with layer-mean readout over :math:`\hat A` (``num_ui_layers``):
    :math:`\mathbf{E}^c`.

    **Behaviour-aware fuser** (rows of users and items alike, :math:`\mathbf{e}^m =
    [\tilde{\mathbf{e}}^m_U; \tilde{\mathbf{e}}^m_I]`, :math:`K` modalities):

    .. math::
        \beta_m = \operatorname{softmax}_m\big(\mathbf{q}^\top \tanh(\mathbf{W}\mathbf{e}^m +
        \mathbf{b})\big), \quad \mathbf{c} = \sum_m \beta_m \mathbf{e}^m, \quad
        \mathbf{s}_m = (\mathbf{e}^m - \mathbf{c}) \odot \sigma(\mathbf{W}^p_m \mathbf{E}^c +
        \mathbf{b}^p_m),

    .. math::
        \mathbf{E}^s = \frac{1}{K+1}\Big(\sum_m \mathbf{s}_m + \mathbf{c}\Big), \qquad
        \mathbf{E} = \mathbf{E}^c + \mathbf{E}^s, \qquad \hat y_{ui} = \mathbf{e}_u^\top \mathbf{e}_i .

    MMRec divides by 3 for its two modalities (see demonph10/MGCN#1: the paper's equation has
    no such factor); :math:`K + 1` is the same number for :math:`K = 2` and the mean of the
    summed terms for any :math:`K`.

    **Loss** (MMRec): :math:`-\mathrm{mean}\log\sigma(\hat y_{ui} - \hat y_{uj})
    + \lambda \cdot \tfrac12(\lVert\mathbf{e}_u\rVert^2 + \lVert\mathbf{e}_i\rVert^2 +
    \lVert\mathbf{e}_j\rVert^2)/B + \lambda_{cl} [\mathrm{InfoNCE}(\mathbf{E}^s_I[i],
    \mathbf{E}^c_I[i]) + \mathrm{InfoNCE}(\mathbf{E}^s_U[u], \mathbf{E}^c_U[u])]` with in-batch
    negatives and temperature 0.2 (hard-coded in MMRec; its ``self.tau = 0.5`` is unused).
    :math:`B` is the actual batch size (MMRec divides by ``train_batch_size``, which differs
    only on each epoch's last, smaller batch).

    Differences from MMRec: none in the model; evaluation always runs a fresh
    :meth:`forward` (MMRec's MGCN also does). Any number of named modalities (MMRec: image and
    text); the raw features are trainable parameters (``nn.Embedding.from_pretrained(freeze=False)``
    in MMRec; ``train_raw_features``), copied from ``data`` by :meth:`init_from_data`.

    MMRec names: ``embedding_size`` → ``embedding_dim``, ``n_ui_layers`` → ``num_ui_layers``,
    ``n_layers`` → ``num_ii_layers``, ``knn_k`` → ``knn_k`` (``graph.item_knn_k``), ``cl_loss`` →
    ``cl_weight``, ``reg_weight`` → ``reg_weight``; ``lambda_coeff`` is unused there and absent
    here. ``learning_rate_scheduler: [0.96, 50]`` is a trainer setting
    (``trainer.lr_decay=0.96 trainer.lr_decay_every=50``).

    Args:
        num_users: number of users.
        num_items: number of items.
        modality_dims: feature size of every modality (passed by the pipeline).
        embedding_dim: ID embedding size. (default: ``64``)
        num_ui_layers: LightGCN layers of the user–item view. (default: ``2``)
        num_ii_layers: item–item graph layers. (default: ``1``)
        knn_k: neighbours of the per-modality item kNN graphs. (default: ``10``)
        reg_weight: weight :math:`\lambda` of the L2 term. (default: ``1e-4``)
        cl_weight: weight :math:`\lambda_{cl}` of the contrastive terms (MMRec grid
            ``[0.001, 0.01, 0.1]``). (default: ``1e-3``)
        cl_temperature: InfoNCE temperature. (default: ``0.2``)
        train_raw_features: the raw item features are trainable (MMRec). (default: ``True``)
        modalities: modalities to use (default: all of ``modality_dims``).
        graph: graph spec (default: derived from ``knn_k``: ``UI``/``IU`` with ``'sym'``
            weights and the per-modality kNN graphs above, no fused graph).
    """

    def __init__(self, num_users: int, num_items: int, *, modality_dims: dict[str, int],
                 embedding_dim: int = 64, num_ui_layers: int = 2, num_ii_layers: int = 1, knn_k: int = 10,
                 reg_weight: float = 1e-4, cl_weight: float = 1e-3, cl_temperature: float = 0.2,
                 train_raw_features: bool = True, modalities: list[str] | None = None,
                 graph: GraphSpec | None = None) -> None:
        modalities = resolve_modalities("MGCN", modality_dims, modalities)
        if graph is None:
            graph = GraphSpec(ui_norm="sym", item_knn_k=knn_k, item_knn_loop=True, item_knn_weighted=True,
                              item_knn_norm="sym", modality_weights={m: 0.0 for m in modalities},
                              item_knn_modalities=True)
        elif not graph.item_knn_modalities or graph.item_knn_k != knn_k or graph.ui_norm != "sym":
            raise ValueError("MGCN needs GraphSpec(ui_norm='sym', item_knn_k=knn_k, item_knn_modalities=True) "
                             "(or graph=None to derive it)")
        super().__init__(num_users, num_items, embedding_dim=embedding_dim, graph=graph)
        if num_ui_layers < 0 or num_ii_layers < 0:
            raise ValueError(f"layer counts must be >= 0, got {num_ui_layers}, {num_ii_layers}")
        self.modalities = modalities
        self.num_ui_layers = num_ui_layers
        self.num_ii_layers = num_ii_layers
        self.reg_weight = reg_weight
        self.cl_weight = cl_weight
        self.cl_temperature = cl_temperature
        self.train_raw_features = train_raw_features
        self.required_modalities = tuple(modalities)  # type: ignore[misc]
        self.required_edge_types = (UI, IU, *(item_knn_type(m) for m in modalities))  # type: ignore[misc]
        d = embedding_dim
        self.user_emb = torch.nn.Embedding(num_users, d)
        self.item_emb = torch.nn.Embedding(num_items, d)
        self.feat_proj = torch.nn.ModuleDict({m: torch.nn.Linear(int(modality_dims[m]), d) for m in modalities})
        self.gate = torch.nn.ModuleDict({m: torch.nn.Linear(d, d) for m in modalities})  # purifier
        self.gate_prefer = torch.nn.ModuleDict({m: torch.nn.Linear(d, d) for m in modalities})  # fuser
        self.query = torch.nn.Sequential(torch.nn.Linear(d, d), torch.nn.Tanh(), torch.nn.Linear(d, 1, bias=False))
        if train_raw_features:
            self.add_raw_features({m: modality_dims[m] for m in modalities})
        self.ui_conv = BipartiteLGConv()
        self.item_conv = KNNConv()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform ID embeddings (MMRec), PyTorch's default ``Linear`` init elsewhere."""
        torch.nn.init.xavier_uniform_(self.user_emb.weight)
        torch.nn.init.xavier_uniform_(self.item_emb.weight)
        for mod in (self.feat_proj, self.gate, self.gate_prefer):
            for lin in mod.values():
                lin.reset_parameters()
        for layer in self.query:
            if isinstance(layer, torch.nn.Linear):
                layer.reset_parameters()

    def init_from_data(self, data: HeteroData) -> None:
        """Copy ``data['item'].x_<m>`` into the trainable raw features."""
        if self.train_raw_features:
            self.load_raw_features(data)

    def _features(self, data: HeteroData, m: str) -> Tensor:
        if self.train_raw_features:
            return self.loaded_raw_features()[m]
        return data[ITEM][f"x_{m}"]

    def embeddings(self, data: HeteroData) -> tuple[Tensor, Tensor, Tensor]:
        """``(E, E^s, E^c)``, each ``[U + I, d]`` (users first): final, side and content embeddings."""
        U, I = self.num_users, self.num_items
        e_user, e_item = self.user_emb.weight, self.item_emb.weight
        iu, iu_w = edge_inputs(data, IU)
        views = []
        for m in self.modalities:
            f = self.feat_proj[m](self._features(data, m))  # [I, d]
            h = e_item * torch.sigmoid(self.gate[m](f))  # behaviour-guided purifier
            adj, w = edge_inputs(data, item_knn_type(m))
            for _ in range(self.num_ii_layers):
                h = self.item_conv(h, adj, w)  # S_m h
            hu = self.ui_conv((h, None), iu, iu_w, size=(I, U))  # R̂ h
            views.append(torch.cat([hu, h]))  # [U + I, d]
        cu, ci = lightgcn_propagate(self.ui_conv, data, e_user, e_item, self.num_ui_layers)
        content = torch.cat([cu, ci])  # E^c
        att = torch.cat([self.query(v) for v in views], dim=-1).softmax(dim=-1)  # [U + I, K]
        common = sum(att[:, k : k + 1] * v for k, v in enumerate(views))
        side = common
        for m, v in zip(self.modalities, views, strict=True):
            side = side + (v - common) * torch.sigmoid(self.gate_prefer[m](content))
        side = side / (len(views) + 1)
        return content + side, side, content

    def forward(self, data: HeteroData) -> dict[str, Tensor]:
        e, _, _ = self.embeddings(data)
        u, i = e.split([self.num_users, self.num_items])
        return {"user": u, "item": i}

    def loss(self, data: HeteroData, batch: BPRBatch) -> dict[str, Tensor]:
        e, side, content = self.embeddings(data)
        U = self.num_users
        u = e[batch.users]
        i = e[U + batch.pos_items]
        j = e[U + batch.neg_items]
        bpr = -F.logsigmoid((u * i).sum(-1) - (u * j).sum(-1)).mean()
        reg = l2_reg(u, i, j)
        cl = (info_nce(side[U + batch.pos_items], content[U + batch.pos_items], self.cl_temperature)
              + info_nce(side[batch.users], content[batch.users], self.cl_temperature))
        total = bpr + self.reg_weight * reg + self.cl_weight * cl
        return {"loss": total, "bpr": bpr, "reg": reg, "cl": cl}

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", modalities={self.modalities}, num_ui_layers={self.num_ui_layers}, "
                f"num_ii_layers={self.num_ii_layers}, reg_weight={self.reg_weight}, cl_weight={self.cl_weight}")
