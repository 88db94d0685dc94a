"""LATTICE: latent modality-aware item graphs on top of a CF backbone."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import HeteroData

from mmgraph.graph.build import GraphSpec
from mmgraph.models.base import GraphRecommender
from mmgraph.models.bpr import BPR
from mmgraph.models.lightgcn import LightGCN
from mmgraph.models.ngcf import NGCF
from mmgraph.nn.conv import KNNConv
from mmgraph.nn.latent_graph import REFRESH, EpochGraphCache, LatentGraph
from mmgraph.nn.losses import bpr_l2_loss
from mmgraph.typing import ITEM, IU, UI, BPRBatch, item_knn_type

BACKBONES = ("lightgcn", "mf", "ngcf")
VARIANTS = ("lattice", "feats_cf", "cf_feats", "cf")
#: Name of the per-epoch :class:`EpochGraphCache` that :meth:`LATTICE.train_graph` puts on ``data``.
CACHE_ATTR = "latent_graphs"


class LATTICE(GraphRecommender):
    r"""LATTICE from `"Mining Latent Structures for Multimedia Recommendation"
    <https://arxiv.org/abs/2104.09036>`_ (ACM MM'21), exact to the authors' code by default.

    The item graph :math:`A` mixes kNN graphs learned from transformed modality features
    with the fixed kNN graphs of the raw features (:class:`~mmgraph.nn.latent_graph.LatentGraph`,
    where the equations are). Items are propagated over it with
    :class:`~mmgraph.nn.conv.KNNConv` and added, L2-normalised, to the CF backbone's item
    embeddings; users are the backbone's:

    .. math::
        \mathbf{h}^{(l)} = A\, \mathbf{h}^{(l-1)},\ \mathbf{h}^{(0)} = \mathbf{x}_i, \qquad
        \hat{\mathbf{x}}_i = \tilde{\mathbf{x}}_i + \frac{\mathbf{h}_i^{(L)}}{\lVert \mathbf{h}_i^{(L)} \rVert_2},
        \qquad \hat y_{ui} = \tilde{\mathbf{x}}_u^\top \hat{\mathbf{x}}_i

    :math:`\tilde{\mathbf{x}}` comes from ``backbone``: ``'lightgcn'`` (layer mean of
    :math:`D^{-1}(A_{UI} + I)`-propagations, via :meth:`LightGCN.propagate
    <mmgraph.models.LightGCN.propagate>` and ``GraphSpec(ui_norm='rw_selfloop')`` as the
    reference), ``'ngcf'`` (:class:`~mmgraph.models.NGCF`) or ``'mf'`` (the ID embeddings).
    The backbone model is a submodule and owns the ID embeddings :math:`\mathbf{x}`.

    Variants (``variant``; the paper's Table 3):

    * ``'lattice'``: the model above;
    * ``'feats_cf'`` (LATTICE/feats-CF): same graph, but
      :math:`\mathbf{h}^{(0)} = \sum_m \alpha_m \tilde{\mathbf{e}}^m` (fused transformed features);
    * ``'cf_feats'`` (CF+feats): no item graph,
      :math:`\hat{\mathbf{x}}_i = \tilde{\mathbf{x}}_i + \mathrm{normalize}(\sum_m \alpha_m \tilde{\mathbf{e}}^m_i)`;
    * ``'cf'``: the backbone alone (the plain CF rows, with the reference's settings).

    **Graph refresh.** The reference rebuilds the learned graph, with gradient, on the first
    batch of each epoch and reuses it detached for the other batches (so :math:`\mathbf{W}_m,
    \mathbf{b}_m, \alpha` and the raw features learn once per epoch). Here that schedule is
    data, not a flag: :meth:`train_graph` returns a shallow copy of ``data`` carrying an
    :class:`~mmgraph.nn.latent_graph.EpochGraphCache` (attribute ``latent_graphs``), from
    which :meth:`forward` takes the graph. ``graph_refresh='epoch'``: built with gradient
    on its first use in the epoch, then a detached sparse copy; ``'batch'``: rebuilt with
    gradient on every batch; ``'never'``: no learned graph at all,
    :math:`A = \sum_m \alpha_m O_m`. Without a cache (evaluation) :meth:`forward` builds the
    graph once under the caller's grad mode, so a full-ranking evaluation, which calls
    ``forward`` once, rebuilds once.

    **Raw features.** As in the reference, the raw features are trainable parameters
    (``train_raw_features=True``), initialised from ``data['item'].x_<m>`` by
    :meth:`init_from_data`, which the pipeline calls after building the graph (a model never
    reads files; the parameters must exist before the optimiser is built). With
    ``train_raw_features=False`` the features are read from ``data`` on every forward.
    The initial graphs :math:`O_m` are the data layer's per-modality kNN graphs of the
    initial features (edge types ``('item', 'knn_<m>', 'item')``): ``GraphSpec(item_knn_k=10,
    item_knn_weighted=True, item_knn_loop=True, item_knn_norm='sym', item_knn_modalities=True)``.

    Loss: ``BPR + reg_weight · ½(‖x̃_u‖² + ‖x̂_i‖² + ‖x̂_j‖²) / B`` on the final batch
    embeddings (reference code); no L2 on the transforms, :math:`\alpha` or the features.

    Reference-code names: ``embed_size`` → ``embedding_dim``, ``feat_embed_dim`` unchanged,
    ``cf_model`` → ``backbone``, ``weight_size`` → ``num_ui_layers``, ``n_layers`` →
    ``num_ii_layers``, ``topk``/``knn_k`` → ``knn_k`` (learned graph) and
    ``graph.item_knn_k`` (initial graphs), ``lambda_coeff`` unchanged, ``regs[0]``/``reg_weight``
    → ``reg_weight``, ``mess_dropout`` unchanged (NGCF only).

    Args:
        num_users: number of users.
        num_items: number of items.
        modality_dims: feature size of every modality (passed by the pipeline).
        embedding_dim: ID embedding size :math:`d`. (default: ``64``)
        feat_embed_dim: transformed feature size :math:`d'` (must equal ``embedding_dim``
            for the ``feats_cf`` and ``cf_feats`` variants). (default: ``64``)
        backbone: ``'lightgcn'``, ``'ngcf'`` or ``'mf'``. (default: ``'lightgcn'``)
        variant: ``'lattice'``, ``'feats_cf'``, ``'cf_feats'`` or ``'cf'``. (default: ``'lattice'``)
        num_ui_layers: layers of the backbone. (default: ``2``)
        num_ii_layers: item-graph layers :math:`L`. (default: ``1``)
        knn_k: neighbours in the learned graphs. (default: ``10``)
        lambda_coeff: weight :math:`\lambda` of the initial graphs. (default: ``0.9``)
        norm_order: ``'code'`` (reference) or ``'paper'``, see :class:`LatentGraph`. (default: ``'code'``)
        clamp_negative: clamp negative learned cosines to 0 (paper wording). (default: ``False``)
        graph_refresh: ``'epoch'``, ``'batch'`` or ``'never'``. (default: ``'epoch'``)
        train_raw_features: the raw features are parameters. (default: ``True``)
        mess_dropout: NGCF message dropout. (default: ``0.1``)
        reg_weight: L2 weight. (default: ``1e-5``)
        knn_block_size: rows per block of the learned kNN search (default: automatic).
        graph: graph spec (default: the one above with ``ui_norm='rw_selfloop'``).
    """

    def __init__(self, num_users: int, num_items: int, *, modality_dims: dict[str, int],
                 embedding_dim: int = 64, feat_embed_dim: int = 64, backbone: str = "lightgcn",
                 variant: str = "lattice", num_ui_layers: int = 2, num_ii_layers: int = 1,
                 knn_k: int = 10, lambda_coeff: float = 0.9, norm_order: str = "code",
                 clamp_negative: bool = False, graph_refresh: str = "epoch",
                 train_raw_features: bool = True, mess_dropout: float = 0.1,
                 reg_weight: float = 1e-5, knn_block_size: int | None = None,
                 graph: GraphSpec | None = None) -> None:
        if graph is None:
            graph = GraphSpec(ui_norm="rw_selfloop", item_knn_k=knn_k, item_knn_loop=True,
                              item_knn_weighted=True, item_knn_norm="sym", item_knn_modalities=True)
        super().__init__(num_users, num_items, embedding_dim=embedding_dim, graph=graph)
        for name, value, allowed in (("backbone", backbone, BACKBONES), ("variant", variant, VARIANTS),
                                     ("graph_refresh", graph_refresh, REFRESH),
                                     ("norm_order", norm_order, ("code", "paper"))):  # "ulf" wants un-normalised O_m
            if value not in allowed:
                raise ValueError(f"LATTICE {name} must be one of {allowed}, got {value!r}")
        if variant in ("feats_cf", "cf_feats") and feat_embed_dim != embedding_dim:
            raise ValueError(f"variant={variant!r} adds transformed features to ID embeddings: "
                             f"feat_embed_dim ({feat_embed_dim}) must equal embedding_dim ({embedding_dim})")
        if variant != "cf" and not modality_dims:
            raise ValueError(f"LATTICE variant={variant!r} needs at least one modality")
        if num_ii_layers < 0:
            raise ValueError(f"num_ii_layers must be >= 0, got {num_ii_layers}")
        self.backbone_name = backbone
        self.variant = variant
        self.graph_refresh = graph_refresh
        self.num_ii_layers = num_ii_layers
        self.train_raw_features = train_raw_features
        self.reg_weight = reg_weight
        self.uses_features = variant != "cf"
        self.uses_item_graph = variant in ("lattice", "feats_cf")
        self.modalities = list(modality_dims) if self.uses_features else []
        # instance-level requirements: they depend on the modalities and the variant
        self.required_modalities = tuple(self.modalities)  # type: ignore[misc]
        self.required_edge_types = (UI, IU) + (  # type: ignore[misc]
            tuple(item_knn_type(m) for m in self.modalities) if self.uses_item_graph else ())

        if backbone == "lightgcn":
            self.backbone: GraphRecommender = LightGCN(num_users, num_items, embedding_dim=embedding_dim,
                                                       num_layers=num_ui_layers, reg_weight=0.0)
        elif backbone == "ngcf":
            self.backbone = NGCF(num_users, num_items, embedding_dim=embedding_dim,
                                 num_layers=num_ui_layers, mess_dropout=mess_dropout, reg_weight=0.0)
        else:
            self.backbone = BPR(num_users, num_items, embedding_dim=embedding_dim, reg_weight=0.0)

        if self.uses_features:
            self.latent = LatentGraph({m: int(modality_dims[m]) for m in self.modalities},
                                      out_dim=feat_embed_dim, k=knn_k, lambda_coeff=lambda_coeff,
                                      norm_order=norm_order, clamp_negative=clamp_negative,
                                      block_size=knn_block_size)
            if train_raw_features:
                self.add_raw_features({m: modality_dims[m] for m in self.modalities})  # filled by init_from_data
        if self.uses_item_graph:
            self.item_conv = KNNConv()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform ID embeddings (as the reference, for every backbone); see the layers for the rest."""
        self.backbone.reset_parameters()
        torch.nn.init.xavier_uniform_(self.backbone.user_emb.weight)
        torch.nn.init.xavier_uniform_(self.backbone.item_emb.weight)
        if self.uses_features:
            self.latent.reset_parameters()

    def init_from_data(self, data: HeteroData) -> None:
        """Copy the raw item features ``data['item'].x_<m>`` into the trainable feature parameters."""
        if self.uses_features and self.train_raw_features:
            self.load_raw_features(data)

    # --------------------------------------------------------------- parts
    def _features(self, data: HeteroData) -> dict[str, Tensor]:
        if not self.train_raw_features:
            return {m: data[ITEM][f"x_{m}"] for m in self.modalities}
        return dict(self.loaded_raw_features())

    def _fused_features(self, feats: dict[str, Tensor]) -> Tensor:
        z = self.latent.transform(feats)  # {m: [I, d']}
        alpha = self.latent.alpha()
        return sum(a * z[m] for a, m in zip(alpha, self.modalities, strict=True))  # type: ignore[return-value]

    def _item_graph(self, data: HeteroData, feats: dict[str, Tensor]):
        initial = {m: (data[item_knn_type(m)].edge_index, data[item_knn_type(m)].edge_weight)
                   for m in self.modalities}
        if self.graph_refresh == "never":
            return self.latent(None, initial)  # A = Σ_m α_m O_m

        def build() -> tuple[Tensor, Tensor]:
            return self.latent(feats, initial)

        cache = data.get(CACHE_ATTR)
        if cache is None:  # evaluation / a plain forward: one rebuild, under the caller's grad mode
            return build()
        return cache.get("item", build, self.num_items)

    def _backbone(self, data: HeteroData) -> tuple[Tensor, Tensor]:
        x_user, x_item = self.backbone.user_emb.weight, self.backbone.item_emb.weight  # [U, d], [I, d]
        if self.backbone_name == "mf":
            return x_user, x_item
        return self.backbone.propagate(data, x_user, x_item)  # type: ignore[operator]

    # ------------------------------------------------------------ contract
    def forward(self, data: HeteroData) -> dict[str, Tensor]:
        x_user, x_item = self._backbone(data)  # x̃: [U, d], [I, d]
        if not self.uses_features:
            return {"user": x_user, "item": x_item}
        feats = self._features(data)
        if self.variant == "cf_feats":
            return {"user": x_user, "item": x_item + F.normalize(self._fused_features(feats), dim=1)}
        edge_index, edge_weight = self._item_graph(data, feats)
        h = self.backbone.item_emb.weight if self.variant == "lattice" else self._fused_features(feats)  # [I, d]
        for _ in range(self.num_ii_layers):
            h = self.item_conv(h, edge_index, edge_weight)
        return {"user": x_user, "item": x_item + F.normalize(h, dim=1)}

    def loss(self, data: HeteroData, batch: BPRBatch) -> dict[str, Tensor]:
        emb = self(data)
        return bpr_l2_loss(emb["user"], emb["item"], batch, self.reg_weight)

    def train_graph(self, data: HeteroData, epoch: int) -> HeteroData:
        """A shallow copy of ``data`` with a fresh :class:`EpochGraphCache` (see the class docstring)."""
        if not self.uses_item_graph or self.graph_refresh == "never":
            return data
        out = copy.copy(data)
        setattr(out, CACHE_ATTR, EpochGraphCache(self.graph_refresh))
        return out

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", backbone={self.backbone_name!r}, variant={self.variant!r}, "
                f"graph_refresh={self.graph_refresh!r}, train_raw_features={self.train_raw_features}")
