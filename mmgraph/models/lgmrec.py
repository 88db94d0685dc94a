"""LGMRec: local (collaborative + modality) graph embeddings plus global hypergraph embeddings."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import HeteroData

from mmgraph.graph.build import GraphSpec
from mmgraph.models.base import GraphRecommender, edge_inputs, resolve_modalities
from mmgraph.models.lightgcn import LightGCN
from mmgraph.nn.conv import SoftHypergraphConv
from mmgraph.nn.losses import emb_loss
from mmgraph.typing import ITEM, IU, UI, USER, BPRBatch


def info_nce_full(anchor: Tensor, candidates: Tensor, index: Tensor, temperature: float,
                  factors: tuple[Tensor, Tensor] | None = None) -> Tensor:
    r"""InfoNCE of ``anchor`` rows against **all** rows of ``candidates``, summed over the batch.

    .. math::
        -\sum_b \log \frac{\exp(\cos(a_b, c_{idx_b})/\tau)}{\sum_{n} \exp(\cos(a_b, c_n)/\tau)}

    (LGMRec's ``ssl_triple_loss``: the positive of anchor ``b`` is row ``index[b]`` of the
    candidate table, every row of the table is in the denominator, the positive included).
    Computed as a cross-entropy over the ``[B, N]`` logits (log-sum-exp, no overflow).

    ``factors = (L [N, K], R [K, d])`` with ``candidates == L @ R`` (a low-rank table, e.g.
    hypergraph outputs ``H Λ``) computes the logits as ``((â/τ) Rᵀ)(diag(1/‖c_n‖) L)ᵀ``: the
    same values with ``B·N·K`` instead of ``B·N·d`` multiply-adds.
    """
    a = F.normalize(anchor, dim=1) / temperature  # [B, d]; 1/τ folded into the anchors
    inv = 1.0 / torch.linalg.vector_norm(candidates, dim=1).clamp_min(1e-12)  # F.normalize's eps
    if factors is None:
        logits = a @ (candidates * inv.unsqueeze(1)).t()
    else:
        left, right = factors
        logits = (a @ right.t()) @ (left * inv.unsqueeze(1)).t()  # [B, K] @ [K, N]
    return F.cross_entropy(logits, index, reduction="sum")


class LGMRec(GraphRecommender):
    r"""LGMRec from `"LGMRec: Local and Global Graph Learning for Multimodal Recommendation"
    <https://arxiv.org/abs/2312.16400>`_ (AAAI'24), as MMRec's ``LGMRec``.

    **Local embeddings.** Collaborative (CGE): LightGCN layer mean of the ID embeddings on
    :math:`\hat A` (a :class:`~mmgraph.models.LightGCN` submodule; ``cf_model='mf'``: the ID
    embeddings themselves). Modality (MGE), per modality :math:`m`: item features
    :math:`\mathbf{f}^m_I = \mathbf{X}_m \mathbf{W}_m` (raw features frozen), user features the
    mean over their items :math:`\mathbf{f}^m_U = D_u^{-1} R\, \mathbf{f}^m_I`, then
    ``num_mm_layers`` steps :math:`[\mathbf{f}_U; \mathbf{f}_I] \leftarrow \hat A
    [\mathbf{f}_U; \mathbf{f}_I]` (last layer, no mean).
    :math:`\mathbf{E}^{loc} = \mathbf{E}^{CGE} + \sum_m \mathrm{normalize}(\mathbf{E}^{MGE}_m)`.

    **Global embeddings.** Per modality soft incidences of the nodes to :math:`K` hyperedges,

    .. math::
        \mathbf{H}^m_I = \mathrm{GumbelSoftmax}_\tau(\mathbf{X}_m \mathbf{V}_m), \qquad
        \mathbf{H}^m_U = \mathrm{GumbelSoftmax}_\tau(R\,\mathbf{X}_m \mathbf{V}_m)

    (row-wise, :math:`R` the binary interaction matrix), both with dropout
    :math:`p = 1 - \text{keep\_rate}`; per hypergraph layer
    (:class:`~mmgraph.nn.conv.SoftHypergraphConv`)
    :math:`\boldsymbol\Lambda = \mathbf{H}_I^\top \mathbf{E}_I`,
    :math:`\mathbf{E}_I \leftarrow \mathbf{H}_I \boldsymbol\Lambda`,
    :math:`\mathbf{E}_U = \mathbf{H}_U \boldsymbol\Lambda`, starting from the CGE item embeddings;
    :math:`\mathbf{E}^{glo} = \sum_m [\mathbf{E}^m_U; \mathbf{E}^m_I]`. Final embeddings
    :math:`\mathbf{E} = \mathbf{E}^{loc} + \alpha\,\mathrm{normalize}(\mathbf{E}^{glo})`,
    :math:`\hat y_{ui} = \mathbf{e}_u^\top \mathbf{e}_i`.

    **Loss.** :math:`-\mathrm{mean}\log\sigma(\hat y_{ui} - \hat y_{uj}) + \mu\,\mathcal{L}_{HCL}
    + \lambda\,\mathrm{EmbLoss}(\mathbf{e}_u, \mathbf{e}_i, \mathbf{e}_j)` with, for every pair of
    modalities :math:`a` before :math:`b` in ``modalities`` (MMRec: image slot, then text slot),
    :math:`\mathcal{L}_{HCL} = \mathrm{NCE}(\mathbf{E}^a_U[u], \mathbf{E}^b_U) +
    \mathrm{NCE}(\mathbf{E}^a_I[i], \mathbf{E}^b_I)` (:func:`info_nce_full`: temperature
    :math:`\tau`, all users / all items as negatives, summed over the batch; the candidates have
    rank :math:`\le K`, so the ``[B, N]`` logits are computed from the factors
    :math:`\mathbf{H}^b \boldsymbol\Lambda_b`).

    Init as MMRec: Xavier-uniform ID embeddings, :math:`\mathbf{W}_m` and :math:`\mathbf{V}_m`.
    :math:`R\,\mathbf{y}` and :math:`D_u^{-1}R\,\mathbf{y}` are computed with the stored
    :math:`\hat A = D_u^{-1/2} R D_i^{-1/2}` as :math:`D_u^{1/2}\hat A D_i^{1/2}\mathbf{y}` and
    :math:`D_u^{-1/2}\hat A D_i^{1/2}\mathbf{y}` (degrees from the train edges), so no other
    sparse matrix is built; nothing of size :math:`N \times N` is formed.

    **Differences from MMRec.** (1) Stochastic parts only in training: in ``eval`` mode the
    incidences are :math:`\mathrm{softmax}(\mathbf{z}/\tau)` (the Gumbel-softmax with the noise
    at any constant value, e.g. its median; MMRec also samples the Gumbel noise at evaluation)
    and the dropout is off (as MMRec), so evaluation is deterministic. (2) Evaluation always
    uses a fresh :meth:`forward`, never embeddings cached from the last training batch.
    (3) Any number of modalities: MMRec handles exactly an image and a text modality (with one
    it falls back to CGE in ``forward`` and fails in the loss); here every modality gets an MGE
    and a hypergraph branch, and the contrastive term runs over the ordered pairs (none with
    one modality).

    MMRec names: ``embedding_size`` → ``embedding_dim``, ``feat_embed_dim``, ``cf_model``,
    ``keep_rate``, ``alpha``, ``cl_weight``, ``reg_weight`` unchanged, ``n_ui_layers`` →
    ``num_ui_layers``, ``n_mm_layers`` → ``num_mm_layers``, ``n_hyper_layer`` →
    ``num_hyper_layers``, ``hyper_num`` → ``num_hyperedges``, the hard-coded ``tau = 0.2`` →
    ``temperature``; the image/text slots → the order of ``modalities``. Defaults: the active
    (Baby) block of MMRec's ``LGMRec.yaml``.

    Args:
        num_users: number of users.
        num_items: number of items.
        modality_dims: feature size of every modality (passed by the pipeline).
        embedding_dim: ID embedding size. (default: ``64``)
        feat_embed_dim: size of the modality features; must equal ``embedding_dim``. (default: ``64``)
        cf_model: ``'lightgcn'`` or ``'mf'`` (CGE without propagation). (default: ``'lightgcn'``)
        num_ui_layers: LightGCN layers of CGE. (default: ``2``)
        num_mm_layers: propagation steps of MGE. (default: ``2``)
        num_hyper_layers: hypergraph layers. (default: ``1``)
        num_hyperedges: hyperedges ``K`` per modality. (default: ``4``)
        keep_rate: ``1 −`` dropout of the incidences (training only). (default: ``0.5``)
        alpha: weight of the global embeddings. (default: ``0.3``)
        cl_weight: weight ``μ`` of the hypergraph contrastive loss. (default: ``1e-4``)
        reg_weight: weight ``λ`` of EmbLoss. (default: ``1e-6``)
        temperature: ``τ`` of the Gumbel-softmax and of InfoNCE. (default: ``0.2``)
        modalities: modalities in order (``None``: all of ``modality_dims``, dataset order); the
            order sets the direction of the contrastive terms; ``'reference_slots'``: [image slot, text
            slot] (see :func:`~mmgraph.models.base.resolve_modalities`). (default: ``None``)
        graph: graph spec (default: the ``'sym'``-normalised user–item graph).
    """

    required_edge_types = (UI, IU)

    def __init__(self, num_users: int, num_items: int, *, modality_dims: dict[str, int],
                 embedding_dim: int = 64, feat_embed_dim: int = 64, cf_model: str = "lightgcn",
                 num_ui_layers: int = 2, num_mm_layers: int = 2, num_hyper_layers: int = 1,
                 num_hyperedges: int = 4, keep_rate: float = 0.5, alpha: float = 0.3,
                 cl_weight: float = 1e-4, reg_weight: float = 1e-6, temperature: float = 0.2,
                 modalities: list[str] | str | None = None, graph: GraphSpec | None = None) -> None:
        super().__init__(num_users, num_items, embedding_dim=embedding_dim, graph=graph)
        if cf_model not in ("lightgcn", "mf"):
            raise ValueError(f"cf_model must be 'lightgcn' or 'mf', got {cf_model!r}")
        if feat_embed_dim != embedding_dim:
            raise ValueError(f"local embeddings add CGE and MGE: feat_embed_dim ({feat_embed_dim}) "
                             f"must equal embedding_dim ({embedding_dim})")
        if not 0.0 < keep_rate <= 1.0:
            raise ValueError(f"keep_rate must be in (0, 1], got {keep_rate}")
        if num_mm_layers < 0 or num_hyper_layers < 1 or num_hyperedges < 1:
            raise ValueError("num_mm_layers must be >= 0, num_hyper_layers and num_hyperedges >= 1")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if self.graph_spec.ui_norm != "sym":
            raise ValueError("LGMRec propagates on LightGCN's graph: graph.ui_norm must be 'sym'")
        mods = resolve_modalities("LGMRec", modality_dims, modalities)
        self.modalities = mods
        self.required_modalities = tuple(mods)  # type: ignore[misc]
        self.cf_model = cf_model
        self.num_mm_layers = num_mm_layers
        self.num_hyper_layers = num_hyper_layers
        self.num_hyperedges = num_hyperedges
        self.keep_rate = keep_rate
        self.alpha = alpha
        self.cl_weight = cl_weight
        self.reg_weight = reg_weight
        self.temperature = temperature
        self.backbone = LightGCN(num_users, num_items, embedding_dim=embedding_dim,
                                 num_layers=num_ui_layers if cf_model == "lightgcn" else 0, reg_weight=0.0)
        self.feat_trs = torch.nn.ParameterDict(
            {m: torch.nn.Parameter(torch.empty(int(modality_dims[m]), feat_embed_dim)) for m in mods})
        self.hyper = torch.nn.ParameterDict(
            {m: torch.nn.Parameter(torch.empty(int(modality_dims[m]), num_hyperedges)) for m in mods})
        self.hconv = SoftHypergraphConv()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform everywhere (MMRec)."""
        self.backbone.reset_parameters()
        for p in (*self.feat_trs.values(), *self.hyper.values()):
            torch.nn.init.xavier_uniform_(p)

    # ------------------------------------------------------------------ graph helpers
    def _a_hat_items_to_users(self, data: HeteroData, y: Tensor) -> Tensor:
        """``Â y`` for item rows ``y [I, F]`` → ``[U, F]``."""
        iu, iu_w = edge_inputs(data, IU)
        ui, _ = edge_inputs(data, UI)
        return self.backbone.conv((y, None), iu, iu_w, size=(self.num_items, self.num_users),
                                  adj_rev=ui if iu_w is None else None)

    def _a_hat_users_to_items(self, data: HeteroData, y: Tensor) -> Tensor:
        """``Âᵀ y`` for user rows ``y [U, F]`` → ``[I, F]``."""
        ui, ui_w = edge_inputs(data, UI)
        iu, _ = edge_inputs(data, IU)
        return self.backbone.conv((y, None), ui, ui_w, size=(self.num_users, self.num_items),
                                  adj_rev=iu if ui_w is None else None)

    def _sqrt_degrees(self, data: HeteroData) -> tuple[Tensor, Tensor]:
        ei, dtype = data[UI].edge_index, self.backbone.user_emb.weight.dtype
        du = torch.bincount(ei[0], minlength=self.num_users).to(dtype)
        di = torch.bincount(ei[1], minlength=self.num_items).to(dtype)
        return du.sqrt(), di.sqrt()

    def _incidence(self, logits: Tensor) -> Tensor:
        """Gumbel-softmax + dropout in training; the noise-free ``softmax(z/τ)`` in eval."""
        if self.training:
            h = F.gumbel_softmax(logits, tau=self.temperature, hard=False, dim=1)
        else:
            h = torch.softmax(logits / self.temperature, dim=1)
        return F.dropout(h, 1.0 - self.keep_rate, training=self.training)

    # ------------------------------------------------------------------ model
    def embed(self, data: HeteroData) -> tuple[Tensor, Tensor, dict[str, tuple[Tensor, ...]]]:
        """``(E_U [U, d], E_I [I, d], hyper)``.

        ``hyper[m] = (E^m_U [U, d], E^m_I [I, d], H^m_U [U, K], H^m_I [I, K], Λ [K, d])``: the
        modality's hypergraph embeddings, with ``E^m_U = H^m_U Λ`` and ``E^m_I = H^m_I Λ`` (last layer).
        """
        U = self.num_users
        u_cge, i_cge = self.backbone.propagate(data, self.backbone.user_emb.weight,
                                               self.backbone.item_emb.weight)
        sq_u, sq_i = self._sqrt_degrees(data)
        inv_sq_u = torch.where(sq_u > 0, 1.0 / sq_u, torch.zeros_like(sq_u)).view(-1, 1)
        local = torch.cat([u_cge, i_cge])  # [U + I, d]
        glob = None
        hyper: dict[str, tuple[Tensor, ...]] = {}
        for m in self.modalities:
            x = data[ITEM][f"x_{m}"]  # [I, F_m], frozen
            # MGE: f_I = X W, f_U = D_u^{-1} R f_I = D_u^{-1/2} Â D_i^{1/2} f_I, then Â^L (last layer)
            f_i = x @ self.feat_trs[m]
            f_u = inv_sq_u * self._a_hat_items_to_users(data, sq_i.view(-1, 1) * f_i)
            for _ in range(self.num_mm_layers):
                f_u, f_i = self._a_hat_items_to_users(data, f_i), self._a_hat_users_to_items(data, f_u)
            local = local + F.normalize(torch.cat([f_u, f_i]), dim=1)
            # HG: soft incidences H_I = GS(X V), H_U = GS(R X V), R z = D_u^{1/2} Â D_i^{1/2} z
            z_i = x @ self.hyper[m]  # [I, K]
            z_u = sq_u.view(-1, 1) * self._a_hat_items_to_users(data, sq_i.view(-1, 1) * z_i)
            h_i, h_u = self._incidence(z_i), self._incidence(z_u)
            h_out = torch.cat([h_u, h_i])  # [U + I, K]: users' and items' outputs from one Λ
            e_i = i_cge
            for _ in range(self.num_hyper_layers):  # [H_U; H_I] (H_Iᵀ E_I), keeping Λ
                lam = self.hconv.to_hyperedges(e_i, h_i)  # [K, d]
                out = self.hconv.to_nodes(lam, h_out)
                e_u, e_i = out[:U], out[U:]
            hyper[m] = (e_u, e_i, h_u, h_i, lam)
            glob = out if glob is None else glob + out
        final = local if glob is None else local + self.alpha * F.normalize(glob, dim=1)
        return final[:U], final[U:], hyper

    def forward(self, data: HeteroData) -> dict[str, Tensor]:
        u, i, _ = self.embed(data)
        return {USER: u, ITEM: i}

    def loss(self, data: HeteroData, batch: BPRBatch) -> dict[str, Tensor]:
        u_all, i_all, hyper = self.embed(data)
        u = u_all[batch.users]  # [B, d]
        i = i_all[batch.pos_items]
        j = i_all[batch.neg_items]
        bpr = -F.logsigmoid((u * i).sum(-1) - (u * j).sum(-1)).mean()
        reg = emb_loss(u, i, j)
        cl = torch.zeros((), device=bpr.device)
        for a_idx, a in enumerate(self.modalities):
            for b in self.modalities[a_idx + 1:]:
                ua, ia = hyper[a][:2]
                ub, ib, hub, hib, lam_b = hyper[b]
                # candidates E^b = H^b Λ_b have rank <= K: factored logits (same values, d/K fewer flops)
                cl = cl + info_nce_full(ua[batch.users], ub, batch.users, self.temperature, (hub, lam_b))
                cl = cl + info_nce_full(ia[batch.pos_items], ib, batch.pos_items, self.temperature,
                                        (hib, lam_b))
        loss = bpr + self.cl_weight * cl + self.reg_weight * reg
        return {"loss": loss, "bpr": bpr, "cl": cl, "reg": reg}

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", cf_model={self.cf_model}, num_ui_layers={self.backbone.num_layers}, "
                f"num_mm_layers={self.num_mm_layers}, num_hyper_layers={self.num_hyper_layers}, "
                f"num_hyperedges={self.num_hyperedges}, modalities={self.modalities}")
