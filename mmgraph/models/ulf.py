"""ULF: latent item–item *and* user–user graphs on top of LightGCN (Raj & Saha, 2025)."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import HeteroData

from mmgraph.graph.build import GraphSpec
from mmgraph.graph.knn import scatter_mean_features
from mmgraph.graph.norm import sym_norm
from mmgraph.models.base import GraphRecommender, resolve_modalities
from mmgraph.models.lightgcn import LightGCN
from mmgraph.nn.conv import KNNConv
from mmgraph.nn.latent_graph import EpochGraphCache, LatentGraph
from mmgraph.nn.losses import bpr_l2_loss
from mmgraph.typing import ITEM, IU, UI, UU, BPRBatch, item_knn_type

#: ``graph_rebuild`` values and the :class:`EpochGraphCache` refresh each one uses.
REBUILD = {"per_epoch": "epoch", "per_batch": "batch", "never": None}
#: ``ulf_norm_order`` values and the :class:`LatentGraph` ``norm_order`` each one uses.
NORM_ORDER = {"paper": "ulf", "lattice_code": "code"}
COMBINE = ("normalized_add", "add", "user_graph_off")
UI_NORMS = ("rw_selfloop", "sym")
#: Name of the per-epoch :class:`EpochGraphCache` that :meth:`ULF.train_graph` puts on ``data``.
CACHE_ATTR = "latent_graphs"
#: Modality that feeds the user features when ``user_modality`` is not given (paper eq. 1).
DEFAULT_USER_MODALITY = "text"


class ULF(GraphRecommender):
    r"""ULF, from "Unlocking latent features of users and items: empowering multi-modal
    recommendation systems" (S. Raj and S. Saha, Scientific Reports, 2025; no public code).
    The paper gives the model no name; we call it ULF ("unlocking latent features").

    ULF is LATTICE (:class:`~mmgraph.models.LATTICE`) plus a latent *user–user* graph.
    Users get a fixed feature, the mean of the features of their **training** items
    (eq. 1), :math:`\mathbf{e}^u_x = \frac{1}{|I_x|}\sum_{i \in I_x} \mathbf{e}^t_i`.
    Items (per modality :math:`m`) and users each get an initial cosine kNN graph of the
    raw features (:math:`S^m`, :math:`S^u`, built by the data layer) and a learned one
    over transformed features (:math:`\hat{S}^m` from :math:`\mathbf{W}_m \mathbf{e}^m +
    \mathbf{b}_m`, :math:`\hat{S}^u` from :math:`\mathbf{W}_u \mathbf{e}^u + \mathbf{b}_u`),
    both computed by :class:`~mmgraph.nn.latent_graph.LatentGraph`. With
    ``ulf_norm_order='paper'`` (eqs. 7–10) and :math:`\mathcal{N}(X) = D^{-1/2} X D^{-1/2}`
    (row-sum degrees):

    .. math::
        A = \sum_m \alpha_m\, \mathcal{N}\big(\lambda S^m + (1-\lambda)\hat{S}^m\big), \qquad
        \tilde{A}^u = \mathcal{N}\big(\beta S^u + (1-\beta)\hat{S}^u\big)

    (``'lattice_code'``: LATTICE's reference order, :math:`(1-\lambda)\mathcal{N}(\sum_m
    \alpha_m \hat{S}^m) + \lambda \sum_m \alpha_m \mathcal{N}(S^m)`, and the same for users
    with :math:`\beta`). Items and users are propagated over their graphs with
    :class:`~mmgraph.nn.conv.KNNConv` (edge type ``UU`` for users; eqs. 11–12, message
    dropout after each layer) and added, L2-normalised, to LightGCN's embeddings (our
    choice, spec §3.1; the paper defines no score):

    .. math::
        \mathbf{h}^{(l)} = A\,\mathbf{h}^{(l-1)},\ \mathbf{g}^{(l)} = \tilde{A}^u\mathbf{g}^{(l-1)},
        \quad \hat{\mathbf{x}}_i = \tilde{\mathbf{x}}_i + \frac{\mathbf{h}_i^{(L)}}{\lVert\mathbf{h}_i^{(L)}\rVert},
        \quad \hat{\mathbf{x}}_u = \tilde{\mathbf{x}}_u + \frac{\mathbf{g}_u^{(L)}}{\lVert\mathbf{g}_u^{(L)}\rVert},
        \quad \hat y_{ui} = \hat{\mathbf{x}}_u^\top \hat{\mathbf{x}}_i

    with :math:`\mathbf{h}^{(0)}, \mathbf{g}^{(0)}` the item and user ID embeddings, the same
    tables LightGCN (:math:`\tilde{\mathbf{x}}`, ``cf_layers`` layers) propagates.
    ``ulf_combine='add'`` drops the L2 normalisation; ``'user_graph_off'`` drops the user
    graph (LATTICE's combination, for ablation).

    **Graph rebuild** (as LATTICE, through :meth:`train_graph`): ``'per_epoch'`` builds both
    learned graphs with gradient on the first batch of an epoch and reuses them detached;
    ``'per_batch'`` rebuilds on every batch; ``'never'`` uses the initial graphs only.
    Evaluation (no cache) builds them once per forward. Gradients reach
    :math:`\mathbf{W}_m, \mathbf{b}_m, \alpha, \mathbf{W}_u, \mathbf{b}_u` through the kept
    cosine values and the degrees they produce.

    **Modalities.** ``modalities`` picks the item modalities (``None``: all of the dataset;
    ``[text]``: the paper's text-only row). ``user_modality`` picks the one that feeds the user
    features (``None``: ``'text'`` if used, else the first used modality, so an image-only
    model uses no text). Users without training items get a zero feature and no user-graph
    edges (degree 0, weight 0).

    The model derives its :class:`~mmgraph.graph.GraphSpec` from these arguments when
    ``graph`` is ``None``: per-modality item kNN graphs (``k_item``, self included, cosine
    values) and the user kNN graph ``UU`` (``k_user``, self included, cosine values of the mean
    training-item features), both **un-normalised** (``*_knn_norm='none'``); the model clamps
    negatives (``clamp_negative``) and normalises them itself.

    Loss: ``BPR + reg_weight · ½(‖x̂_u‖² + ‖x̂_i‖² + ‖x̂_j‖²) / B`` on the final batch embeddings
    (LATTICE's reference code; the paper's "Adam with weight decay" literally is
    ``trainer.optimizer.weight_decay`` with ``reg_weight=0``).

    Spec names: :math:`\lambda` → ``lam``, :math:`\beta` → ``beta``, :math:`d'` →
    ``feat_embed_dim``, :math:`d''` → ``user_feat_embed_dim``; LATTICE's ``knn_k`` → ``k_item``,
    ``num_ui_layers`` → ``cf_layers``, ``num_ii_layers`` → ``latent_layers``.

    Args:
        num_users: number of users.
        num_items: number of items.
        modality_dims: feature size of every modality of the dataset (passed by the pipeline).
        embedding_dim: ID embedding size :math:`d`. (default: ``64``)
        feat_embed_dim: transformed item feature size :math:`d'`. (default: ``64``)
        user_feat_embed_dim: transformed user feature size :math:`d''`. (default: ``64``)
        modalities: item modalities to use (default: all of ``modality_dims``).
        user_modality: modality of the user features (default: see above).
        k_item: item neighbours, initial and learned graphs. (default: ``20``)
        k_user: user neighbours, initial and learned graphs. (default: ``30``)
        lam: weight :math:`\lambda` of the initial item graphs. (default: ``0.6``)
        beta: weight :math:`\beta` of the initial user graph. (default: ``0.7``)
        latent_layers: layers :math:`L` of the item and user latent-graph GCNs. (default: ``1``)
        cf_layers: LightGCN layers. (default: ``2``)
        dropout: message dropout after each latent-graph layer. (default: ``0.1``)
        ulf_norm_order: ``'paper'`` or ``'lattice_code'``. (default: ``'paper'``)
        ulf_combine: ``'normalized_add'``, ``'add'`` or ``'user_graph_off'``. (default: ``'normalized_add'``)
        clamp_negative: set negative cosines (initial and learned) to 0. (default: ``True``)
        graph_rebuild: ``'per_epoch'``, ``'per_batch'`` or ``'never'``. (default: ``'per_epoch'``)
        train_raw_features: the raw item features are trainable parameters (LATTICE's
            reference); the user features stay the fixed mean of the data's features. (default: ``False``)
        ui_norm: LightGCN adjacency: ``'rw_selfloop'`` (:math:`D^{-1}(A+I)`, LATTICE's
            reference) or ``'sym'`` (standard LightGCN). (default: ``'rw_selfloop'``)
        reg_weight: L2 weight. (default: ``1e-5``)
        knn_block_size: rows per block of the learned kNN searches (default: automatic).
        graph: graph spec (default: derived, see above).
    """

    def __init__(self, num_users: int, num_items: int, *, modality_dims: dict[str, int],
                 embedding_dim: int = 64, feat_embed_dim: int = 64, user_feat_embed_dim: int = 64,
                 modalities: list[str] | None = None, user_modality: str | None = None,
                 k_item: int = 20, k_user: int = 30, lam: float = 0.6, beta: float = 0.7,
                 latent_layers: int = 1, cf_layers: int = 2, dropout: float = 0.1,
                 ulf_norm_order: str = "paper", ulf_combine: str = "normalized_add",
                 clamp_negative: bool = True, graph_rebuild: str = "per_epoch",
                 train_raw_features: bool = False, ui_norm: str = "rw_selfloop",
                 reg_weight: float = 1e-5, knn_block_size: int | None = None,
                 graph: GraphSpec | None = None) -> None:
        for name, value, allowed in (("graph_rebuild", graph_rebuild, tuple(REBUILD)),
                                     ("ulf_norm_order", ulf_norm_order, tuple(NORM_ORDER)),
                                     ("ulf_combine", ulf_combine, COMBINE), ("ui_norm", ui_norm, UI_NORMS)):
            if value not in allowed:
                raise ValueError(f"ULF {name} must be one of {allowed}, got {value!r}")
        modalities = resolve_modalities("ULF", modality_dims, modalities)
        if user_modality is None:
            user_modality = DEFAULT_USER_MODALITY if DEFAULT_USER_MODALITY in modalities else modalities[0]
        if user_modality not in modality_dims:
            raise ValueError(f"ULF user_modality={user_modality!r} is not in the dataset's {list(modality_dims)}")
        if latent_layers < 0:
            raise ValueError(f"latent_layers must be >= 0, got {latent_layers}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        if graph is None:
            graph = GraphSpec(ui_norm=ui_norm, item_knn_k=k_item, item_knn_loop=True, item_knn_weighted=True,
                              item_knn_norm="none", modality_weights={m: 0.0 for m in modalities},
                              item_knn_modalities=True, user_knn_k=k_user, user_knn_source=user_modality,
                              user_knn_weighted=True, user_knn_norm="none", user_knn_loop=True)
        elif graph.item_knn_norm != "none" or graph.user_knn_norm != "none":
            raise ValueError("ULF normalises its graphs itself: pass a GraphSpec with "
                             "item_knn_norm='none' and user_knn_norm='none' (or graph=None)")
        super().__init__(num_users, num_items, embedding_dim=embedding_dim, graph=graph)
        self.modalities = modalities
        self.user_modality = user_modality
        self.k_item, self.k_user, self.lam, self.beta = k_item, k_user, lam, beta
        self.latent_layers = latent_layers
        self.dropout = dropout
        self.ulf_norm_order = ulf_norm_order
        self.ulf_combine = ulf_combine
        self.clamp_negative = clamp_negative
        self.graph_rebuild = graph_rebuild
        self.train_raw_features = train_raw_features
        self.reg_weight = reg_weight
        self.uses_user_graph = ulf_combine != "user_graph_off"
        # instance-level requirements: they depend on the modalities and the combination
        self.required_modalities = tuple(dict.fromkeys([*modalities, user_modality]))  # type: ignore[misc]
        self.required_edge_types = (UI, IU, *(item_knn_type(m) for m in modalities)) + (  # type: ignore[misc]
            (UU,) if self.uses_user_graph else ())

        # ID tables x_u, x_i live in the backbone; h^(0), g^(0) are the same tables
        self.backbone = LightGCN(num_users, num_items, embedding_dim=embedding_dim, num_layers=cf_layers,
                                 reg_weight=0.0)
        order = NORM_ORDER[ulf_norm_order]
        self.item_latent = LatentGraph({m: int(modality_dims[m]) for m in modalities}, out_dim=feat_embed_dim,
                                       k=k_item, lambda_coeff=lam, norm_order=order,
                                       clamp_negative=clamp_negative, block_size=knn_block_size)
        self.item_conv = KNNConv()
        if self.uses_user_graph:
            self.user_latent = LatentGraph({user_modality: int(modality_dims[user_modality])},
                                           out_dim=user_feat_embed_dim, k=k_user, lambda_coeff=beta,
                                           norm_order=order, clamp_negative=clamp_negative,
                                           block_size=knn_block_size)
            # one "modality": α ≡ 1, its logit is not a parameter of the model
            self.user_latent.modality_logits.requires_grad_(False)
            self.user_conv = KNNConv()
        if train_raw_features:
            self.add_raw_features({m: modality_dims[m] for m in modalities})  # filled by init_from_data
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform ID embeddings; ``nn.Linear``'s default for the transforms."""
        self.backbone.reset_parameters()
        self.item_latent.reset_parameters()
        if self.uses_user_graph:
            self.user_latent.reset_parameters()

    def init_from_data(self, data: HeteroData) -> None:
        """Copy the raw item features into the trainable feature parameters (``train_raw_features``)."""
        if self.train_raw_features:
            self.load_raw_features(data)

    # --------------------------------------------------------------- parts
    def user_features(self, data: HeteroData) -> tuple[Tensor, Tensor]:
        r"""Eq. (1): mean of the ``user_modality`` features of each user's **training** items.

        ``data[UI]`` holds the training interactions only (validation and test items never
        enter ``data``), so no target leaks into the user graph.

        Returns:
            ``(features [U, F], has_items [U] bool)``; users without training items get zeros.
        """
        ei = data[UI].edge_index  # [2, E] train (user, item)
        x = data[ITEM][f"x_{self.user_modality}"]  # [I, F]
        has_items = torch.bincount(ei[0], minlength=self.num_users) > 0  # [U]
        return scatter_mean_features(ei, x, self.num_users), has_items

    def _item_features(self, data: HeteroData) -> dict[str, Tensor]:
        if not self.train_raw_features:
            return {m: data[ITEM][f"x_{m}"] for m in self.modalities}
        return dict(self.loaded_raw_features())

    def _initial(self, data: HeteroData, et, n: int) -> tuple[Tensor, Tensor]:
        """An initial kNN graph (un-normalised in ``data``), clamped, and normalised if the order needs it."""
        ei, w = data[et].edge_index, data[et].edge_weight
        if self.clamp_negative:
            w = w.clamp_min(0.0)
        if self.ulf_norm_order == "lattice_code":  # LATTICE's reference: initial graphs normalised apart
            w = sym_norm(ei, n, w)
        return ei, w

    def _graph(self, data: HeteroData, key: str, build) -> tuple[Tensor, Tensor | None]:
        cache = data.get(CACHE_ATTR)
        if cache is None or self.graph_rebuild == "never":  # evaluation / plain forward: one build
            return build()
        return cache.get(key, build, self.num_items if key == "item" else self.num_users)

    def item_graph(self, data: HeteroData) -> tuple[Tensor, Tensor | None]:
        """The item graph :math:`A` (edge list, or this epoch's cached sparse ``adj_t``)."""
        initial = {m: self._initial(data, item_knn_type(m), self.num_items) for m in self.modalities}

        def build() -> tuple[Tensor, Tensor]:
            feats = None if self.graph_rebuild == "never" else self._item_features(data)
            return self.item_latent(feats, initial, num_nodes=self.num_items)

        return self._graph(data, "item", build)

    def user_graph(self, data: HeteroData) -> tuple[Tensor, Tensor | None]:
        r"""The user graph :math:`\tilde{A}^u` (edge list, or this epoch's cached sparse ``adj_t``)."""
        initial = {self.user_modality: self._initial(data, UU, self.num_users)}

        def build() -> tuple[Tensor, Tensor]:
            if self.graph_rebuild == "never":
                return self.user_latent(None, initial, num_nodes=self.num_users)
            feats, has_items = self.user_features(data)
            return self.user_latent({self.user_modality: feats}, initial, node_mask=has_items)

        return self._graph(data, "user", build)

    def _propagate(self, conv: KNNConv, x: Tensor, graph: tuple[Tensor, Tensor | None]) -> Tensor:
        for _ in range(self.latent_layers):
            x = F.dropout(conv(x, *graph), p=self.dropout, training=self.training)
        return x

    def _add(self, base: Tensor, h: Tensor) -> Tensor:
        return base + (h if self.ulf_combine == "add" else F.normalize(h, dim=1))

    # ------------------------------------------------------------ contract
    def forward(self, data: HeteroData) -> dict[str, Tensor]:
        x_user, x_item = self.backbone.propagate(data, self.backbone.user_emb.weight,
                                                 self.backbone.item_emb.weight)  # x̃: [U, d], [I, d]
        h = self._propagate(self.item_conv, self.backbone.item_emb.weight, self.item_graph(data))  # [I, d]
        item = self._add(x_item, h)
        if not self.uses_user_graph:
            return {"user": x_user, "item": item}
        g = self._propagate(self.user_conv, self.backbone.user_emb.weight, self.user_graph(data))  # [U, d]
        return {"user": self._add(x_user, g), "item": item}

    def loss(self, data: HeteroData, batch: BPRBatch) -> dict[str, Tensor]:
        emb = self(data)
        return bpr_l2_loss(emb["user"], emb["item"], batch, self.reg_weight)

    def train_graph(self, data: HeteroData, epoch: int) -> HeteroData:
        """A shallow copy of ``data`` with a fresh :class:`EpochGraphCache` (see the class docstring)."""
        refresh = REBUILD[self.graph_rebuild]
        if refresh is None:
            return data
        out = copy.copy(data)
        setattr(out, CACHE_ATTR, EpochGraphCache(refresh))
        return out

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", modalities={self.modalities}, user_modality={self.user_modality!r}, "
                f"k_item={self.k_item}, k_user={self.k_user}, lam={self.lam}, beta={self.beta}, "
                f"ulf_norm_order={self.ulf_norm_order!r}, ulf_combine={self.ulf_combine!r}, "
                f"graph_rebuild={self.graph_rebuild!r}")
