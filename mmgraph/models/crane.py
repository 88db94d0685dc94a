"""CRANE: recursive cross-modal attention over users and items, with a dual (user–item + item–item) graph."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import HeteroData

from mmgraph.graph.build import GraphSpec
from mmgraph.graph.knn import topk_cosine
from mmgraph.models.base import GraphRecommender, edge_inputs
from mmgraph.nn.conv import BipartiteGCNConv, BipartiteLGConv, KNNConv
from mmgraph.nn.conv.bipartite_lg_conv import _SpmmWithTranspose
from mmgraph.nn.drop_edge import degree_drop_edge, degree_sample_edges, with_ui_graph
from mmgraph.nn.latent_graph import EpochGraphCache
from mmgraph.nn.losses import bpr_loss, info_nce, l2_reg
from mmgraph.nn.rca import KERNELS, RecursiveCrossModalAttention
from mmgraph.nn.user_profile import REDUCE, interaction_matrix, user_profiles
from mmgraph.typing import ITEM, IU, UI, BPRBatch
from mmgraph.utils.precision import dense_fp32, fp32_region

VARIANTS = ("crane", "no_dual_fusion")
#: Table-5 ablations that are settings, not variants: the model refuses them as ``variant`` and says which
#: setting expresses each (``experiment=crane_table5`` maps them), so no variant overwrites a setting.
SETTING_ABLATIONS = {
    "no_item_graph": "num_ii_layers=0",
    "no_rca": "rca_rounds=1",
    "no_attention": "rca_rounds=0",
    "no_gcn": "num_ui_layers=0 num_ii_layers=0",
    "no_cl": "cl_weight=0",
}
UI_CONVS = ("gcn", "lightgcn")
DROPEDGE = ("bernoulli", "fixed", "none")
SEMANTIC_INPUTS = ("id", "id_features")
GRAPH_FUSIONS = ("concat", "sum", "graph_avg")
REFRESH = ("epoch", "batch")
#: Attributes that :meth:`CRANE.train_graph` puts on its copy of ``data``.
CACHE_ATTR = "crane_graphs"
OPS_ATTR = "crane_user_ops"


@dataclass
class UserOps:
    """Sparse operators of the full training graph ``edge_index``: profile ``P`` (``R`` or ``D⁻¹R``),
    mean ``D⁻¹R``, each ``[U, I]`` with its transpose ``[I, U]`` (used by the backward pass)."""

    edge_index: Tensor
    profile: Tensor
    profile_t: Tensor
    mean: Tensor
    mean_t: Tensor


def _spmm(adj: Tensor, adj_t: Tensor, x: Tensor) -> Tensor:
    with fp32_region(x.device.type):  # sparse products stay fp32 under bf16 autocast
        return _SpmmWithTranspose.apply(adj, adj_t, dense_fp32(x))


class CRANE(GraphRecommender):
    r"""CRANE from `"Cross-Modal Attention Network with Dual Graph Learning in Multimodal
    Recommendation" <https://arxiv.org/abs/2601.11151>`_ (Dai et al., 2026), the paper's model
    as rebuilt by our spec (its equations were lost; see ``docs/models/crane.md`` for what is
    "our choice"). The authors' published code is a different, simpler model.

    **Collaborative view** (eqs. 2–4). Each training epoch samples the user–item graph
    (``dropedge``): ``'bernoulli'`` keeps edge ``(u, i)`` with probability
    :math:`p_{ui} = \min(1, c/\sqrt{d_u d_i})` (``c = dropedge_scale``; the paper's reading,
    :mod:`mmgraph.nn.drop_edge`), ``'fixed'`` keeps ``⌊dropedge_keep·|E|⌋`` edges drawn
    :math:`\propto 1/\sqrt{d_u d_i}` (the published code's rule), ``'none'`` keeps all; the
    sampled graph :math:`\tilde A` is renormalised. Then, per layer,

    .. math::
        Z^{(l+1)} = \hat{\tilde A}\, Z^{(l)} W^{(l)}, \qquad
        \mathbf{e}^{UI} = \frac{1}{L+1} \sum_{l=0}^{L} Z^{(l)}

    with :math:`Z^{(0)}` the ID embeddings and :math:`W^{(l)}` shared by users and items
    (``ui_conv='gcn'``, :class:`~mmgraph.nn.conv.BipartiteGCNConv`), or without weights
    (``ui_conv='lightgcn'``, :class:`~mmgraph.nn.conv.BipartiteLGConv`). Evaluation uses the full graph.

    **Semantic view** (eqs. 5–16). User profiles are the **sum** of the raw features of
    their training items (``user_profile``: ``'sum'``, ``'mean'`` or ``'max'``); users and
    items are stacked into ``N = U + I`` entities and projected per modality to ``d``
    (:math:`X_m^{(0)} = X_m W^{in}_m + b^{in}_m`; for the sum and the mean, computed as
    :math:`P (X^I_m W^{in}_m) + b^{in}_m`, equal by linearity, so the ``[U, F]`` profile is
    never formed). :class:`~mmgraph.nn.rca.RecursiveCrossModalAttention` refines them for
    ``R`` rounds (the ``N × N`` correlation is computed blockwise with recomputation, or
    exactly in ``O(N d²)`` with ``rca_kernel='linear'``) into :math:`E`. The item rows of
    :math:`E` give a directed cosine top-``k`` graph (the item itself included), with the
    kept cosines clamped at 0 and row-normalised: :math:`\hat S`. The semantic item input is
    the collaborative embedding (``semantic_input='id'``) or, with ``'id_features'``, the
    collaborative embedding plus the projected, L2-normalised RCA output
    :math:`\mathbf{f}_i = \alpha\,\mathrm{norm}(E_i W_f)` (:math:`\alpha` a learned scalar,
    initialised to ``feature_scale``), recomputed on every batch so the attention
    gets a gradient on every step:

    .. math::
        \mathbf{e}^{II}_I = \hat S^{L'} (\mathbf{e}^{UI}_I + \mathbf{f}_I), \qquad
        \mathbf{e}^{II}_u = \frac{1}{|\mathcal{N}_u|} \sum_{i \in \mathcal{N}_u} \mathbf{e}^{II}_i, \qquad
        \mathbf{e}^* = \mathbf{e}^{UI} + \mathbf{e}^{II}, \qquad \hat y_{ui} = \mathbf{e}^{*\top}_u \mathbf{e}^*_i

    ``num_ii_layers = 0`` skips :math:`\hat S` (the "w/o item graph" ablation): the semantic
    view is then the unpropagated input.

    **Graph refresh.** :meth:`train_graph` returns a copy of ``data`` with the sampled
    user–item graph, the full graph's sparse profile/mean operators and an
    :class:`~mmgraph.nn.latent_graph.EpochGraphCache`: with ``graph_refresh='epoch'`` the first
    batch of the epoch builds :math:`\hat S` with gradient (RCA learns through the kept edge
    weights), the other batches reuse it detached; ``'batch'`` rebuilds on every batch.
    Without the cache (evaluation) :meth:`forward` builds it once.

    **Loss** (eqs. 18–20): ``BPR(e*) + cl_weight · (InfoNCE(e^UI_u, e^II_u) + InfoNCE(e^UI_i, e^II_i))
    + reg_weight · ½(‖e⁰_u‖² + ‖e⁰_i‖² + ‖e⁰_j‖²)/B``: InfoNCE with cosine similarity and
    temperature ``temperature`` over the unique users and the unique positive items of the
    batch; L2 on the batch's ID embeddings.

    **Table 5.** ``variant='no_dual_fusion'`` trains each view with its own BPR loss and adds
    the scores at inference (:math:`\mathbf{e}^* = [\mathbf{e}^{UI} \| \mathbf{e}^{II}]`). The other
    ablations are settings (``SETTING_ABLATIONS``; ``experiment=crane_table5`` maps them):
    w/o item graph ``num_ii_layers=0``, w/o RCA ``rca_rounds=1``, w/o attention ``rca_rounds=0``,
    w/o GCN ``num_ui_layers=0 num_ii_layers=0``, w/o CL ``cl_weight=0``. Fusion variants of
    §4.6: ``item_graph_modalities`` (a subset, e.g. ``['image']`` for CRANE-V) and
    ``item_graph_fusion`` (``'concat'``, ``'sum'`` of the modalities, or ``'graph_avg'``: the
    mean of per-modality graphs).

    Names: ``knn_k`` is :math:`k`, ``rca_rounds`` :math:`R`, ``num_ui_layers`` :math:`L`,
    ``num_ii_layers`` :math:`L'`, ``cl_weight`` :math:`\lambda_1`, ``reg_weight``
    :math:`\lambda_2`, ``temperature`` :math:`\tau`.

    Args:
        num_users: number of users.
        num_items: number of items.
        modality_dims: feature size of every modality (passed by the pipeline); any number ``≥ 1``.
        embedding_dim: :math:`d`. (default: ``64``)
        num_ui_layers: :math:`L`. (default: ``2``)
        num_ii_layers: :math:`L'`. (default: ``1``)
        rca_rounds: :math:`R`. (default: ``3``)
        rca_kernel: ``'tanh'`` (paper) or ``'linear'``. (default: ``'tanh'``)
        rca_block_size: tile size of the blockwise tanh correlation. (default: ``2048``)
        rca_qk_norm: correlate cosines ``κ(cos(x_i, j_k))`` instead of ``κ(x_i·j_k/√d)``: bounded
            entries for the linear kernel on features with large norms (beyond the paper). (default: ``False``)
        joint_dim: :math:`d_J`. (default: ``64``)
        hidden_dim: :math:`d_h`. (default: ``64``)
        knn_k: neighbours in :math:`\hat S`. (default: ``15``)
        user_profile: ``'sum'``, ``'mean'`` or ``'max'``. (default: ``'sum'``)
        graph_refresh: ``'epoch'`` or ``'batch'``. (default: ``'epoch'``)
        ui_conv: ``'gcn'`` (with :math:`W^{(l)}`, the paper) or ``'lightgcn'``. (default: ``'gcn'``)
        dropedge: ``'bernoulli'``, ``'fixed'`` or ``'none'``. (default: ``'bernoulli'``)
        dropedge_scale: :math:`c` of ``'bernoulli'``. (default: ``1.0``)
        dropedge_keep: kept fraction of ``'fixed'``. (default: ``0.2``)
        semantic_input: ``'id'`` or ``'id_features'``. (default: ``'id'``)
        feature_scale: initial :math:`\alpha` of ``'id_features'``. (default: ``1.0``)
        dropedge_seed: base seed of the per-epoch DropEdge masks (epoch ``e`` uses
            ``seed + e``); ``None`` draws it from the global generator. (default: ``None``)
        cl_weight: :math:`\lambda_1`. (default: ``0.8``)
        temperature: :math:`\tau`. (default: ``0.6``)
        reg_weight: :math:`\lambda_2`. (default: ``1e-3``)
        variant: ``'crane'`` or ``'no_dual_fusion'``. (default: ``'crane'``)
        item_graph_modalities: modalities whose RCA outputs build :math:`\hat S` (default: all).
        item_graph_fusion: ``'concat'``, ``'sum'`` or ``'graph_avg'``. (default: ``'concat'``)
        knn_block_size: rows per block of the kNN search (default: automatic).
        graph: graph spec (default: ``GraphSpec(ui_norm='sym')``; must be ``'sym'``).
    """

    def __init__(self, num_users: int, num_items: int, *, modality_dims: dict[str, int],
                 embedding_dim: int = 64, num_ui_layers: int = 2, num_ii_layers: int = 1,
                 rca_rounds: int = 3, rca_kernel: str = "tanh", rca_block_size: int = 2048,
                 rca_qk_norm: bool = False,
                 joint_dim: int = 64, hidden_dim: int = 64, knn_k: int = 15, user_profile: str = "sum",
                 graph_refresh: str = "epoch", ui_conv: str = "gcn", dropedge: str = "bernoulli",
                 dropedge_scale: float = 1.0, dropedge_keep: float = 0.2, semantic_input: str = "id", feature_scale: float = 1.0,
                 dropedge_seed: int | None = None, cl_weight: float = 0.8, temperature: float = 0.6,
                 reg_weight: float = 1e-3, variant: str = "crane",
                 item_graph_modalities: list[str] | None = None, item_graph_fusion: str = "concat",
                 knn_block_size: int | None = None, graph: GraphSpec | None = None) -> None:
        graph = graph if graph is not None else GraphSpec(ui_norm="sym")
        super().__init__(num_users, num_items, embedding_dim=embedding_dim, graph=graph)
        if variant in SETTING_ABLATIONS:
            raise ValueError(f"CRANE variant {variant!r} is a setting, not a variant: use "
                             f"{SETTING_ABLATIONS[variant]} (or experiment=crane_table5 table5_variant={variant})")
        if isinstance(dropedge, bool):
            raise ValueError(f"CRANE dropedge is one of {DROPEDGE} (true/false are ambiguous), got {dropedge!r}")
        for name, value, allowed in (("variant", variant, VARIANTS), ("rca_kernel", rca_kernel, KERNELS),
                                     ("user_profile", user_profile, REDUCE),
                                     ("graph_refresh", graph_refresh, REFRESH), ("ui_conv", ui_conv, UI_CONVS),
                                     ("dropedge", dropedge, DROPEDGE),
                                     ("semantic_input", semantic_input, SEMANTIC_INPUTS),
                                     ("item_graph_fusion", item_graph_fusion, GRAPH_FUSIONS)):
            if value not in allowed:
                raise ValueError(f"CRANE {name} must be one of {allowed}, got {value!r}")
        if graph.ui_norm != "sym":
            raise ValueError(f"CRANE needs GraphSpec(ui_norm='sym') (DropEdge renormalises that way), "
                             f"got {graph.ui_norm!r}")
        if not modality_dims:
            raise ValueError("CRANE needs at least one modality")
        if min(num_ui_layers, num_ii_layers, rca_rounds) < 0 or knn_k <= 0 or temperature <= 0:
            raise ValueError("layers and rounds must be >= 0, knn_k and temperature > 0")
        if not 0.0 < dropedge_scale:
            raise ValueError(f"dropedge_scale must be positive, got {dropedge_scale}")
        if not 0.0 < dropedge_keep <= 1.0:
            raise ValueError(f"dropedge_keep must be in (0, 1], got {dropedge_keep}")
        self.variant = variant
        self.modalities = list(modality_dims)
        self.graph_modalities = list(item_graph_modalities) if item_graph_modalities else list(self.modalities)
        unknown = [m for m in self.graph_modalities if m not in self.modalities]
        if unknown:
            raise ValueError(f"item_graph_modalities {unknown} not in the modalities {self.modalities}")
        self.required_modalities = tuple(self.modalities)  # type: ignore[misc]
        self.required_edge_types = (UI, IU)  # type: ignore[misc]
        self.num_ui_layers, self.num_ii_layers = num_ui_layers, num_ii_layers
        self.knn_k = knn_k
        self.user_profile = user_profile
        self.graph_refresh = graph_refresh
        self.dropedge, self.dropedge_scale, self.dropedge_keep = dropedge, float(dropedge_scale), float(dropedge_keep)
        self.ui_conv, self.semantic_input, self.feature_scale = ui_conv, semantic_input, float(feature_scale)
        self.dropedge_seed = (int(torch.randint(0, 2**31 - 1, ()).item()) if dropedge_seed is None
                              else int(dropedge_seed))
        self.cl_weight, self.temperature, self.reg_weight = cl_weight, temperature, reg_weight
        self.item_graph_fusion = item_graph_fusion
        self.knn_block_size = knn_block_size
        self.uses_item_graph = num_ii_layers > 0  # builds S (RCA + kNN)
        self.uses_features = semantic_input == "id_features"  # f_i = norm(E_i W_f) in the semantic input
        self.uses_rca = self.uses_item_graph or self.uses_features

        self.user_emb = torch.nn.Embedding(num_users, embedding_dim)
        self.item_emb = torch.nn.Embedding(num_items, embedding_dim)
        self.convs = torch.nn.ModuleList(
            [BipartiteGCNConv(embedding_dim, embedding_dim) if ui_conv == "gcn" else BipartiteLGConv()
             for _ in range(num_ui_layers)])
        if self.uses_rca:
            self.in_proj = torch.nn.ModuleDict(
                {m: torch.nn.Linear(int(modality_dims[m]), embedding_dim) for m in self.modalities})
            self.rca = RecursiveCrossModalAttention(self.modalities, dim=embedding_dim, joint_dim=joint_dim,
                                                    hidden_dim=hidden_dim, rounds=rca_rounds,
                                                    kernel=rca_kernel, block_size=rca_block_size,
                                                    qk_norm=rca_qk_norm)
            self.item_conv = KNNConv()
        if self.uses_features:
            self.feat_proj = torch.nn.Linear(len(self.modalities) * embedding_dim, embedding_dim)  # W_f
            self.feat_scale = torch.nn.Parameter(torch.tensor(float(feature_scale)))  # alpha, learned
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform weights, zero biases (the paper's initialiser)."""
        torch.nn.init.xavier_uniform_(self.user_emb.weight)
        torch.nn.init.xavier_uniform_(self.item_emb.weight)
        for conv in self.convs:
            conv.reset_parameters()
        if self.uses_features:
            torch.nn.init.xavier_uniform_(self.feat_proj.weight)
            torch.nn.init.zeros_(self.feat_proj.bias)
            with torch.no_grad():
                self.feat_scale.fill_(self.feature_scale)
        if self.uses_rca:
            for lin in self.in_proj.values():
                torch.nn.init.xavier_uniform_(lin.weight)
                torch.nn.init.zeros_(lin.bias)
            self.rca.reset_parameters()

    # --------------------------------------------------------------- parts
    def user_ops(self, edge_index: Tensor) -> UserOps:
        """Profile and mean operators of the (full) training graph ``edge_index`` ``[2, E]``."""
        U, I = self.num_users, self.num_items
        mean = interaction_matrix(edge_index, U, I, "mean")
        mean_t = mean.t().to_sparse_csr()  # [I, U]
        if self.user_profile == "sum":
            prof = interaction_matrix(edge_index, U, I, "sum")
            return UserOps(edge_index, prof, prof.t().to_sparse_csr(), mean, mean_t)
        return UserOps(edge_index, mean, mean_t, mean, mean_t)

    def collaborative(self, data: HeteroData) -> tuple[Tensor, Tensor]:
        r"""Collaborative view :math:`\mathbf{e}^{UI}` ``([U, d], [I, d])`` on ``data``'s user–item graph."""
        iu, iu_w = edge_inputs(data, IU)  # item -> user
        ui, ui_w = edge_inputs(data, UI)  # user -> item
        z_u, z_i = self.user_emb.weight, self.item_emb.weight
        sum_u, sum_i = z_u, z_i
        for conv in self.convs:
            new_u = conv((z_i, None), iu, iu_w, size=(self.num_items, self.num_users),
                         adj_rev=ui if iu_w is None else None)
            new_i = conv((z_u, None), ui, ui_w, size=(self.num_users, self.num_items),
                         adj_rev=iu if ui_w is None else None)
            z_u, z_i = new_u, new_i
            sum_u, sum_i = sum_u + z_u, sum_i + z_i
        scale = 1.0 / (len(self.convs) + 1)
        return sum_u * scale, sum_i * scale

    def entity_features(self, data: HeteroData, ops: UserOps) -> dict[str, Tensor]:
        r"""Projected stacked features :math:`X_m^{(0)}` ``{m: [U + I, d]}`` (users first)."""
        out = {}
        for m in self.modalities:
            x_item = data[ITEM][f"x_{m}"]  # [I, F] frozen raw features
            lin = self.in_proj[m]
            if self.user_profile == "max":
                x_user = lin(user_profiles(ops.edge_index, x_item, self.num_users, "max"))  # [U, F] -> [U, d]
                x_item = lin(x_item)
            else:
                xw = F.linear(x_item, lin.weight)  # [I, d]
                x_user = _spmm(ops.profile, ops.profile_t, xw) + lin.bias  # (P X_I) W + b = P (X_I W) + b
                x_item = xw + lin.bias
            out[m] = torch.cat([x_user, x_item], dim=0)  # [N, d]
        return out

    def _knn(self, e_item: Tensor) -> tuple[Tensor, Tensor]:
        """Row-normalised top-k cosine graph of ``e_item [I, D]``: ``(edge_index [2, I·k], weight [I·k])``."""
        n, k = e_item.size(0), min(self.knn_k, e_item.size(0))
        _, idx = topk_cosine(e_item.detach(), k, loop=True, batch_size=self.knn_block_size)  # [I, k], no grad
        en = F.normalize(e_item, dim=1)
        vals = torch.einsum("nd,nkd->nk", en, en[idx]).clamp_min(0.0)  # kept cosines, with grad  [I, k]
        vals = vals / (vals.sum(dim=1, keepdim=True) + 1e-8)  # row-normalise
        target = torch.arange(n, device=e_item.device).repeat_interleave(k)
        return torch.stack([idx.reshape(-1), target]), vals.reshape(-1)

    def refined(self, data: HeteroData, ops: UserOps) -> dict[str, Tensor]:
        r"""RCA over the stacked users and items: :math:`X_m^{(R)}` ``{m: [N, d]}``."""
        return self.rca(self.entity_features(data, ops))

    def item_graph(self, data: HeteroData, ops: UserOps,
                   xs: dict[str, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        r"""The item–item graph :math:`\hat S` from the item rows of the RCA output ``xs`` (computed
        here when not given); with gradient under grad mode."""
        xs = self.refined(data, ops) if xs is None else xs
        items = {m: xs[m][self.num_users:] for m in self.graph_modalities}  # [I, d] each
        if self.item_graph_fusion == "concat":
            return self._knn(torch.cat([items[m] for m in self.graph_modalities], dim=1))  # [I, M·d]
        if self.item_graph_fusion == "sum":
            return self._knn(sum(items[m] for m in self.graph_modalities))  # type: ignore[arg-type]
        parts = [self._knn(items[m]) for m in self.graph_modalities]  # graph_avg: mean of row-normalised graphs
        w = 1.0 / len(parts)
        return torch.cat([p[0] for p in parts], dim=1), torch.cat([p[1] * w for p in parts])

    def item_features(self, xs: dict[str, Tensor]) -> Tensor:
        r""":math:`\mathbf{f}_I = \alpha\,\mathrm{norm}(E_I W_f)` ``[I, d]`` from the RCA output ``xs``."""
        e_item = torch.cat([xs[m][self.num_users:] for m in self.modalities], dim=1)  # [I, M·d]
        return self.feat_scale * F.normalize(self.feat_proj(e_item), dim=1)

    def _semantic_graph(self, data: HeteroData, ops: UserOps, xs: dict[str, Tensor] | None):
        cache = data.get(CACHE_ATTR)
        if cache is None:  # evaluation / a plain forward: one build under the caller's grad mode
            return self.item_graph(data, ops, xs)
        return cache.get("item", lambda: self.item_graph(data, ops, xs), self.num_items)

    def views(self, data: HeteroData) -> dict[str, Tensor]:
        r"""Both views: ``ui_user, ui_item`` (:math:`\mathbf{e}^{UI}`) and ``ii_user, ii_item`` (:math:`\mathbf{e}^{II}`)."""
        e_u, e_i = self.collaborative(data)
        ops = data.get(OPS_ATTR)
        if ops is None:
            ops = self.user_ops(data[UI].edge_index)
        xs = self.refined(data, ops) if self.uses_features else None  # every batch, with gradient
        h = e_i  # h^(0) = e^UI_I, not detached
        if self.uses_features:
            h = h + self.item_features(xs)  # type: ignore[arg-type]
        if self.uses_item_graph:
            edge_index, edge_weight = self._semantic_graph(data, ops, xs)
            for _ in range(self.num_ii_layers):
                h = self.item_conv(h, edge_index, edge_weight)  # [I, d]
        ii_user = _spmm(ops.mean, ops.mean_t, h)  # mean over the user's training items  [U, d]
        return {"ui_user": e_u, "ui_item": e_i, "ii_user": ii_user, "ii_item": h}

    def _fuse(self, v: dict[str, Tensor]) -> dict[str, Tensor]:
        if self.variant == "no_dual_fusion":  # late fusion: score = <e^UI_u, e^UI_i> + <e^II_u, e^II_i>
            return {"user": torch.cat([v["ui_user"], v["ii_user"]], 1), "item": torch.cat([v["ui_item"], v["ii_item"]], 1)}
        return {"user": v["ui_user"] + v["ii_user"], "item": v["ui_item"] + v["ii_item"]}

    # ------------------------------------------------------------ contract
    def forward(self, data: HeteroData) -> dict[str, Tensor]:
        return self._fuse(self.views(data))

    def loss(self, data: HeteroData, batch: BPRBatch) -> dict[str, Tensor]:
        v = self.views(data)
        users, pos, neg = batch.users, batch.pos_items, batch.neg_items
        if self.variant == "no_dual_fusion":  # each view with its own ranking loss
            bpr = sum(bpr_loss((v[f"{s}_user"][users] * v[f"{s}_item"][pos]).sum(-1),
                               (v[f"{s}_user"][users] * v[f"{s}_item"][neg]).sum(-1)) for s in ("ui", "ii"))
        else:
            emb = self._fuse(v)
            u = emb["user"][users]  # [B, d]
            bpr = bpr_loss((u * emb["item"][pos]).sum(-1), (u * emb["item"][neg]).sum(-1))
        reg = l2_reg(self.user_emb(users), self.item_emb(pos), self.item_emb(neg))
        out = {"bpr": bpr, "reg": reg}
        total = bpr + self.reg_weight * reg
        uu, ii = torch.unique(users), torch.unique(pos)  # contrastive alignment of the two views (eq. 18)
        out["cl_user"] = info_nce(v["ui_user"][uu], v["ii_user"][uu], self.temperature)
        out["cl_item"] = info_nce(v["ui_item"][ii], v["ii_item"][ii], self.temperature)
        if self.cl_weight:
            total = total + self.cl_weight * (out["cl_user"] + out["cl_item"])
        out["loss"] = total  # type: ignore[assignment]
        return out  # type: ignore[return-value]

    def train_graph(self, data: HeteroData, epoch: int) -> HeteroData:
        """A copy of ``data`` with this epoch's DropEdge sample, the full graph's user operators and a graph cache."""
        ei = data[UI].edge_index  # full training graph [2, E]
        gen = torch.Generator(device=ei.device).manual_seed(self.dropedge_seed + epoch)
        if self.dropedge == "bernoulli":
            out = with_ui_graph(data, *degree_drop_edge(ei, self.num_users, self.num_items, self.dropedge_scale, gen))
        elif self.dropedge == "fixed":
            out = with_ui_graph(data, *degree_sample_edges(ei, self.num_users, self.num_items,
                                                           self.dropedge_keep, gen))
        else:
            out = copy.copy(data)
        setattr(out, OPS_ATTR, self.user_ops(ei))
        setattr(out, CACHE_ATTR, EpochGraphCache(self.graph_refresh))
        return out

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", variant={self.variant!r}, num_ui_layers={self.num_ui_layers}, "
                f"num_ii_layers={self.num_ii_layers}, knn_k={self.knn_k}, user_profile={self.user_profile!r}, "
                f"graph_refresh={self.graph_refresh!r}, ui_conv={self.ui_conv!r}, dropedge={self.dropedge!r}, "
                f"semantic_input={self.semantic_input!r}")
