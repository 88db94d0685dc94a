"""DRAGON: per-modality user–item GCNs concatenated, enhanced by an item–item and a user–user graph."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import HeteroData

from mmgraph.graph.build import GraphSpec
from mmgraph.models.base import GraphRecommender, edge_inputs, resolve_modalities
from mmgraph.models.dualgnn import (
    mmrec_fusion_weights_,
    mmrec_gcn_branches,
    mmrec_gcn_input,
    mmrec_padded_user_graph,
    reset_mmrec_gcn_branches,
)
from mmgraph.models.lightgcn import lightgcn_propagate
from mmgraph.models.mmgcn import mmrec_modality_order
from mmgraph.nn.conv import BipartiteLGConv, KNNConv
from mmgraph.typing import II, ITEM, IU, UI, UU, BPRBatch


def dragon_graph_spec(item_knn_k: int, reference_image_weight: float | None, user_knn_k: int) -> GraphSpec:
    """DRAGON's two homogeneous graphs and the symmetric user–item graph (MMRec's construction).

    Items: each modality's cosine top-``item_knn_k`` list of the raw features (the item itself
    included), binary, normalised :math:`D^{-1/2} A D^{-1/2}` with row-sum degrees, summed with
    weight ``mm_image_weight`` on the image slot (FREEDOM's graph). Users: the ``user_knn_k``
    users with most common train items, softmax of the counts (DualGNN's graph).
    """
    return GraphSpec(ui_norm="sym", item_knn_k=item_knn_k, item_knn_loop=True, item_knn_weighted=False,
                     item_knn_norm="sym", reference_image_weight=reference_image_weight,
                     user_knn_k=user_knn_k, user_knn_source="interactions", user_knn_weighted=True,
                     user_knn_norm="softmax")


class DRAGON(GraphRecommender):
    r"""DRAGON from `"Enhancing Dyadic Relations with Homogeneous Graphs for Multimodal
    Recommendation" <https://arxiv.org/abs/2301.12097>`_ (ECAI'23), as MMRec's ``DRAGON``
    (``construction='cat'``, ``user_aggr_mode='softmax'``, ``aggr_mode='add'``).

    **Heterogeneous graph, one per modality** (as :class:`~mmgraph.models.DualGNN`): users get
    preference vectors :math:`\mathbf{P}_m`, items
    :math:`\mathrm{MLP}^{(2)}_m(\phi(\mathrm{MLP}^{(1)}_m(\mathbf{x}_m)))` (``F → 4d → d``,
    LeakyReLU); :math:`\mathbf{x} = \mathrm{normalize}([\mathbf{P}_m; \cdot])` and
    :math:`\hat{\mathbf{x}}_m = \mathbf{x} + \hat A\mathbf{x} + \hat A^2\mathbf{x}`,
    :math:`\hat A = D^{-1/2}AD^{-1/2}` (MMRec's ``Base_gcn`` twice; all modalities in one
    ``K·d``-wide pass).

    **Concatenation** (``construction='cat'``): items
    :math:`\mathbf{h}_i = [\hat{\mathbf{x}}_{1,i} \,\|\, \dots \,\|\, \hat{\mathbf{x}}_{K,i}]`,
    users :math:`\mathbf{h}_u = [w_{u,1}\hat{\mathbf{x}}_{1,u} \,\|\, \dots \,\|\,
    w_{u,K}\hat{\mathbf{x}}_{K,u}]` with learned per-user weights (softmax-initialised); with one
    modality MMRec applies no weight, and neither does this.

    **Homogeneous graphs.** Items: :math:`\mathbf{e}_i = \mathbf{h}_i + (S^{L}\mathbf{H})_i` with
    the frozen multimodal kNN graph :math:`S` (edge type ``II``, :func:`dragon_graph_spec`) and
    ``L = num_ii_layers`` (MMRec's ``n_mm_layers``; ``L = 0`` gives :math:`2\mathbf{h}_i`, as
    MMRec's loop does). Users: :math:`\mathbf{e}_u = \mathbf{h}_u + \sum_v s_{uv}\mathbf{h}_v` over
    the co-interaction graph (edge type ``UU``), whose short lists MMRec pads by random
    repetition each epoch (:func:`~mmgraph.models.dualgnn.mmrec_padded_user_graph`,
    ``mmrec_padding``); evaluation uses the unpadded weights.

    **Loss** (MMRec): :math:`-\mathrm{mean}\log_2\sigma(\hat y_{ui} - \hat y_{uj}) + \lambda\,[
    \sum_m \mathrm{mean}(\mathbf{P}_m[u]^2) + \mathrm{mean}(w_U^2)]`,
    :math:`\hat y_{ui} = \mathbf{e}_u^\top\mathbf{e}_i`.

    **Deliberate differences from MMRec:** evaluation runs a fresh :meth:`forward` (MMRec ranks
    with ``result_embed`` cached by the last training batch); any number of modalities (MMRec:
    one visual and one text slot). MMRec's GCN receives item-dropped edge lists it does not
    use, and builds ``weight_i``, ``MLP_v``, ``MLP_t`` and ``MLP_user`` that enter neither the
    scores nor the ``'cat'`` loss: all absent here.

    MMRec names: ``embedding_size`` → ``embedding_dim`` (its ``dim_latent = 64`` is hard-coded),
    ``n_mm_layers`` → ``num_ii_layers``, ``knn_k`` → ``item_knn_k``, ``mm_image_weight`` →
    ``reference_image_weight`` (mapped onto the dataset's modalities by
    :class:`~mmgraph.graph.GraphSpec`), ``self.k`` (40) → ``user_knn_k``; ``n_layers`` (unused
    there: two propagations are hard-coded) → ``num_layers = 2``.

    Args:
        num_users: number of users.
        num_items: number of items.
        modality_dims: feature size of every modality (passed by the pipeline).
        embedding_dim: per-modality representation size ``d``. (default: ``64``)
        num_layers: propagations of the user–item GCN. (default: ``2``)
        num_ii_layers: propagations over the item graph. (default: ``1``)
        item_knn_k: item kNN size. (default: ``10``)
        reference_image_weight: weight of the image slot in :math:`S`; ``None``: equal weights.
            (default: ``0.1``)
        user_knn_k: user co-occurrence neighbours. (default: ``40``)
        reg_weight: weight :math:`\lambda` (MMRec grid ``[0.1, 0.01, ..., 1e-5]``). (default: ``0.1``)
        mmrec_padding: pad the user lists as MMRec each training epoch. (default: ``True``)
        modalities: modalities to use, in order (default: all, in MMRec's slot order).
        graph: graph spec (default: :func:`dragon_graph_spec` of the arguments above).
    """

    def __init__(self, num_users: int, num_items: int, *, modality_dims: dict[str, int],
                 embedding_dim: int = 64, num_layers: int = 2, num_ii_layers: int = 1, item_knn_k: int = 10,
                 reference_image_weight: float | None = 0.1, user_knn_k: int = 40, reg_weight: float = 0.1,
                 mmrec_padding: bool = True, modalities: list[str] | None = None,
                 graph: GraphSpec | None = None) -> None:
        expected = dragon_graph_spec(item_knn_k, reference_image_weight, user_knn_k)
        if graph is None:
            graph = expected
        elif graph != expected:
            raise ValueError(f"DRAGON needs {expected} (derived from item_knn_k, reference_image_weight and "
                             f"user_knn_k; pass graph=None), got {graph}")
        super().__init__(num_users, num_items, embedding_dim=embedding_dim, graph=graph)
        if num_layers < 0 or num_ii_layers < 0:
            raise ValueError(f"num_layers and num_ii_layers must be >= 0, got {num_layers}, {num_ii_layers}")
        mods = resolve_modalities("DRAGON", modality_dims, modalities,
                                  default=mmrec_modality_order(modality_dims))
        self.modalities = mods
        self.num_layers, self.num_ii_layers = num_layers, num_ii_layers
        self.user_knn_k = user_knn_k
        self.reg_weight = reg_weight
        self.mmrec_padding = mmrec_padding
        self.required_modalities = tuple(mods)  # type: ignore[misc]
        self.required_edge_types = (UI, IU, II, UU)  # type: ignore[misc]
        d, K = embedding_dim, len(mods)
        mmrec_gcn_branches(self, num_users, modality_dims, mods, d)
        self.weight_u = torch.nn.Parameter(torch.empty(num_users, K))
        self.conv = BipartiteLGConv()
        self.item_conv = KNNConv()
        self.user_conv = KNNConv()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """MMRec's initialisation: Xavier-normal preferences; user weights Xavier-normal of a
        ``(U, K, 1)`` tensor, then softmax over the modalities; default ``Linear`` init."""
        with torch.no_grad():
            reset_mmrec_gcn_branches(self)
            mmrec_fusion_weights_(self.weight_u)

    def _heterogeneous(self, data: HeteroData) -> tuple[Tensor, Tensor]:
        """``(h_u [U, K·d], h_i [I, K·d])``: the concatenated per-modality GCN outputs."""
        U, d = self.num_users, self.embedding_dim
        xs = []
        for m in self.modalities:
            xs.append(mmrec_gcn_input(self.preference[m], self.mlp[m], self.mlp_1[m], data[ITEM][f"x_{m}"]))
        x = torch.cat(xs, dim=1)
        hu, hi = lightgcn_propagate(self.conv, data, x[:U], x[U:], self.num_layers, readout="sum")
        if len(self.modalities) > 1:
            w = self.weight_u.repeat_interleave(d, dim=1)  # w_{u,m} on the m-th block
            hu = hu * w
        return hu, hi

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
        u = emb["user"][batch.users]
        pos = (u * emb["item"][batch.pos_items]).sum(-1)
        neg = (u * emb["item"][batch.neg_items]).sum(-1)
        bpr = -F.logsigmoid(pos - neg).mean() / math.log(2.0)  # -mean log2 σ(Δ)
        reg = sum(self.preference[m][batch.users].pow(2).mean() for m in self.modalities)
        reg = reg + self.weight_u.pow(2).mean()
        return {"loss": bpr + self.reg_weight * reg, "bpr": bpr, "reg": reg}

    def train_graph(self, data: HeteroData, epoch: int) -> HeteroData:
        """This epoch's user graph with MMRec's random padding (``mmrec_padding``), else ``data``."""
        if not self.mmrec_padding:
            return data
        return mmrec_padded_user_graph(data, self.user_knn_k)

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", modalities={self.modalities}, num_ii_layers={self.num_ii_layers}, "
                f"user_knn_k={self.user_knn_k}, reg_weight={self.reg_weight}, mmrec_padding={self.mmrec_padding}")
