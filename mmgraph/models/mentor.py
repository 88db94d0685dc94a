"""MENTOR: per-modality user–item GCNs with multi-level cross-modal alignment and masking tasks."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch_geometric.data import HeteroData

from mmgraph.graph.build import GraphSpec
from mmgraph.models.base import GraphRecommender, edge_inputs, resolve_modalities
from mmgraph.models.dualgnn import mmrec_fusion_weights_, mmrec_gcn_input
from mmgraph.models.mmgcn import mmrec_modality_order
from mmgraph.nn.conv import BipartiteLGConv, KNNConv
from mmgraph.typing import II, ITEM, IU, UI, BPRBatch
from mmgraph.utils.precision import dense_fp32, fp32_region


def mentor_graph_spec(item_knn_k: int, reference_image_weight: float | None) -> GraphSpec:
    """MENTOR's frozen item–item graph and the symmetric user–item graph (the reference's construction).

    Per modality, each item's cosine top-``item_knn_k`` list of the raw features (the item itself
    included), binary, normalised :math:`D^{-1/2} A D^{-1/2}` with row-sum degrees, summed with
    weight ``mm_image_weight`` on the image slot (FREEDOM's and DRAGON's graph).
    """
    return GraphSpec(ui_norm="sym", item_knn_k=item_knn_k, item_knn_loop=True, item_knn_weighted=False,
                     item_knn_norm="sym", reference_image_weight=reference_image_weight)


class _AllPairsInfoNCE(torch.autograd.Function):
    """Mean InfoNCE of L2-normalised rows ``a`` against all rows of ``b``, blockwise.

    The backward pass recomputes each block's softmax, except when one block covers all rows
    (``block >= N``): then the forward pass keeps it (``N × N`` values, at most the block budget).
    """

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, inv_temp: float, block: int) -> Tensor:  # noqa: D102
        n = a.size(0)
        lse = a.new_empty(n)
        probs = None
        for s in range(0, n, block):
            logits = (a[s:s + block] @ b.t()).mul_(inv_temp)  # [blk, N]
            lse_b = torch.logsumexp(logits, dim=1)  # [blk]
            lse[s:s + block] = lse_b
            if block >= n:
                probs = logits.sub_(lse_b[:, None]).exp_()  # [N, N] softmax rows, kept for backward
        pos = (a * b).sum(1) * inv_temp  # [N]
        ctx.save_for_backward(a, b, lse, probs)
        ctx.inv_temp, ctx.block = inv_temp, block
        return (lse - pos).mean()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):  # noqa: D102
        a, b, lse, probs = ctx.saved_tensors
        t, block, n = ctx.inv_temp, ctx.block, a.size(0)
        need_a, need_b = ctx.needs_input_grad[:2]
        ga = torch.empty_like(a) if need_a else None
        gb = torch.zeros_like(b) if need_b else None
        for s in range(0, n, block):
            e = min(n, s + block)
            p = probs if probs is not None else torch.exp(a[s:e] @ b.t() * t - lse[s:e, None])  # [blk, N]
            if ga is not None:
                ga[s:e] = p @ b
            if gb is not None:
                gb.addmm_(p.t(), a[s:e])
        scale = grad * (t / n)
        ga = (ga - b) * scale if ga is not None else None
        gb = (gb - a) * scale if gb is not None else None
        return ga, gb, None, None


def all_pairs_info_nce(view1: Tensor, view2: Tensor, temperature: float, block_size: int | None = None) -> Tensor:
    r"""InfoNCE of every row of ``view1`` against **all** rows of ``view2`` (MENTOR's ``InfoNCE``).

    .. math::
        -\frac{1}{N}\sum_{n} \log \frac{\exp(\hat a_n^\top \hat b_n/\tau)}
        {\sum_{m=1}^{N} \exp(\hat a_n^\top \hat b_m/\tau)}, \qquad
        \hat a = \mathrm{normalize}(a),\ \hat b = \mathrm{normalize}(b)

    The reference builds the dense ``[N, N]`` logits (all users, all items). Here they are formed
    ``block_size`` rows at a time, in the forward pass (row log-sum-exps) and again in the backward
    pass (softmax blocks), so memory is ``O(block_size · N)`` and never ``N × N``; the values are
    the reference's (log-sum-exp instead of ``log(exp / Σ exp)``: equal, without overflow).

    Args:
        view1: anchors ``[N, d]``.
        view2: positives ``[N, d]`` (row ``n`` is the positive of anchor ``n``; all rows are candidates).
        temperature: :math:`\tau`.
        block_size: rows per block (default: about :math:`2^{24}` logits per block).
    """
    if view1.shape != view2.shape:
        raise ValueError(f"views must have the same shape, got {tuple(view1.shape)} and {tuple(view2.shape)}")
    n = view1.size(0)
    block = block_size or max(1, min(n, (1 << 24) // max(1, n)))
    a, b = F.normalize(dense_fp32(view1), dim=1), F.normalize(dense_fp32(view2), dim=1)
    with fp32_region(a.device.type):  # hand-written backward: one dtype (fp32) throughout
        return _AllPairsInfoNCE.apply(a, b, 1.0 / temperature, int(block))


def _repeated_var_mean(x: Tensor, copies: int) -> tuple[Tensor, Tensor]:
    """``(torch.var(t), torch.mean(t))`` of ``t = torch.cat([x] * copies, dim=1)``, without building ``t``."""
    mean = x.mean()
    n = x.numel() * copies
    return (x - mean).pow(2).sum() * copies / (n - 1), mean


class _GCNInput(torch.nn.Module):
    r"""The input of one of the reference's ``GCN`` modules: user preferences and projected item features.

    :math:`\mathbf{x} = \mathrm{normalize}([\mathbf{P};\ \mathrm{MLP}^{(2)}(\phi(\mathrm{MLP}^{(1)}
    (\mathbf{f})))])`, ``F → 4d → d``, :math:`\phi` = LeakyReLU, rows L2-normalised.
    """

    def __init__(self, num_users: int, in_dim: int, dim: int) -> None:
        super().__init__()
        self.preference = torch.nn.Parameter(torch.empty(num_users, dim))
        self.mlp = torch.nn.Linear(in_dim, 4 * dim)
        self.mlp_1 = torch.nn.Linear(4 * dim, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        torch.nn.init.xavier_normal_(self.preference)
        self.mlp.reset_parameters()
        self.mlp_1.reset_parameters()

    def forward(self, features: Tensor) -> Tensor:
        return mmrec_gcn_input(self.preference, self.mlp, self.mlp_1, features)  # [U + I, d]


class MENTOR(GraphRecommender):
    r"""MENTOR from `"Multi-level Self-supervised Learning for Multimodal Recommendation"
    <https://arxiv.org/abs/2402.19407>`_ (AAAI'25), as the authors' code (``src/models/mentor.py``,
    MMRec-based).

    **Per-modality GCNs** (DRAGON's heterogeneous part). For every modality :math:`m`,
    :math:`\mathbf{x}_m = \mathrm{normalize}([\mathbf{P}_m; \mathrm{MLP}^{(2)}_m(\phi(
    \mathrm{MLP}^{(1)}_m(\mathbf{f}_m)))])` and
    :math:`\hat{\mathbf{x}}_m = \mathbf{x}_m + \sum_{l=1}^{L} \hat A^l \mathbf{x}_m` with
    :math:`\hat A = D^{-1/2} A D^{-1/2}` on the user–item graph (edge types ``UI``/``IU``;
    ``L = num_layers = 2``, the reference's two hard-coded ``Base_gcn`` calls). An ID "modality"
    does the same with a trainable item table :math:`\mathbf{E}^{id}` ``[I, d]`` as its features
    (:math:`\hat{\mathbf{x}}_{id}`, the guide). Two more GCNs per modality, with their own
    parameters, add noise after each layer (SimGCL-style):
    :math:`\mathbf{h}^{(l)} \leftarrow \mathbf{h}^{(l)} + \mathrm{sign}(\mathbf{h}^{(l)}) \odot
    \epsilon\,\mathrm{normalize}(\boldsymbol{\Delta}^{(l)})`, :math:`\boldsymbol{\Delta} \sim
    U[0, 1)^{d}` per node, the next layer propagating the perturbed :math:`\mathbf{h}^{(l)}`
    (:math:`\hat{\mathbf{x}}^{n1}_m, \hat{\mathbf{x}}^{n2}_m`, ``noise_eps`` :math:`\epsilon = 0.1`).

    **Fusion and item graph.** Every view is a ``K·d``-wide concatenation, users weighted by
    learned per-user modality weights :math:`w_{u,m}` (softmax-initialised):
    :math:`\mathbf{r}_u = [w_{u,1}\hat{\mathbf{x}}_{1,u} \| \dots \| w_{u,K}\hat{\mathbf{x}}_{K,u}]`,
    :math:`\mathbf{r}_i = [\hat{\mathbf{x}}_{1,i} \| \dots \| \hat{\mathbf{x}}_{K,i}]`, then
    :math:`\mathbf{e}_i = \mathbf{r}_i + (S^{L_{ii}}\mathbf{R})_i` with the frozen multimodal kNN graph
    :math:`S` (edge type ``II``, :func:`mentor_graph_spec`; ``L_ii = num_ii_layers``). Scores
    :math:`\hat y_{ui} = \mathbf{r}_u^\top \mathbf{e}_i` (no user–user graph: the reference loads
    DualGNN's user graph and samples it every epoch, but its forward never uses it). The noisy
    views :math:`\mathbf{n}^1, \mathbf{n}^2` are fused the same way (same :math:`w_u`). The guide
    view :math:`\mathbf{g}` and the per-modality views :math:`\mathbf{v}_m` are ``K`` copies of
    :math:`\hat{\mathbf{x}}_{id}` and :math:`\hat{\mathbf{x}}_m` (users unweighted), items also
    plus :math:`S^{L_{ii}}`.

    **Loss** (the reference's ``calculate_loss``):

    .. math::
        \mathcal{L} = \underbrace{-\mathrm{mean}\log_2\sigma(\hat y_{ui} - \hat y_{uj})}_{\text{bpr}}
        + \lambda_r \underbrace{\Big[\sum_m \mathrm{mean}(\mathbf{P}_m[u]^2) + \mathrm{mean}(w^2)\Big]}_{\text{reg}}
        + \lambda_a \underbrace{\sum_{\{p, q\} \subset \{\mathbf{r}, \mathbf{g}, \mathbf{v}_1, \dots,
          \mathbf{v}_K\}} |\sigma^2_p - \sigma^2_q| + |\mu_p - \mu_q|}_{\text{align}}
        + \lambda_f\, \text{mask\_f} + \lambda_g \underbrace{[\mathrm{NCE}(\mathbf{n}^1_U, \mathbf{n}^2_U)
          + \mathrm{NCE}(\mathbf{n}^1_I, \mathbf{n}^2_I)]}_{\text{mask\_g}}

    * ``align`` (multi-level cross-modal alignment): :math:`\mu_p, \sigma^2_p` are the mean and
      the unbiased variance of **all** entries of the ``[U + I, K·d]`` table of view :math:`p`
      (``fit_Gaussian_dis``); with two modalities these are the reference's six pairs (ID–fused,
      ID–v, ID–t, fused–v, fused–t, v–t).
    * ``mask_g`` (graph perturbation task): :func:`all_pairs_info_nce` over all users and over
      all items, temperature :math:`\tau` (``temperature``), computed blockwise.
    * ``mask_f`` (general feature masking): :math:`(1 - \overline{\cos}(\mathrm{drop}_p(\mathbf{r}_U),
      \mathrm{MLP}(\mathbf{r}_U))) + (1 - \overline{\cos}(\mathrm{drop}_p(\mathbf{e}_I),
      \mathrm{MLP}(\mathbf{e}_I)))` with dropout rate ``feature_dropout`` and a ``Linear(K·d, K·d)``.
      **The reference computes all of it inside** ``torch.no_grad()``: the term is a constant
      that adds to the reported loss but has no gradient, and the MLP is never trained. This
      class does the same (the MLP is frozen); ``feature_mask_grad=True`` lets the gradient
      through (the paper's reading; not the reference's).

    The loss dict holds ``loss`` and the unweighted ``bpr``, ``reg``, ``align``, ``mask_f``,
    ``mask_g``. ``log₂ σ`` is ``logsigmoid / ln 2``.

    **Randomness** (noise, dropout) comes from torch's global RNG. The noise of layer ``l`` is one
    draw ``torch.rand(U + I, 2K, d)``: block ``k < K`` perturbs the first noisy GCN of modality
    ``k``, block ``K + k`` the second (the reference draws a ``[U + I, d]`` tensor per GCN).

    **Deliberate differences from the reference:** evaluation runs a fresh :meth:`forward`
    (noise-free, as the reference's scores; the reference ranks with ``result_embed`` cached by the
    last training batch); any number of modalities (reference: exactly one image and one text
    slot; with one modality no user weight is applied, as DRAGON); the all-pairs InfoNCE is blockwise
    (:func:`all_pairs_info_nce`) instead of dense ``N × N``; the kNN graph comes from the data
    layer (the reference computes a dense ``I × I`` similarity in ``__init__``); all GCNs
    propagate in one wide pass (the same values). When ``align_weight`` is 0 the ID GCN, and when
    ``mask_weight_g`` is 0 the noisy GCNs, are not evaluated (their gradient is exactly zero).
    Absent because they enter neither scores nor loss: the item-dropped edge lists (passed to
    ``GCN.forward``, unused), ``image_embedding``/``text_embedding``/``image_trs``/``text_trs``,
    ``weight_i``, ``MLP_user``, the user graph and ``topk_sample``.

    Reference names → ours: ``embedding_size``/``dim_latent`` (64) → ``embedding_dim``;
    ``n_mm_layers`` → ``num_ii_layers``; ``knn_k`` → ``item_knn_k``; ``mm_image_weight`` →
    ``reference_image_weight`` (mapped onto the dataset's modalities by
    :class:`~mmgraph.graph.GraphSpec`); ``dropout`` → ``feature_dropout``; ``temp`` →
    ``temperature``; ``reg_weight``, ``align_weight``, ``mask_weight_f``, ``mask_weight_g`` kept;
    the hard-coded noise scale 0.1 → ``noise_eps``; ``n_layers`` (unused there: two propagations
    are hard-coded) → ``num_layers = 2``; ``feat_embed_dim`` is unused there and absent.
    Modules: ``v_gcn``/``t_gcn`` → ``gcn[m]``, ``v_gcn_n1``/``t_gcn_n1`` → ``gcn_n1[m]``,
    ``*_n2`` → ``gcn_n2[m]``, ``id_gcn`` → ``gcn_id``, ``id_feat`` → ``id_feat``, ``weight_u`` →
    ``weight_u`` ``[U, K]``, ``mlp`` → ``mask_mlp``; ``GCN.MLP``/``MLP_1`` → ``mlp``/``mlp_1``.

    Args:
        num_users: number of users.
        num_items: number of items.
        modality_dims: feature size of every modality (passed by the pipeline).
        embedding_dim: per-modality representation size ``d``. (default: ``64``)
        num_layers: propagations of each user–item GCN. (default: ``2``)
        num_ii_layers: propagations over the item graph. (default: ``1``)
        item_knn_k: item kNN size. (default: ``10``)
        reference_image_weight: weight of the image slot in :math:`S`; ``None``: equal weights.
            (default: ``0.1``)
        reg_weight: :math:`\lambda_r`. (default: ``1e-3``)
        align_weight: :math:`\lambda_a`. (default: ``0.1``)
        mask_weight_f: :math:`\lambda_f`. (default: ``1.5``)
        mask_weight_g: :math:`\lambda_g`. (default: ``1e-4``)
        temperature: InfoNCE temperature :math:`\tau`. (default: ``0.2``)
        feature_dropout: dropout rate of the feature-masking task. (default: ``0.5``)
        noise_eps: scale :math:`\epsilon` of the graph noise. (default: ``0.1``)
        feature_mask_grad: let ``mask_f`` carry gradient and train its MLP (the reference does
            not). (default: ``False``)
        nce_block_size: rows per block of the all-pairs InfoNCE (memory knob; ``None``: automatic).
        modalities: modalities to use, in order (default: all, in MMRec's slot order).
        graph: graph spec (default: :func:`mentor_graph_spec` of the arguments above).
    """

    def __init__(self, num_users: int, num_items: int, *, modality_dims: dict[str, int],
                 embedding_dim: int = 64, num_layers: int = 2, num_ii_layers: int = 1, item_knn_k: int = 10,
                 reference_image_weight: float | None = 0.1, reg_weight: float = 1e-3, align_weight: float = 0.1,
                 mask_weight_f: float = 1.5, mask_weight_g: float = 1e-4, temperature: float = 0.2,
                 feature_dropout: float = 0.5, noise_eps: float = 0.1, feature_mask_grad: bool = False,
                 nce_block_size: int | None = None, modalities: list[str] | None = None,
                 graph: GraphSpec | None = None) -> None:
        expected = mentor_graph_spec(item_knn_k, reference_image_weight)
        if graph is None:
            graph = expected
        elif graph != expected:
            raise ValueError(f"MENTOR needs {expected} (derived from item_knn_k and reference_image_weight; "
                             f"pass graph=None), got {graph}")
        super().__init__(num_users, num_items, embedding_dim=embedding_dim, graph=graph)
        if num_layers < 0 or num_ii_layers < 0:
            raise ValueError(f"num_layers and num_ii_layers must be >= 0, got {num_layers}, {num_ii_layers}")
        if not 0.0 <= feature_dropout < 1.0:
            raise ValueError(f"feature_dropout must be in [0, 1), got {feature_dropout}")
        if temperature <= 0.0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if min(reg_weight, align_weight, mask_weight_f, mask_weight_g, noise_eps) < 0.0:
            raise ValueError("reg_weight, align_weight, mask_weight_f, mask_weight_g and noise_eps must be >= 0")
        if nce_block_size is not None and nce_block_size <= 0:
            raise ValueError(f"nce_block_size must be positive or None, got {nce_block_size}")
        mods = resolve_modalities("MENTOR", modality_dims, modalities,
                                  default=mmrec_modality_order(modality_dims))
        self.modalities = mods
        self.num_layers, self.num_ii_layers = num_layers, num_ii_layers
        self.reg_weight, self.align_weight = reg_weight, align_weight
        self.mask_weight_f, self.mask_weight_g = mask_weight_f, mask_weight_g
        self.temperature, self.feature_dropout, self.noise_eps = temperature, feature_dropout, noise_eps
        self.feature_mask_grad = feature_mask_grad
        self.nce_block_size = nce_block_size
        self.required_modalities = tuple(mods)  # type: ignore[misc]
        self.required_edge_types = (UI, IU, II)  # type: ignore[misc]
        d, K = embedding_dim, len(mods)

        def gcns() -> torch.nn.ModuleDict:
            return torch.nn.ModuleDict({m: _GCNInput(num_users, int(modality_dims[m]), d) for m in mods})

        self.gcn, self.gcn_n1, self.gcn_n2 = gcns(), gcns(), gcns()
        self.id_feat = torch.nn.Parameter(torch.empty(num_items, d))
        self.gcn_id = _GCNInput(num_users, d, d)
        self.weight_u = torch.nn.Parameter(torch.empty(num_users, K))
        self.mask_mlp = torch.nn.Linear(K * d, K * d)
        self.mask_mlp.requires_grad_(feature_mask_grad)  # reference: used under no_grad only, never trained
        self.conv = BipartiteLGConv()
        self.item_conv = KNNConv()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The reference's initialisation: Xavier-normal preferences and ID features; user weights
        Xavier-normal of a ``(U, K, 1)`` tensor, then softmax over the modalities; default ``Linear`` init."""
        with torch.no_grad():
            for group in (self.gcn, self.gcn_n1, self.gcn_n2):
                for module in group.values():
                    module.reset_parameters()
            self.gcn_id.reset_parameters()
            torch.nn.init.xavier_normal_(self.id_feat)
            mmrec_fusion_weights_(self.weight_u)
            self.mask_mlp.reset_parameters()

    # ------------------------------------------------------------------ propagation
    def _propagate(self, data: HeteroData, x: Tensor, noisy_from: int | None) -> Tensor:
        """``x + Σ_l Â^l x`` of the stacked GCN inputs ``x [U + I, G·d]``; columns ``noisy_from:`` get
        the reference's ``sign(h)·ε·normalize(rand)`` after every layer (``None``: no noise)."""
        U, I = self.num_users, self.num_items
        iu, iu_w = edge_inputs(data, IU)  # item -> user
        ui, ui_w = edge_inputs(data, UI)  # user -> item
        out, xu, xi = x, x[:U], x[U:]
        for _ in range(self.num_layers):
            hu = self.conv((xi, None), iu, iu_w, size=(I, U), adj_rev=ui if iu_w is None else None)
            hi = self.conv((xu, None), ui, ui_w, size=(U, I), adj_rev=iu if ui_w is None else None)
            h = torch.cat([hu, hi])  # [U + I, G·d]
            if noisy_from is not None:
                h = self._perturb(h, noisy_from)
            out = out + h
            xu, xi = h[:U], h[U:]
        return out

    def _perturb(self, h: Tensor, start: int) -> Tensor:
        d = self.embedding_dim
        tail = h[:, start:]  # [U + I, Gn·d]
        g = tail.size(1) // d
        noise = F.normalize(torch.rand(h.size(0), g, d, device=h.device, dtype=h.dtype), dim=-1)
        tail = tail + torch.sign(tail) * noise.reshape(h.size(0), g * d) * self.noise_eps
        return torch.cat([h[:, :start], tail], dim=1)

    def _item_graph(self, data: HeteroData, out: Tensor) -> Tensor:
        """``[users; r_i + S^L r_i]``: the item rows plus their ``num_ii_layers``-hop item-graph sum."""
        U = self.num_users
        adj, w = edge_inputs(data, II)
        items = out[U:]
        h = items
        for _ in range(self.num_ii_layers):
            h = self.item_conv(h, adj, w)
        return torch.cat([out[:U], items + h])

    def _fuse(self, e: Tensor) -> tuple[Tensor, Tensor]:
        """``(users [U, K·d], items [I, K·d])`` of a ``K``-block view, users weighted by ``w_u``."""
        U, d = self.num_users, self.embedding_dim
        users = e[:U]
        if len(self.modalities) > 1:
            users = users * self.weight_u.repeat_interleave(d, dim=1)  # w_{u,m} on the m-th block
        return users, e[U:]

    def _inputs(self, data: HeteroData, group: torch.nn.ModuleDict) -> list[Tensor]:
        return [group[m](data[ITEM][f"x_{m}"]) for m in self.modalities]

    def forward(self, data: HeteroData) -> dict[str, Tensor]:
        x = torch.cat(self._inputs(data, self.gcn), dim=1)  # [U + I, K·d]
        e = self._item_graph(data, self._propagate(data, x, None))
        user, item = self._fuse(e)
        return {"user": user, "item": item}

    # ------------------------------------------------------------------ loss
    def loss(self, data: HeteroData, batch: BPRBatch) -> dict[str, Tensor]:
        d, K = self.embedding_dim, len(self.modalities)
        use_id, use_noise = self.align_weight != 0.0, self.mask_weight_g != 0.0
        blocks = self._inputs(data, self.gcn)  # [main K | id | n1 K | n2 K], each [U + I, d]
        if use_id:
            blocks.append(self.gcn_id(self.id_feat))
        noisy_from = len(blocks) * d
        if use_noise:
            blocks += self._inputs(data, self.gcn_n1) + self._inputs(data, self.gcn_n2)
        x = torch.cat(blocks, dim=1)  # [U + I, G·d]
        e = self._item_graph(data, self._propagate(data, x, noisy_from if use_noise else None))
        user, item = self._fuse(e[:, :K * d])

        u = user[batch.users]
        pos = (u * item[batch.pos_items]).sum(-1)
        neg = (u * item[batch.neg_items]).sum(-1)
        bpr = -F.logsigmoid(pos - neg).mean() / math.log(2.0)  # -mean log2 σ(Δ)
        reg = sum(self.gcn[m].preference[batch.users].pow(2).mean() for m in self.modalities)
        reg = reg + self.weight_u.pow(2).mean()
        zero = bpr.new_zeros(())

        mask_f = self._feature_mask(user, item)

        align = zero
        if use_id:
            r = torch.cat([user, item])  # [U + I, K·d]: the scored view
            stats = [(torch.var(r), r.mean()),  # fused r
                     _repeated_var_mean(e[:, K * d:(K + 1) * d], K)]  # guide g: K copies of the ID view
            stats += [_repeated_var_mean(e[:, k * d:(k + 1) * d], K) for k in range(K)]  # v_m: K copies
            for a in range(len(stats)):
                for b in range(a + 1, len(stats)):
                    align = align + (stats[a][0] - stats[b][0]).abs() + (stats[a][1] - stats[b][1]).abs()

        mask_g = zero
        if use_noise:
            n1_user, n1_item = self._fuse(e[:, noisy_from:noisy_from + K * d])
            n2_user, n2_item = self._fuse(e[:, noisy_from + K * d:])
            mask_g = (all_pairs_info_nce(n1_user, n2_user, self.temperature, self.nce_block_size)
                      + all_pairs_info_nce(n1_item, n2_item, self.temperature, self.nce_block_size))

        loss = (bpr + self.reg_weight * reg + self.align_weight * align + self.mask_weight_f * mask_f
                + self.mask_weight_g * mask_g)
        return {"loss": loss, "bpr": bpr, "reg": reg, "align": align, "mask_f": mask_f, "mask_g": mask_g}

    def _feature_mask(self, user: Tensor, item: Tensor) -> Tensor:
        """The general feature-masking term; a constant (no gradient) unless ``feature_mask_grad``."""
        with torch.set_grad_enabled(self.feature_mask_grad and torch.is_grad_enabled()):
            u2, i2 = self.mask_mlp(user), self.mask_mlp(item)
            # reference: F.dropout with its default training=True, independent of the module's mode
            u1 = F.dropout(user, self.feature_dropout, training=True)
            i1 = F.dropout(item, self.feature_dropout, training=True)
            return (1 - F.cosine_similarity(u1, u2).mean()) + (1 - F.cosine_similarity(i1, i2).mean())

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", modalities={self.modalities}, num_layers={self.num_layers}, "
                f"num_ii_layers={self.num_ii_layers}, reg_weight={self.reg_weight}, "
                f"align_weight={self.align_weight}, mask_weight_f={self.mask_weight_f}, "
                f"mask_weight_g={self.mask_weight_g}, temperature={self.temperature}, "
                f"feature_dropout={self.feature_dropout}, feature_mask_grad={self.feature_mask_grad}")
