"""DualGNN: per-modality user–item GCNs fused per user, plus a user co-occurrence graph."""

from __future__ import annotations

import copy
import math

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
from mmgraph.typing import ITEM, IU, UI, USER, UU, BPRBatch


def mmrec_padded_user_graph(data: HeteroData, k: int, generator: torch.Generator | None = None) -> HeteroData:
    r"""The user–user graph with MMRec's random padding (DualGNN's ``topk_sample``), as a new ``HeteroData``.

    MMRec keeps each user's first ``k`` co-occurrence neighbours; a user with ``0 < n < k``
    of them gets its list padded to ``k`` by repeatedly appending an entry drawn uniformly from
    the list **as grown so far** (a Pólya urn), and the weights are the softmax of the counts
    over the padded list. A neighbour appearing :math:`m_j` times therefore weighs
    :math:`m_j e^{c_j} / \sum_{j'} m_{j'} e^{c_{j'}} = m_j w_j / \sum_{j'} m_{j'} w_{j'}` with
    :math:`w` the unpadded softmax weights that ``data[UU]`` holds
    (``GraphSpec(user_knn_norm='softmax')``). Users with ``n >= k`` or ``n = 0`` are unchanged.
    ``data`` is not modified: the result is a shallow copy with new ``UU`` weights and ``adj_t``.

    Args:
        data: graph with the softmax-normalised co-interaction ``UU`` edges.
        k: list length (MMRec's ``self.k = 40``).
        generator: random generator (default: torch's global one).
    """
    ei, w = data[UU].edge_index, data[UU].edge_weight
    U, dev = data[USER].num_nodes, w.device
    pos = torch.nonzero(w > 0).view(-1)  # the real neighbour edges
    tgt = ei[1, pos]
    order = torch.argsort(tgt, stable=True)
    pos, tgt = pos[order], tgt[order]
    n = torch.bincount(tgt, minlength=U)  # neighbours per user
    short = torch.nonzero((n > 0) & (n < k)).view(-1)  # the users MMRec pads
    mult = torch.ones(pos.numel(), dtype=w.dtype, device=dev)
    if short.numel():
        start = torch.cumsum(n, 0) - n  # first index of each user's edges in ``pos``
        n_s = n[short]
        first = torch.repeat_interleave(torch.cumsum(n_s, 0) - n_s, n_s)
        own = torch.repeat_interleave(start[short], n_s) + torch.arange(int(n_s.sum()), device=dev) - first
        slots = torch.full((short.numel(), k), -1, dtype=torch.long, device=dev)
        slots[torch.arange(k, device=dev).view(1, -1) < n_s.view(-1, 1)] = own  # row-major: each user's list
        length = n_s.clone()
        while True:  # at most k - 1 rounds
            active = torch.nonzero(length < k).view(-1)
            if not active.numel():
                break
            r = (torch.rand(active.numel(), generator=generator, device=dev) * length[active]).long()
            slots[active, length[active]] = slots[active, r]  # append a uniform draw of the grown list
            length[active] += 1
        cnt = torch.bincount(slots.view(-1), minlength=pos.numel()).to(w.dtype)
        mult = torch.where(cnt > 0, cnt, mult)  # multiplicity in the padded list (1 for other users)
    w_pos = w[pos] * mult
    z = torch.zeros(U, dtype=w.dtype, device=dev).index_add_(0, tgt, w_pos)
    new_w = torch.zeros_like(w)
    new_w[pos] = w_pos / z[tgt]
    out = copy.copy(data)
    out[UU].edge_weight = new_w
    out[UU].adj_t = to_adj_t(ei, new_w, U, U)
    return out


def mmrec_fusion_weights_(w: Tensor) -> Tensor:
    """MMRec's per-node modality weights, in place: Xavier-normal of an ``(N, K, 1)`` tensor
    (fan-in ``K``, fan-out ``N``), then a softmax over the ``K`` modalities."""
    std = math.sqrt(2.0 / (w.size(1) + w.size(0)))
    return w.copy_(torch.softmax(torch.randn_like(w) * std, dim=1))


def mmrec_gcn_branches(model: torch.nn.Module, num_users: int, modality_dims: dict[str, int],
                       modalities: list[str], d: int) -> None:
    """Give ``model`` the per-modality parts of MMRec's ``GCN`` (DualGNN, DRAGON, COHESION):
    ``preference[m]`` ``[U, d]``, ``mlp[m]`` ``F_m → 4d`` and ``mlp_1[m]`` ``4d → d``."""
    model.preference = torch.nn.ParameterDict(
        {m: torch.nn.Parameter(torch.empty(num_users, d)) for m in modalities})
    model.mlp = torch.nn.ModuleDict({m: torch.nn.Linear(int(modality_dims[m]), 4 * d) for m in modalities})
    model.mlp_1 = torch.nn.ModuleDict({m: torch.nn.Linear(4 * d, d) for m in modalities})


@torch.no_grad()
def reset_mmrec_gcn_branches(model: torch.nn.Module) -> None:
    """MMRec's initialisation of :func:`mmrec_gcn_branches`: Xavier-normal preferences, default ``Linear``."""
    for m in model.modalities:
        torch.nn.init.xavier_normal_(model.preference[m])
        model.mlp[m].reset_parameters()
        model.mlp_1[m].reset_parameters()


def mmrec_gcn_input(preference: Tensor, mlp: torch.nn.Linear, mlp_1: torch.nn.Linear, features: Tensor) -> Tensor:
    """The input of MMRec's per-modality ``GCN`` (DualGNN, DRAGON, MENTOR, COHESION):
    ``normalize([P; MLP_1(LeakyReLU(MLP(x)))])`` row-wise, ``[U + I, d]``."""
    temp = mlp_1(F.leaky_relu(mlp(features)))
    return F.normalize(torch.cat([preference, temp]), dim=1)


class DualGNN(GraphRecommender):
    r"""DualGNN from `"DualGNN: Dual Graph Neural Network for Multimedia Recommendation"
    <https://doi.org/10.1109/TMM.2021.3138298>`_ (IEEE TMM'21), as MMRec's ``DualGNN``
    (``construction='weighted_sum'``, ``user_aggr_mode='softmax'``, ``aggr_mode='add'``).

    **Per-modality user–item GCN.** Users get preference vectors :math:`\mathbf{P}_m`, items
    :math:`\mathrm{MLP}^{(2)}_m(\phi(\mathrm{MLP}^{(1)}_m(\mathbf{x}_m)))` (``F → 4d → d``, LeakyReLU
    :math:`\phi`); :math:`\mathbf{x} = \mathrm{normalize}([\mathbf{P}_m; \cdot])` and
    :math:`\hat{\mathbf{x}}_m = \mathbf{x} + \hat A\mathbf{x} + \hat A^2\mathbf{x}` with
    :math:`\hat A = D^{-1/2} A D^{-1/2}` (MMRec's ``Base_gcn``, applied twice: LightGCN with
    sum readout over ``num_layers = 2``; all modalities propagate as one ``K·d``-wide pass).

    **Fusion.** Items :math:`\mathbf{e}_i = \sum_m \hat{\mathbf{x}}_{m,i}`; users
    :math:`\mathbf{z}_u = \sum_m w_{u,m} \hat{\mathbf{x}}_{m,u}` with learned per-user weights
    (softmax-initialised). MMRec builds the item sum with an in-place ``+=`` on the first
    modality's tensor, which then also enters the user sum: :math:`\mathbf{z}_u = w_{u,1}
    \sum_m \hat{\mathbf{x}}_{m,u} + \sum_{m \ge 2} w_{u,m}\hat{\mathbf{x}}_{m,u}`
    (``mmrec_inplace_sum=True``, kept for fidelity; ``False`` gives the intended weighted sum).

    **User co-occurrence graph** (edge type ``UU``, built by the data layer:
    :func:`~mmgraph.graph.cointeraction_knn_graph`, each user's ``user_knn_k = 40`` users with
    most common train items, weights = softmax of the counts over the neighbours,
    ``GraphSpec(user_knn_source='interactions', user_knn_norm='softmax')``):
    :math:`\mathbf{e}_u = \mathbf{z}_u + \sum_{v} s_{uv}\mathbf{z}_v` (:class:`~mmgraph.nn.conv.KNNConv`).
    MMRec reads the same graph from ``user_graph_dict.npy`` (top-200 neighbours by count from the
    train rows, first ``k`` used); ties at the ``k``-th count may be broken differently.
    Users with fewer than ``k`` neighbours: MMRec pads their list by random repetition every
    epoch (:func:`mmrec_padded_user_graph`, applied by :meth:`train_graph` when
    ``mmrec_padding=True``); evaluation uses the unpadded softmax (deterministic).

    **Loss** (MMRec): :math:`-\mathrm{mean}\log_2\sigma(\hat y_{ui} - \hat y_{uj}) + \lambda\,[
    \sum_m \mathrm{mean}(\mathbf{P}_m[u]^2) + \mathrm{mean}(w_U^2) + \mathrm{mean}(w_I^2)]`,
    :math:`\hat y_{ui} = \mathbf{e}_u^\top\mathbf{e}_i`. The per-item weights :math:`w_I`
    exist in MMRec only for that regulariser (they enter no representation); kept for fidelity.

    **Deliberate difference from MMRec:** evaluation runs a fresh :meth:`forward`; MMRec ranks
    with ``result_embed`` cached by the last training batch.

    MMRec names: ``embedding_size`` → ``embedding_dim`` (MMRec's ``dim_latent = 64`` is
    hard-coded), ``reg_weight`` → ``reg_weight``, ``self.k`` (40) → ``user_knn_k``; ``n_layers``
    (unused there: two propagations are hard-coded) → ``num_layers = 2``; ``aggr_mode: ['add']``
    is the symmetric normalisation. Unused MMRec members (``MLP_user``, ``MLP_v``, ``MLP_t``, the
    item-drop edge lists, which its forward ignores) are absent. The ``learning_rate`` grid
    ``[0.1, ...]`` is a trainer setting. Initialisation as MMRec: Xavier-normal preferences and
    fusion weights (the latter then softmaxed), PyTorch defaults for the MLPs.

    Args:
        num_users: number of users.
        num_items: number of items.
        modality_dims: feature size of every modality (passed by the pipeline).
        embedding_dim: representation size ``d``. (default: ``64``)
        num_layers: propagations of the user–item GCN. (default: ``2``)
        user_knn_k: user co-occurrence neighbours. (default: ``40``)
        reg_weight: weight :math:`\lambda` (MMRec grid ``[0.1, 0.01, ..., 1e-5]``). (default: ``0.1``)
        mmrec_inplace_sum: reproduce MMRec's in-place sum (see above). (default: ``True``)
        mmrec_padding: pad the user lists as MMRec each training epoch. (default: ``True``)
        modalities: modalities to use, in order (default: all, in MMRec's slot order).
        graph: graph spec (default: ``'sym'`` user–item graph and the ``UU`` graph above).
    """

    def __init__(self, num_users: int, num_items: int, *, modality_dims: dict[str, int],
                 embedding_dim: int = 64, num_layers: int = 2, user_knn_k: int = 40, reg_weight: float = 0.1,
                 mmrec_inplace_sum: bool = True, mmrec_padding: bool = True,
                 modalities: list[str] | None = None, graph: GraphSpec | None = None) -> None:
        if graph is None:
            graph = GraphSpec(ui_norm="sym", user_knn_k=user_knn_k, user_knn_source="interactions",
                              user_knn_weighted=True, user_knn_norm="softmax")
        elif (graph.user_knn_k != user_knn_k or graph.user_knn_source != "interactions"
              or graph.user_knn_norm != "softmax" or not graph.user_knn_weighted or graph.ui_norm != "sym"):
            raise ValueError("DualGNN needs GraphSpec(ui_norm='sym', user_knn_k=user_knn_k, user_knn_source="
                             "'interactions', user_knn_weighted=True, user_knn_norm='softmax') (or graph=None)")
        super().__init__(num_users, num_items, embedding_dim=embedding_dim, graph=graph)
        if num_layers < 0:
            raise ValueError(f"num_layers must be >= 0, got {num_layers}")
        mods = resolve_modalities("DualGNN", modality_dims, modalities,
                                  default=mmrec_modality_order(modality_dims))
        self.modalities = mods
        self.num_layers = num_layers
        self.user_knn_k = user_knn_k
        self.reg_weight = reg_weight
        self.mmrec_inplace_sum = mmrec_inplace_sum
        self.mmrec_padding = mmrec_padding
        self.required_modalities = tuple(mods)  # type: ignore[misc]
        self.required_edge_types = (UI, IU, UU)  # type: ignore[misc]
        d, K = embedding_dim, len(mods)
        mmrec_gcn_branches(self, num_users, modality_dims, mods, d)
        self.weight_u = torch.nn.Parameter(torch.empty(num_users, K))
        self.weight_i = torch.nn.Parameter(torch.empty(num_items, K))
        self.conv = BipartiteLGConv()
        self.user_conv = KNNConv()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """MMRec's initialisation: Xavier-normal preferences; fusion weights Xavier-normal of a
        ``(N, K, 1)`` tensor, then softmax over the modalities; default ``Linear`` init."""
        with torch.no_grad():
            reset_mmrec_gcn_branches(self)
            for w in (self.weight_u, self.weight_i):
                mmrec_fusion_weights_(w)

    def _representations(self, data: HeteroData) -> tuple[Tensor, Tensor]:
        """``(z_u [U, d], e_i [I, d])``: fused users before the user graph, and items."""
        U, d = self.num_users, self.embedding_dim
        xs = []
        for m in self.modalities:
            xs.append(mmrec_gcn_input(self.preference[m], self.mlp[m], self.mlp_1[m], data[ITEM][f"x_{m}"]))
        x = torch.cat(xs, dim=1)  # all modalities in one K·d-wide propagation
        hu, hi = lightgcn_propagate(self.conv, data, x[:U], x[U:], self.num_layers, readout="sum")
        reps_u, reps_i = list(hu.split(d, dim=1)), list(hi.split(d, dim=1))
        item = sum(reps_i[1:], reps_i[0])
        if len(reps_u) == 1:
            return reps_u[0], item
        if self.mmrec_inplace_sum:
            reps_u[0] = sum(reps_u[1:], reps_u[0])  # MMRec's `representation += t_rep` aliases v_rep
        user = sum(self.weight_u[:, k : k + 1] * r for k, r in enumerate(reps_u))
        return user, item

    def forward(self, data: HeteroData) -> dict[str, Tensor]:
        z, item = self._representations(data)
        adj, w = edge_inputs(data, UU)
        return {"user": z + self.user_conv(z, adj, w), "item": item}

    def loss(self, data: HeteroData, batch: BPRBatch) -> dict[str, Tensor]:
        emb = self(data)
        u = emb["user"][batch.users]
        pos = (u * emb["item"][batch.pos_items]).sum(-1)
        neg = (u * emb["item"][batch.neg_items]).sum(-1)
        bpr = -F.logsigmoid(pos - neg).mean() / math.log(2.0)  # -mean log2 σ(Δ)
        reg = sum(self.preference[m][batch.users].pow(2).mean() for m in self.modalities)
        reg = reg + self.weight_u.pow(2).mean() + self.weight_i.pow(2).mean()
        return {"loss": bpr + self.reg_weight * reg, "bpr": bpr, "reg": reg}

    def train_graph(self, data: HeteroData, epoch: int) -> HeteroData:
        """This epoch's user graph with MMRec's random padding (``mmrec_padding``), else ``data``."""
        if not self.mmrec_padding:
            return data
        return mmrec_padded_user_graph(data, self.user_knn_k)

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", modalities={self.modalities}, user_knn_k={self.user_knn_k}, "
                f"reg_weight={self.reg_weight}, mmrec_inplace_sum={self.mmrec_inplace_sum}, "
                f"mmrec_padding={self.mmrec_padding}")
