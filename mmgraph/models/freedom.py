"""FREEDOM: a frozen multimodal item–item graph and a denoised (pruned) user–item graph."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import HeteroData

from mmgraph.graph.build import GraphSpec
from mmgraph.models.base import GraphRecommender, edge_inputs
from mmgraph.models.lightgcn import LightGCN
from mmgraph.nn.conv import KNNConv
from mmgraph.nn.drop_edge import degree_sample_edges, with_ui_graph
from mmgraph.typing import II, ITEM, IU, UI, USER, BPRBatch


def degree_sensitive_prune(data: HeteroData, keep_ratio: float,
                           generator: torch.Generator | None = None) -> HeteroData:
    r"""FREEDOM's degree-sensitive edge pruning of the user–item graph, as a new ``HeteroData``.

    Keeps :math:`\lfloor \text{keep\_ratio} \cdot |E| \rfloor` train edges, sampled without
    replacement with probability :math:`\propto 1/\sqrt{d_u d_i}` (the full graph's LightGCN
    weights, so edges between high-degree nodes are dropped more often), and re-normalises
    the kept edges with :math:`1/\sqrt{d'_u d'_i}` on the kept degrees. ``UI`` and ``IU``
    get the kept ``edge_index``, ``edge_weight`` and ``adj_t``; nothing else changes and
    ``data`` itself is not modified (the result is a shallow copy sharing the other tensors).

    Args:
        data: graph with the train edges ``UI``/``IU``.
        keep_ratio: fraction of edges kept, ``1 − dropout`` in MMRec.
        generator: random generator of the sampling (default: torch's global one, as MMRec).
    """
    U, I = data[USER].num_nodes, data[ITEM].num_nodes
    kept, kept_w = degree_sample_edges(data[UI].edge_index, U, I, keep_ratio, generator)
    return with_ui_graph(data, kept, kept_w)


class FREEDOM(GraphRecommender):
    r"""FREEDOM from `"A Tale of Two Graphs: Freezing and Denoising Graph Structures for
    Multimodal Recommendation" <https://arxiv.org/abs/2211.06924>`_ (ACM MM'23), as MMRec's ``FREEDOM``.

    Two graphs. The item–item graph :math:`S` is built once by the data layer from the raw
    features and frozen: per modality, each item's ``k`` most cosine-similar items (itself
    included) with binary weights, normalised to :math:`1/k`, then mixed
    :math:`S = \sum_m w_m S_m` (edge type ``II``; ``GraphSpec(item_knn_k=10,
    item_knn_weighted=False, item_knn_norm='sym', modality_weights=...)``). The user–item
    graph is LightGCN's :math:`\hat A`, pruned each epoch in training by
    :func:`degree_sensitive_prune` (:meth:`train_graph`); evaluation uses the full graph.

    .. math::
        \mathbf{h} = S^{L_{ii}} \mathbf{E}_i, \qquad
        (\bar{\mathbf{e}}_u, \bar{\mathbf{e}}_i) = \frac{1}{L_{ui}+1}\sum_{l=0}^{L_{ui}}
        \hat A^l [\mathbf{E}_u; \mathbf{E}_i], \qquad
        \hat y_{ui} = \bar{\mathbf{e}}_u^\top (\bar{\mathbf{e}}_i + \mathbf{h}_i)

    with the ID embeddings :math:`\mathbf{E}` of a :class:`~mmgraph.models.LightGCN`
    submodule, whose :meth:`~mmgraph.models.LightGCN.propagate` does the user–item part.

    Loss (mean BPR with ``logsigmoid``, as MMRec):
    :math:`\mathrm{BPR}(\bar e_u, e_i, e_j) + \lambda \sum_m \mathrm{BPR}(\bar e_u, W_m x^m_i, W_m x^m_j)`
    with a ``Linear(F_m → feat_embed_dim)`` :math:`W_m` per modality on the raw features,
    which MMRec trains too (``train_raw_features``; copied from ``data`` by :meth:`init_from_data`).
    The feature terms only enter the loss. With ``reg_weight = 0`` (the reference setting)
    their gradient is exactly zero, so neither the projections nor the trainable features are
    built (saving their Adam state), which changes nothing else.

    MMRec names: ``embedding_size`` → ``embedding_dim``, ``n_ui_layers`` → ``num_ui_layers``,
    ``n_mm_layers`` → ``num_ii_layers``, ``dropout`` → ``edge_dropout``, ``knn_k`` →
    ``graph.item_knn_k``, ``mm_image_weight`` → ``graph.modality_weights`` (image share);
    ``lambda_coeff``, ``weight_size``, ``cf_model`` and ``degree_ratio`` are unused there and
    absent here.

    Args:
        num_users: number of users.
        num_items: number of items.
        modality_dims: feature size of every modality (passed by the pipeline).
        embedding_dim: ID embedding size. (default: ``64``)
        feat_embed_dim: size of the feature projections. (default: ``64``)
        num_ui_layers: LightGCN layers :math:`L_{ui}`. (default: ``2``)
        num_ii_layers: item-graph layers :math:`L_{ii}`. (default: ``1``)
        edge_dropout: fraction of user–item edges pruned each training epoch (``0`` disables).
            (default: ``0.8``)
        reg_weight: weight :math:`\lambda` of the feature BPR terms. (default: ``0.0``)
        train_raw_features: the raw features are trainable (MMRec) when ``reg_weight > 0``.
            (default: ``True``)
        graph: graph spec (default: the item kNN graph above with equal modality weights).
    """

    required_edge_types = (UI, IU, II)

    def __init__(self, num_users: int, num_items: int, *, modality_dims: dict[str, int],
                 embedding_dim: int = 64, feat_embed_dim: int = 64, num_ui_layers: int = 2,
                 num_ii_layers: int = 1, edge_dropout: float = 0.8, reg_weight: float = 0.0,
                 train_raw_features: bool = True, graph: GraphSpec | None = None) -> None:
        if graph is None:
            graph = GraphSpec(ui_norm="sym", item_knn_k=10, item_knn_loop=True, item_knn_weighted=False,
                              item_knn_norm="sym")
        super().__init__(num_users, num_items, embedding_dim=embedding_dim, graph=graph)
        if not 0.0 <= edge_dropout < 1.0:
            raise ValueError(f"edge_dropout must be in [0, 1), got {edge_dropout}")
        if num_ii_layers < 0:
            raise ValueError(f"num_ii_layers must be >= 0, got {num_ii_layers}")
        if graph.item_knn_k is None:
            raise ValueError("FREEDOM needs an item kNN graph: set graph.item_knn_k")
        graph = graph.for_modalities(list(modality_dims))  # the reference image/text slots, if asked
        if graph.ui_norm != "sym":
            raise ValueError("FREEDOM prunes and re-normalises LightGCN's graph: graph.ui_norm must be 'sym'")
        if reg_weight and feat_embed_dim != embedding_dim:
            raise ValueError(f"the feature BPR terms score users against projected features: feat_embed_dim "
                             f"({feat_embed_dim}) must equal embedding_dim ({embedding_dim})")
        self.num_ii_layers = num_ii_layers
        self.edge_dropout = edge_dropout
        self.reg_weight = reg_weight
        self.train_raw_features = train_raw_features
        weights = graph.modality_weights
        self.required_modalities = tuple(  # type: ignore[misc]
            m for m, w in weights.items() if w) if weights is not None else tuple(modality_dims)
        self.backbone = LightGCN(num_users, num_items, embedding_dim=embedding_dim,
                                 num_layers=num_ui_layers, reg_weight=0.0)
        self.item_conv = KNNConv()
        # feature projections: only when they can receive a non-zero gradient
        self.feat_modalities = list(modality_dims) if reg_weight else []
        self.projections = torch.nn.ModuleDict(
            {m: torch.nn.Linear(int(modality_dims[m]), feat_embed_dim) for m in self.feat_modalities})
        if self.feat_modalities and train_raw_features:
            self.add_raw_features({m: modality_dims[m] for m in self.feat_modalities})
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform ID embeddings (MMRec), default ``Linear`` init for the projections."""
        self.backbone.reset_parameters()
        for lin in self.projections.values():
            lin.reset_parameters()

    def init_from_data(self, data: HeteroData) -> None:
        """Copy ``data['item'].x_<m>`` into the trainable raw features (when there are any)."""
        if self.feat_modalities and self.train_raw_features:
            self.load_raw_features(data)

    def forward(self, data: HeteroData) -> dict[str, Tensor]:
        e_user, e_item = self.backbone.user_emb.weight, self.backbone.item_emb.weight  # [U, d], [I, d]
        adj, w = edge_inputs(data, II)
        h = e_item
        for _ in range(self.num_ii_layers):
            h = self.item_conv(h, adj, w)  # S h: frozen item–item graph
        u, i = self.backbone.propagate(data, e_user, e_item)  # layer mean over the (pruned) Â
        return {"user": u, "item": i + h}

    def _feature(self, data: HeteroData, m: str, items: Tensor) -> Tensor:
        if self.train_raw_features:
            x = self.loaded_raw_features()[m][items]
        else:
            x = data[ITEM][f"x_{m}"][items]
        return self.projections[m](x)  # [B, d']: rows of W_m x^m, computed for the batch only

    def loss(self, data: HeteroData, batch: BPRBatch) -> dict[str, Tensor]:
        emb = self(data)
        u = emb["user"][batch.users]  # [B, d]
        i = emb["item"][batch.pos_items]
        j = emb["item"][batch.neg_items]
        bpr = -F.logsigmoid((u * i).sum(-1) - (u * j).sum(-1)).mean()
        out = {"bpr": bpr}
        total = bpr
        if self.feat_modalities:
            feat = torch.zeros((), device=bpr.device)
            for m in self.feat_modalities:
                fi = self._feature(data, m, batch.pos_items)
                fj = self._feature(data, m, batch.neg_items)
                feat = feat - F.logsigmoid((u * fi).sum(-1) - (u * fj).sum(-1)).mean()
            out["feat_bpr"] = feat
            total = total + self.reg_weight * feat
        out["loss"] = total
        return out

    def train_graph(self, data: HeteroData, epoch: int) -> HeteroData:
        """The user–item graph pruned for this epoch (a new ``HeteroData``; ``data`` is untouched)."""
        if self.edge_dropout <= 0.0:
            return data
        return degree_sensitive_prune(data, 1.0 - self.edge_dropout)

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", num_ui_layers={self.backbone.num_layers}, "
                f"num_ii_layers={self.num_ii_layers}, edge_dropout={self.edge_dropout}, "
                f"reg_weight={self.reg_weight}")
