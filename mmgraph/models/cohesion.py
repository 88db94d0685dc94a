"""COHESION: ID-refined modality branches on a layer-refined user–item GCN, plus user–user and item–item graphs."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import HeteroData

from mmgraph.graph.build import GraphSpec
from mmgraph.models.base import GraphRecommender, edge_inputs, resolve_modalities
from mmgraph.models.dragon import dragon_graph_spec
from mmgraph.models.dualgnn import (
    mmrec_fusion_weights_,
    mmrec_gcn_branches,
    mmrec_padded_user_graph,
    reset_mmrec_gcn_branches,
)
from mmgraph.models.freedom import degree_sensitive_prune
from mmgraph.models.mmgcn import mmrec_modality_order
from mmgraph.nn.conv import KNNConv
from mmgraph.nn.conv.layer_refined_conv import LayerRefinedConv
from mmgraph.typing import II, ITEM, IU, UI, UU, BPRBatch


def cohesion_graph_spec(item_knn_k: int, reference_image_weight: float | None, user_knn_k: int) -> GraphSpec:
    """COHESION's graphs: the reference code's ``mm_adj`` and ``user_graph_dict`` are DRAGON's.

    Items: per modality the cosine top-``item_knn_k`` of the raw features (itself included), binary,
    :math:`D^{-1/2} A D^{-1/2}`, mixed with ``mm_image_weight`` on the image slot. Users: the
    ``user_knn_k`` users with most common train items, softmax of the counts. The symmetric
    user–item graph. (:func:`~mmgraph.models.dragon.dragon_graph_spec`, so the cached graphs are shared.)
    """
    return dragon_graph_spec(item_knn_k, reference_image_weight, user_knn_k)


class COHESION(GraphRecommender):
    r"""COHESION from `"COHESION: Composite Graph Convolutional Network with Dual-Stage Fusion for
    Multimodal Recommendation" <https://arxiv.org/abs/2504.04452>`_ (SIGIR'25), as the authors' code
    (``src/models/cohesion.py``, MMRec-based).

    **Branches.** One branch per modality :math:`m` and one for the behaviour (ID) "modality",
    each with its own user preference table :math:`\mathbf{P}_b` ``[U, d]`` and MLP
    :math:`g_b(\mathbf{x}) = W^{(2)}_b\,\phi(W^{(1)}_b\mathbf{x} + b^{(1)}_b) + b^{(2)}_b`
    (``F → 4d → d``, LeakyReLU :math:`\phi`). The ID branch's item input is a learned table
    :math:`\mathbf{E}` ``[I, d]``; a modality branch's the frozen features :math:`\mathbf{x}_m`.

    **Early fusion** (each modality refined by the behaviour modality, element-wise):

    .. math::
        \tilde{\mathbf{t}}_{b,i} = \sqrt{\tfrac12\big(\mathbf{E}_i^{2} + g_b(\mathbf{x}_{b,i})^{2}\big) + 10^{-8}},
        \qquad \mathbf{x}_b^{(0)} = \mathrm{normalize}\big([\mathbf{P}_b;\, \tilde{\mathbf{T}}_b]\big)

    (row-wise L2 over the ``U + I`` stacked rows; the ID branch uses :math:`\mathbf{x}_{id} = \mathbf{E}`).

    **Heterogeneous graph** (user–item, edge types ``UI``/``IU``, :math:`\hat A = D^{-1/2}AD^{-1/2}`),
    ``L = num_layers`` layer-refined steps (:class:`~mmgraph.nn.conv.layer_refined_conv.LayerRefinedConv`,
    every branch with its own cosine, all in one ``(K+1)·d``-wide product) and a sum readout:

    .. math::
        \mathbf{x}_b^{(l+1)} = \mathrm{diag}\big(\cos(\hat A\mathbf{x}_b^{(l)}, \mathbf{x}_b^{(0)})\big)\,
        \hat A\mathbf{x}_b^{(l)}, \qquad \hat{\mathbf{x}}_b = \sum_{l=0}^{L}\mathbf{x}_b^{(l)}.

    MMRec parity: the reference takes the ID branch's output with ``.data``, so no gradient passes
    through it; its own preference table and MLP are never trained (they stay at their random
    initialisation) and :math:`\mathbf{E}` learns through the modality branches only
    (``mmrec_detach_id=True``: the branch is computed without gradient and those parameters are
    frozen, ``requires_grad=False``).

    **Late fusion** (concatenation) and **homogeneous graphs**:
    :math:`\mathbf{h} = [\hat{\mathbf{x}}_{id} \,\|\, \hat{\mathbf{x}}_{1} \,\|\, \dots \,\|\,
    \hat{\mathbf{x}}_{K}]` (``(K+1)·d`` wide), then
    :math:`\mathbf{e}_i = \mathbf{h}_i + (S^{L_{ii}}\mathbf{H}_I)_i` over the frozen item kNN graph
    :math:`S` (edge type ``II``) and :math:`\mathbf{e}_u = \mathbf{h}_u + \sum_v s_{uv}\mathbf{h}_v`
    over the co-interaction user graph (edge type ``UU``; :func:`cohesion_graph_spec`). MMRec pads
    short user lists by random repetition every epoch (:meth:`train_graph`, ``mmrec_padding``);
    evaluation uses the unpadded weights. Score :math:`\hat y_{ui} = \mathbf{e}_u^\top\mathbf{e}_i`.

    **Adaptive optimisation** (training only): with the per-branch scores
    :math:`s_{b}(u, i) = \mathbf{e}_{u,b}^\top\mathbf{e}_{i,b}` (the ``d``-wide blocks),
    :math:`\boldsymbol{\alpha} = 1 - \mathrm{softmax}_b\big(s_b(u,i) - s_b(u,j)\big)` (detached;
    branches already separating the pair weigh less) and

    .. math::
        \mathcal{L} = -\mathrm{mean}\log_2\sigma\Big(\sum_b \alpha_b\big(s_b(u,i) - s_b(u,j)\big)\Big)
        + \lambda\Big[\sum_m \mathrm{mean}(\mathbf{P}_m[u]^2) + \mathrm{mean}(\mathbf{w}_U^2)\Big].

    :math:`\mathbf{w}_U` ``[U, K]`` (softmax-initialised per-user modality weights) enter no
    representation in the reference, only this regulariser (kept for fidelity).

    **Deliberate differences from the reference code:** evaluation runs a fresh :meth:`forward`
    (full user–item and unpadded user graphs; the reference ranks with ``result_embed`` cached by the
    last training batch); any number of modalities (the reference has a visual and a text slot and
    hard-codes 3 blocks), taken in MMRec's slot order (:func:`~mmgraph.models.mmgcn.mmrec_modality_order`);
    ``log₂ σ`` as ``logsigmoid / ln 2``; the dense :math:`I \times I` similarity of ``get_knn_adj_mat``
    and the dense :math:`U \times U` counts of the preprocessing script are replaced by the data
    layer's blockwise kNN graphs (same graphs; ties at the ``k``-th user count may be broken
    differently). Unused reference members are absent: ``image_embedding``/``text_embedding``
    (trainable copies of the features that enter nothing), ``result_embed`` as a parameter,
    ``BGCNLayer``, ``feat_embed_dim``, ``n_layers``, ``drop_rate``.

    Reference names: ``dim_latent`` (64, hard-coded; ``embedding_size`` only sizes the unused
    ``result_embed``) → ``embedding_dim``; ``num_layer`` → ``num_layers``; ``n_mm_layers`` →
    ``num_ii_layers``; ``knn_k`` → ``item_knn_k``; ``mm_image_weight`` → ``reference_image_weight``;
    ``self.k`` (40) → ``user_knn_k``; ``dropout`` (degree-sensitive edge pruning, FREEDOM's) →
    ``edge_dropout``; ``id_feat`` → ``id_feat``; ``id_gcn``/``v_gcn``/``t_gcn`` (``preference``,
    ``MLP``, ``MLP_1``) → ``id_preference``/``id_mlp``/``id_mlp_1`` and ``preference[m]``,
    ``mlp[m]``, ``mlp_1[m]``; ``weight_u`` → ``weight_u``.

    Args:
        num_users: number of users.
        num_items: number of items.
        modality_dims: feature size of every modality (passed by the pipeline).
        embedding_dim: per-branch size ``d``. (default: ``64``)
        num_layers: layer-refined user–item steps ``L`` (reference grid ``[1, 2, 3, 4]``). (default: ``1``)
        num_ii_layers: propagations over the item graph. (default: ``1``)
        item_knn_k: item kNN size. (default: ``10``)
        reference_image_weight: weight of the image slot in :math:`S`; ``None``: equal weights.
            (default: ``0.1``)
        user_knn_k: user co-occurrence neighbours. (default: ``40``)
        reg_weight: :math:`\lambda` (reference grid ``[0.1, 0.01, 0.001, 1e-4]``). (default: ``0.1``)
        edge_dropout: fraction of user–item edges pruned each training epoch, FREEDOM's
            degree-sensitive sampling (reference grid ``[0]``). (default: ``0.0``)
        mmrec_detach_id: the ID branch passes no gradient (reference parity, see above). (default: ``True``)
        mmrec_padding: pad the user lists as MMRec each training epoch. (default: ``True``)
        modalities: modalities to use, in order (default: all, in MMRec's slot order).
        graph: graph spec (default: :func:`cohesion_graph_spec` of the arguments above).
    """

    def __init__(self, num_users: int, num_items: int, *, modality_dims: dict[str, int],
                 embedding_dim: int = 64, num_layers: int = 1, num_ii_layers: int = 1, item_knn_k: int = 10,
                 reference_image_weight: float | None = 0.1, user_knn_k: int = 40, reg_weight: float = 0.1,
                 edge_dropout: float = 0.0, mmrec_detach_id: bool = True, mmrec_padding: bool = True,
                 modalities: list[str] | None = None, graph: GraphSpec | None = None) -> None:
        expected = cohesion_graph_spec(item_knn_k, reference_image_weight, user_knn_k)
        if graph is None:
            graph = expected
        elif graph != expected:
            raise ValueError(f"COHESION needs {expected} (derived from item_knn_k, reference_image_weight and "
                             f"user_knn_k; pass graph=None), got {graph}")
        super().__init__(num_users, num_items, embedding_dim=embedding_dim, graph=graph)
        if num_layers < 0 or num_ii_layers < 0:
            raise ValueError(f"num_layers and num_ii_layers must be >= 0, got {num_layers}, {num_ii_layers}")
        if not 0.0 <= edge_dropout < 1.0:
            raise ValueError(f"edge_dropout must be in [0, 1), got {edge_dropout}")
        mods = resolve_modalities("COHESION", modality_dims, modalities,
                                  default=mmrec_modality_order(modality_dims))
        self.modalities = mods
        self.num_layers, self.num_ii_layers = num_layers, num_ii_layers
        self.user_knn_k = user_knn_k
        self.reg_weight = reg_weight
        self.edge_dropout = edge_dropout
        self.mmrec_detach_id = mmrec_detach_id
        self.mmrec_padding = mmrec_padding
        self.required_modalities = tuple(mods)  # type: ignore[misc]
        self.required_edge_types = (UI, IU, II, UU)  # type: ignore[misc]
        d, K = embedding_dim, len(mods)
        self.id_feat = torch.nn.Parameter(torch.empty(num_items, d))
        self.id_preference = torch.nn.Parameter(torch.empty(num_users, d))
        self.id_mlp = torch.nn.Linear(d, 4 * d)
        self.id_mlp_1 = torch.nn.Linear(4 * d, d)
        mmrec_gcn_branches(self, num_users, modality_dims, mods, d)
        self.weight_u = torch.nn.Parameter(torch.empty(num_users, K))
        if mmrec_detach_id:  # the reference's ``id_rep.data``: these never receive a gradient there
            for p in (self.id_preference, *self.id_mlp.parameters(), *self.id_mlp_1.parameters()):
                p.requires_grad_(False)
        self.conv = LayerRefinedConv(groups=K + 1)
        self.item_conv = KNNConv()
        self.user_conv = KNNConv()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The reference's initialisation: Xavier-normal ``id_feat`` and preferences; ``weight_u``
        Xavier-normal of a ``(U, K, 1)`` tensor, then softmax over the modalities; default ``Linear``."""
        with torch.no_grad():
            torch.nn.init.xavier_normal_(self.id_feat)
            torch.nn.init.xavier_normal_(self.id_preference)
            self.id_mlp.reset_parameters()
            self.id_mlp_1.reset_parameters()
            reset_mmrec_gcn_branches(self)
            mmrec_fusion_weights_(self.weight_u)

    @staticmethod
    def _early_fusion(preference: Tensor, mlp: torch.nn.Linear, mlp_1: torch.nn.Linear, x: Tensor,
                      id_feat: Tensor) -> Tensor:
        """``normalize([P_b ; sqrt((E² + g_b(x)²)/2 + 1e-8)])`` ``[U + I, d]`` (the reference's GCNLayer input)."""
        temp = mlp_1(F.leaky_relu(mlp(x)))  # [I, d]
        temp = torch.sqrt((id_feat * id_feat + temp * temp) / 2 + 1e-8)
        return F.normalize(torch.cat([preference, temp]), dim=1)

    def _heterogeneous(self, data: HeteroData) -> tuple[Tensor, Tensor]:
        """``(h_u [U, (K+1)·d], h_i [I, (K+1)·d])``: blocks ``[id | m_1 | ... | m_K]`` of the user–item GCN."""
        U, I = self.num_users, self.num_items
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.mmrec_detach_id):
            xs = [self._early_fusion(self.id_preference, self.id_mlp, self.id_mlp_1, self.id_feat, self.id_feat)]
        xs += [self._early_fusion(self.preference[m], self.mlp[m], self.mlp_1[m], data[ITEM][f"x_{m}"], self.id_feat)
               for m in self.modalities]
        x = torch.cat(xs, dim=1)  # [U + I, (K+1)·d]; the branches never mix (per-block cosines)
        ego_u, ego_i = x[:U], x[U:]
        iu, iu_w = edge_inputs(data, IU)  # item -> user
        ui, ui_w = edge_inputs(data, UI)  # user -> item
        cur_u, cur_i = ego_u, ego_i
        sum_u, sum_i = ego_u, ego_i
        for _ in range(self.num_layers):
            cur_u, cur_i = (
                self.conv((cur_i, None), iu, iu_w, ref=ego_u, size=(I, U), adj_rev=ui if iu_w is None else None),
                self.conv((cur_u, None), ui, ui_w, ref=ego_i, size=(U, I), adj_rev=iu if ui_w is None else None),
            )
            sum_u, sum_i = sum_u + cur_u, sum_i + cur_i
        return sum_u, sum_i

    def forward(self, data: HeteroData) -> dict[str, Tensor]:
        hu, hi = self._heterogeneous(data)
        adj, w = edge_inputs(data, II)
        h = hi
        for _ in range(self.num_ii_layers):
            h = self.item_conv(h, adj, w)
        adj, w = edge_inputs(data, UU)
        return {"user": hu + self.user_conv(hu, adj, w), "item": hi + h}

    def loss(self, data: HeteroData, batch: BPRBatch) -> dict[str, Tensor]:
        emb = self(data)
        nb, d = len(self.modalities) + 1, self.embedding_dim
        u = emb["user"][batch.users].view(-1, nb, d)  # [B, K+1, d]
        pos = (u * emb["item"][batch.pos_items].view(-1, nb, d)).sum(-1)  # [B, K+1] per-branch scores
        neg = (u * emb["item"][batch.neg_items].view(-1, nb, d)).sum(-1)
        alpha = 1.0 - torch.softmax(pos - neg, dim=-1).detach()  # adaptive optimisation
        diff = (alpha * pos).sum(-1) - (alpha * neg).sum(-1)
        bpr = -F.logsigmoid(diff).mean() / math.log(2.0)  # -mean log2 σ(Δ)
        reg = sum(self.preference[m][batch.users].pow(2).mean() for m in self.modalities)
        reg = reg + self.weight_u.pow(2).mean()
        return {"loss": bpr + self.reg_weight * reg, "bpr": bpr, "reg": reg}

    def train_graph(self, data: HeteroData, epoch: int) -> HeteroData:
        """This epoch's graphs: the user–item graph pruned (``edge_dropout``), the user lists padded
        (``mmrec_padding``); ``data`` itself when neither applies."""
        if self.edge_dropout > 0.0:
            data = degree_sensitive_prune(data, 1.0 - self.edge_dropout)
        if self.mmrec_padding:
            data = mmrec_padded_user_graph(data, self.user_knn_k)
        return data

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", modalities={self.modalities}, num_layers={self.num_layers}, "
                f"num_ii_layers={self.num_ii_layers}, user_knn_k={self.user_knn_k}, reg_weight={self.reg_weight}, "
                f"edge_dropout={self.edge_dropout}, mmrec_detach_id={self.mmrec_detach_id}, "
                f"mmrec_padding={self.mmrec_padding}")
