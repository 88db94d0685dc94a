"""SMORE: spectral modality fusion, modality-aware item graphs and a behaviour-aware preference module."""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import HeteroData

from mmgraph.graph.build import GraphSpec
from mmgraph.graph.norm import to_adj_t
from mmgraph.models.base import GraphRecommender, edge_inputs, resolve_modalities
from mmgraph.models.lightgcn import lightgcn_propagate
from mmgraph.models.mmgcn import mmrec_modality_order
from mmgraph.nn.conv import BipartiteLGConv, KNNConv
from mmgraph.nn.losses import info_nce, l2_reg
from mmgraph.typing import ITEM, IU, UI, BPRBatch, item_knn_type


def smore_graph_spec(knn_k: int, modalities: list[str]) -> GraphSpec:
    """SMORE's graphs: the symmetric user–item graph and one kNN graph per modality.

    Per modality (the reference's ``build_sim`` + ``build_knn_normalized_graph(is_sparse=True,
    norm_type='sym')``): each item's ``knn_k`` most cosine-similar items of the raw features, the
    item itself included, cosine weights, :math:`D^{-1/2} W D^{-1/2}` with row-sum degrees; kept as
    ``('item', 'knn_<m>', 'item')``. No weighted-sum ``II`` graph (all modality weights 0): SMORE
    fuses the per-modality graphs by an element-wise maximum (:func:`max_pool_graph`).
    """
    return GraphSpec(ui_norm="sym", item_knn_k=knn_k, item_knn_loop=True, item_knn_weighted=True,
                     item_knn_norm="sym", modality_weights={m: 0.0 for m in modalities},
                     item_knn_modalities=True)


def max_pool_graph(graphs: list[tuple[Tensor, Tensor]], num_nodes: int) -> tuple[Tensor, Tensor]:
    r"""Element-wise maximum of sparse graphs over the union of their edges.

    .. math::
        (S_f)_{ij} = \max_{m:\, (j \to i) \in E_m} (S_m)_{ij}

    The reference's ``max_pool_fusion``: an edge missing from a graph counts as :math:`-\infty`
    there (not 0), so an edge of only one graph keeps that graph's weight. ``O(Σ_m |E_m|)``
    memory; no ``N × N`` matrix.

    Args:
        graphs: ``(edge_index [2, E_m], edge_weight [E_m])`` per graph, without duplicate edges.
        num_nodes: ``N``.

    Returns:
        ``(edge_index [2, E], edge_weight [E])`` of the union, sorted by ``(target, source)``.
    """
    ei = torch.cat([g[0] for g in graphs], dim=1)  # [2, Σ E_m]
    w = torch.cat([g[1] for g in graphs])
    key = ei[1] * num_nodes + ei[0]
    uniq, inv = torch.unique(key, return_inverse=True)
    out = torch.full((uniq.numel(),), float("-inf"), dtype=w.dtype, device=w.device)
    out = out.scatter_reduce(0, inv, w, reduce="amax", include_self=True)
    return torch.stack([uniq % num_nodes, uniq // num_nodes]), out


def spectral_filter(x_fft: Tensor, weight: Tensor, n: int) -> Tensor:
    r""":math:`\mathcal{F}^{-1}(X \odot W)` along the last dimension (orthonormal DFTs, length ``n``).

    ``x_fft`` ``[N, n // 2 + 1]`` complex (``torch.fft.rfft(·, norm='ortho')``); ``weight``
    ``[n // 2 + 1, 2]`` real (real and imaginary parts, the reference's ``view_as_complex`` layout).
    Returns the real ``[N, n]`` signal.
    """
    return torch.fft.irfft(x_fft * torch.view_as_complex(weight), n=n, dim=-1, norm="ortho")


class SMORE(GraphRecommender):
    r"""SMORE from `"Spectrum-based Modality Representation Fusion Graph Convolutional Network for
    Multimodal Recommendation" <https://arxiv.org/abs/2412.14978>`_ (WSDM'25), as the authors'
    code (``kennethorq/SMORE``, ``src/models/smore.py``; MMRec's ``smore.py`` is the same file).

    **Projection and spectral fusion.** Per modality :math:`m` (``K`` of them), the trainable raw
    features are projected, :math:`\mathbf{f}_m = \mathbf{W}_m \mathbf{x}_m + \mathbf{b}_m`
    (``[I, d]``), and taken to the frequency domain along the feature axis,
    :math:`\hat{\mathbf{f}}_m = \mathcal{F}(\mathbf{f}_m)` (real FFT, orthonormal, ``d // 2 + 1``
    bins). With learnable complex filters :math:`\mathbf{w}_m, \mathbf{w}_f \in
    \mathbb{C}^{d/2+1}`:

    .. math::
        \mathbf{c}_m = \mathcal{F}^{-1}(\hat{\mathbf{f}}_m \odot \mathbf{w}_m), \qquad
        \mathbf{c}_f = \mathcal{F}^{-1}\Big(\mathbf{w}_f \odot \prod_m \hat{\mathbf{f}}_m\Big)

    (uni-modal denoising; cross-modal fusion: the product of the spectra, i.e. the circular
    convolution of the modalities' projections). The item ID embeddings are gated by each:
    :math:`\mathbf{h}_m = \mathbf{E}^{ID}_I \odot \sigma(\mathbf{W}^g_m \mathbf{c}_m +
    \mathbf{b}^g_m)`, :math:`\mathbf{h}_f = \mathbf{E}^{ID}_I \odot \sigma(\mathbf{W}^g_f
    \mathbf{c}_f + \mathbf{b}^g_f)`.

    **Modality-aware item graphs.** :math:`\mathbf{h}_m \leftarrow S_m^{L}\mathbf{h}_m` on the frozen
    per-modality kNN graph (:func:`smore_graph_spec`, edge types ``('item', 'knn_<m>', 'item')``,
    built by the data layer) and :math:`\mathbf{h}_f \leftarrow S_f^{L}\mathbf{h}_f` on their
    element-wise maximum :math:`S_f = \max_m S_m` (:func:`max_pool_graph`; computed from the data
    layer's graphs once per graph object and memoised); users :math:`\hat R\,\mathbf{h}`, with
    :math:`\hat R = D_u^{-1/2} R D_i^{-1/2}` (edge type ``IU``). Rows of users then items:
    :math:`\mathbf{e}^m = [\hat R\mathbf{h}_m; \mathbf{h}_m]`, :math:`\mathbf{e}^f = [\hat
    R\mathbf{h}_f; \mathbf{h}_f]`. ``L = num_ii_layers``.

    **Behavioural view.** LightGCN with layer-mean readout over :math:`\hat A` (``num_ui_layers``
    layers): :math:`\mathbf{E}^c`.

    **Modality-aware preference module** (softmax over the ``d`` feature dimensions, as the
    reference's ``nn.Softmax(dim=-1)``; dropout on the preference gates):

    .. math::
        \mathbf{a}_m = \operatorname{softmax}_d\big(\mathbf{Q}_m^{(2)}
        \tanh(\mathbf{Q}_m^{(1)}\mathbf{e}^f + \mathbf{q}_m)\big) \odot \mathbf{e}^m, \qquad
        \mathbf{p}_\ast = \operatorname{dropout}\big(\sigma(\mathbf{W}^p_\ast \mathbf{E}^c +
        \mathbf{b}^p_\ast)\big),

    .. math::
        \mathbf{E}^s = \frac{1}{K+1}\Big(\sum_m \mathbf{p}_m \odot \mathbf{a}_m + \mathbf{p}_f \odot
        \mathbf{e}^f\Big), \qquad \mathbf{E} = \mathbf{E}^c + \mathbf{E}^s, \qquad
        \hat y_{ui} = \mathbf{e}_u^\top \mathbf{e}_i .

    **Loss** (the reference's ``calculate_loss``): :math:`-\mathrm{mean}\log\sigma(\hat y_{ui} -
    \hat y_{uj}) + \lambda \cdot \tfrac12(\lVert\mathbf{e}_u\rVert^2 + \lVert\mathbf{e}_i\rVert^2 +
    \lVert\mathbf{e}_j\rVert^2)/B + \lambda_{cl}[\mathrm{InfoNCE}(\mathbf{E}^s_I[i],
    \mathbf{E}^c_I[i]) + \mathrm{InfoNCE}(\mathbf{E}^s_U[u], \mathbf{E}^c_U[u])]`, in-batch
    negatives, temperature 0.2 (a literal in the reference; its yaml's ``temperature`` is unused).

    **Any number of modalities.** The reference has an image and a text slot; here each modality
    has its filter, gates, query and graph, the fusion multiplies all spectra and max-pools all
    graphs, and the side embedding is the mean of the ``K + 1`` terms (the reference's mean of
    three for ``K = 2``). With one modality, :math:`\mathbf{c}_f` filters that modality's spectrum
    again and :math:`S_f = S_m`.

    **Deliberate differences from the reference:** the L2 term divides by the actual batch size
    (the reference by ``train_batch_size``; they differ only on each epoch's last, smaller batch);
    evaluation runs a fresh :meth:`forward` in eval mode (the reference does the same).
    The authors' code and MMRec's are identical (model, configs, trainer), so there is nothing to
    choose between them.

    Reference names: ``embedding_size`` → ``embedding_dim``, ``n_ui_layers`` → ``num_ui_layers``,
    ``n_layers`` → ``num_ii_layers``, ``image_knn_k``/``text_knn_k`` → ``knn_k`` (one value for all
    modalities: :class:`~mmgraph.graph.GraphSpec` builds every per-modality graph with the same
    ``item_knn_k``), ``cl_loss`` → ``cl_weight``, ``dropout_rate`` → ``dropout``, ``reg_weight`` →
    ``reg_weight``; ``image_trs``/``text_trs`` → ``feat_proj[m]``, ``*_complex_weight`` →
    ``filter[m]``/``filter_fusion``, ``gate_v``/``gate_t`` → ``gate[m]``, ``gate_f`` →
    ``gate_fusion``, ``query_v``/``query_t`` → ``query[m]``, ``gate_*_prefer`` →
    ``gate_prefer[m]``/``gate_prefer_fusion``, ``image_embedding``/``text_embedding`` (trainable
    raw features) → ``raw_features[m]``. ``lambda_coeff`` and ``temperature`` are unused by the
    reference; ``learning_rate_scheduler: [0.96, 50]`` is a trainer setting
    (``trainer.lr_decay=0.96 trainer.lr_decay_every=50``).

    Args:
        num_users: number of users.
        num_items: number of items.
        modality_dims: feature size of every modality (passed by the pipeline).
        embedding_dim: ID embedding size ``d``. (default: ``64``)
        num_ui_layers: LightGCN layers of the behavioural view. (default: ``3``)
        num_ii_layers: layers on the item graphs. (default: ``1``)
        knn_k: neighbours of the per-modality item kNN graphs. (default: ``10``)
        reg_weight: weight :math:`\lambda` of the L2 term. (default: ``1e-5``)
        cl_weight: weight :math:`\lambda_{cl}` of the contrastive terms; at the Xavier init its gradient
            dominates BPR's (35x on lfm2k at 0.01), which delays learning by ~25 epochs there
            (``docs/models/smore.md``). (default: ``0.01``)
        cl_temperature: InfoNCE temperature. (default: ``0.2``)
        dropout: dropout rate on the preference gates. (default: ``0.0``)
        train_raw_features: the raw item features are trainable (the reference's
            ``nn.Embedding.from_pretrained(freeze=False)``). (default: ``True``)
        modalities: modalities to use (default: all, in MMRec's slot order: visual first, text last).
        graph: graph spec (default: :func:`smore_graph_spec` of ``knn_k``).
    """

    def __init__(self, num_users: int, num_items: int, *, modality_dims: dict[str, int],
                 embedding_dim: int = 64, num_ui_layers: int = 3, num_ii_layers: int = 1, knn_k: int = 10,
                 reg_weight: float = 1e-5, cl_weight: float = 0.01, cl_temperature: float = 0.2,
                 dropout: float = 0.0, train_raw_features: bool = True, modalities: list[str] | None = None,
                 graph: GraphSpec | None = None) -> None:
        mods = resolve_modalities("SMORE", modality_dims, modalities, default=mmrec_modality_order(modality_dims))
        expected = smore_graph_spec(knn_k, mods)
        if graph is None:
            graph = expected
        elif graph != expected:
            raise ValueError(f"SMORE needs {expected} (derived from knn_k and the modalities; pass graph=None), "
                             f"got {graph}")
        super().__init__(num_users, num_items, embedding_dim=embedding_dim, graph=graph)
        if num_ui_layers < 0 or num_ii_layers < 0:
            raise ValueError(f"layer counts must be >= 0, got {num_ui_layers}, {num_ii_layers}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if cl_temperature <= 0:
            raise ValueError(f"cl_temperature must be positive, got {cl_temperature}")
        self.modalities = mods
        self.num_ui_layers = num_ui_layers
        self.num_ii_layers = num_ii_layers
        self.knn_k = knn_k
        self.reg_weight = reg_weight
        self.cl_weight = cl_weight
        self.cl_temperature = cl_temperature
        self.train_raw_features = train_raw_features
        self.required_modalities = tuple(mods)  # type: ignore[misc]
        self.required_edge_types = (UI, IU, *(item_knn_type(m) for m in mods))  # type: ignore[misc]
        d, nf = embedding_dim, embedding_dim // 2 + 1
        lin = torch.nn.Linear
        self.user_emb = torch.nn.Embedding(num_users, d)
        self.item_emb = torch.nn.Embedding(num_items, d)
        self.feat_proj = torch.nn.ModuleDict({m: lin(int(modality_dims[m]), d) for m in mods})
        self.filter = torch.nn.ParameterDict({m: torch.nn.Parameter(torch.empty(nf, 2)) for m in mods})
        self.filter_fusion = torch.nn.Parameter(torch.empty(nf, 2))
        self.gate = torch.nn.ModuleDict({m: lin(d, d) for m in mods})
        self.gate_fusion = lin(d, d)
        self.query = torch.nn.ModuleDict(
            {m: torch.nn.Sequential(lin(d, d), torch.nn.Tanh(), lin(d, d, bias=False)) for m in mods})
        self.gate_prefer = torch.nn.ModuleDict({m: lin(d, d) for m in mods})
        self.gate_prefer_fusion = lin(d, d)
        self.dropout = torch.nn.Dropout(p=dropout)
        if train_raw_features:
            self.add_raw_features({m: modality_dims[m] for m in mods})
        self.ui_conv = BipartiteLGConv()
        # One conv per item graph: each memoises the transpose of its own graph for the backward.
        self.item_conv = torch.nn.ModuleDict({m: KNNConv() for m in mods})
        self.fusion_conv = KNNConv()
        self._fusion_memo: tuple[tuple[weakref.ref, ...], Tensor] | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The reference's initialisation: Xavier-uniform ID embeddings, standard-normal filters
        (``torch.randn`` real and imaginary parts), PyTorch's default ``Linear`` init elsewhere."""
        torch.nn.init.xavier_uniform_(self.user_emb.weight)
        torch.nn.init.xavier_uniform_(self.item_emb.weight)
        with torch.no_grad():
            for p in (*self.filter.values(), self.filter_fusion):
                p.normal_()
        for module in (self.feat_proj, self.gate, self.query, self.gate_prefer, self.gate_fusion,
                       self.gate_prefer_fusion):
            for layer in module.modules():
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

    def fusion_graph(self, data: HeteroData) -> Tensor:
        """:math:`S_f`, the max-pool of the per-modality graphs, as a CSR ``adj_t`` ``[I, I]``.

        Computed once per set of graph tensors (held through weak references, so a new ``data``
        recomputes it and a reused one does not).
        """
        weights = [data[item_knn_type(m)].edge_weight for m in self.modalities]
        memo = self._fusion_memo
        if memo is not None and len(memo[0]) == len(weights) and all(
                r() is w for r, w in zip(memo[0], weights, strict=True)):
            return memo[1]
        graphs = [(data[item_knn_type(m)].edge_index, w) for m, w in zip(self.modalities, weights, strict=True)]
        ei, ew = max_pool_graph(graphs, self.num_items)
        adj_t = to_adj_t(ei, ew, self.num_items, self.num_items)
        self._fusion_memo = (tuple(weakref.ref(w) for w in weights), adj_t)
        return adj_t

    def spectral_views(self, data: HeteroData) -> tuple[list[Tensor], Tensor]:
        """``([c_m [I, d] per modality], c_f [I, d])``: the filtered and the fused projections."""
        d = self.embedding_dim
        spectra = [torch.fft.rfft(self.feat_proj[m](self._features(data, m)), dim=-1, norm="ortho")
                   for m in self.modalities]  # [I, d // 2 + 1] complex each
        convs = [spectral_filter(s, self.filter[m], d) for m, s in zip(self.modalities, spectra, strict=True)]
        prod = spectra[0]
        for s in spectra[1:]:
            prod = prod * s
        return convs, spectral_filter(prod, self.filter_fusion, d)

    def embeddings(self, data: HeteroData) -> tuple[Tensor, Tensor, Tensor]:
        """``(E, E^s, E^c)``, each ``[U + I, d]`` (users first): final, side and content embeddings."""
        U, I = self.num_users, self.num_items
        e_user, e_item = self.user_emb.weight, self.item_emb.weight
        iu, iu_w = edge_inputs(data, IU)
        convs, conv_f = self.spectral_views(data)

        def item_view(h: Tensor, conv: KNNConv, adj: Tensor, w: Tensor | None) -> Tensor:
            for _ in range(self.num_ii_layers):
                h = conv(h, adj, w)  # S h
            hu = self.ui_conv((h, None), iu, iu_w, size=(I, U))  # R̂ h
            return torch.cat([hu, h])  # [U + I, d]

        views = []
        for m, c in zip(self.modalities, convs, strict=True):
            adj, w = edge_inputs(data, item_knn_type(m))
            views.append(item_view(e_item * torch.sigmoid(self.gate[m](c)), self.item_conv[m], adj, w))
        fused = item_view(e_item * torch.sigmoid(self.gate_fusion(conv_f)), self.fusion_conv,
                          self.fusion_graph(data), None)
        cu, ci = lightgcn_propagate(self.ui_conv, data, e_user, e_item, self.num_ui_layers)
        content = torch.cat([cu, ci])  # E^c [U + I, d]
        terms = []
        for m, v in zip(self.modalities, views, strict=True):
            agg = torch.softmax(self.query[m](fused), dim=-1) * v  # softmax over the d features
            terms.append(self.dropout(torch.sigmoid(self.gate_prefer[m](content))) * agg)
        terms.append(self.dropout(torch.sigmoid(self.gate_prefer_fusion(content))) * fused)
        side = torch.stack(terms).mean(0)  # E^s [U + I, d]
        return content + side, side, content

    def forward(self, data: HeteroData) -> dict[str, Tensor]:
        e, _, _ = self.embeddings(data)
        u, i = e.split([self.num_users, self.num_items])
        return {"user": u, "item": i}

    def loss(self, data: HeteroData, batch: BPRBatch) -> dict[str, Tensor]:
        e, side, content = self.embeddings(data)
        U = self.num_users
        u, i, j = e[batch.users], e[U + batch.pos_items], e[U + batch.neg_items]  # [B, d]
        bpr = -F.logsigmoid((u * i).sum(-1) - (u * j).sum(-1)).mean()
        reg = l2_reg(u, i, j)
        cl = (info_nce(side[U + batch.pos_items], content[U + batch.pos_items], self.cl_temperature)
              + info_nce(side[batch.users], content[batch.users], self.cl_temperature))
        total = bpr + self.reg_weight * reg + self.cl_weight * cl
        return {"loss": total, "bpr": bpr, "reg": reg, "cl": cl}

    def __getstate__(self):  # weak references do not pickle; the memo is a cache
        state = self.__dict__.copy()
        state["_fusion_memo"] = None
        return state

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", modalities={self.modalities}, num_ui_layers={self.num_ui_layers}, "
                f"num_ii_layers={self.num_ii_layers}, knn_k={self.knn_k}, reg_weight={self.reg_weight}, "
                f"cl_weight={self.cl_weight}, dropout={self.dropout.p}")

