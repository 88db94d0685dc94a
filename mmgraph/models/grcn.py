"""GRCN: a user–item graph refined by modality-specific attention, then a weighted GCN on ID embeddings."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import HeteroData

from mmgraph.graph.build import GraphSpec
from mmgraph.models.base import GraphRecommender, resolve_modalities
from mmgraph.models.mmgcn import bpr_and_id_reg, mmrec_modality_order, visual_slot
from mmgraph.nn.conv import BipartiteLGConv
from mmgraph.nn.conv.grcn_conv import GRCNConv
from mmgraph.typing import ITEM, IU, UI, BPRBatch


def _structure(data: HeteroData, edge_type) -> Tensor:
    """The relation's ``torch.sparse_csr`` ``adj_t`` when the data layer stored one (fast path), else its edge list."""
    store = data[edge_type]
    return store.adj_t if "adj_t" in store else store.edge_index


def _sources(structure: Tensor) -> Tensor:
    """Source node of every edge, in the order :class:`GRCNConv` returns the attention."""
    return structure.col_indices() if structure.layout == torch.sparse_csr else structure[0]


def _edge_list(structure: Tensor) -> Tensor:
    """``[2, E]`` (source, destination) in the order :class:`GRCNConv` returns the attention."""
    if structure.layout == torch.sparse_csr:
        crow = structure.crow_indices()
        rows = torch.repeat_interleave(torch.arange(crow.numel() - 1, device=crow.device), crow.diff())
        return torch.stack([structure.col_indices(), rows])
    return structure


class GRCN(GraphRecommender):
    r"""GRCN from `"Graph-Refined Convolutional Network for Multimedia Recommendation with
    Implicit Feedback" <https://arxiv.org/abs/2008.00210>`_ (ACM MM'20), as MMRec's ``GRCN``
    (``weight_mode='confid'``, ``fusion_mode='concat'``, ``pruning=True``, ``has_norm=True``,
    ``has_act=False``, ``aggr_mode='add'``, edge dropout 0).

    **Graph refining (per modality** :math:`m`, ``CGCN``**).** Items
    :math:`\mathbf{f}_i = \mathrm{normalize}(\phi(\mathbf{W}_m\mathbf{x}_{m,i} + \mathbf{b}_m))`
    (LeakyReLU :math:`\phi`, ``latent_dim``-wide), users :math:`\mathbf{p}_u =
    \mathrm{normalize}(\mathbf{P}_{m,u})`. :class:`~mmgraph.nn.conv.GRCNConv` on both directions
    of the user–item graph gives the per-edge attention :math:`\alpha^m_{sd} =
    \mathrm{softmax}_{s \in \mathcal{N}(d)} \langle \mathbf{x}_d, \mathbf{x}_s\rangle` and the
    content representation :math:`\mathbf{c}^m = \mathbf{x} + \sum_s \alpha^m_{sd}\mathbf{x}_s`.

    **Edge weights.** :math:`w_{sd} = \mathrm{ReLU}(\max_m \alpha^m_{sd}\,\kappa_{s,m})` with a
    learned per-node, per-modality confidence :math:`\kappa` of the edge's **source** node
    (MMRec concatenates ``conf[edge_index[0]]`` and ``conf[edge_index[1]]`` against the two
    edge directions); the ReLU prunes the edges with negative affinity.

    **ID GCN** (``EGCN``) on :math:`\mathbf{x} = \mathrm{normalize}(\mathbf{E}^{ID})`:
    :math:`\mathbf{h}_1 = A_w \mathbf{x}`, :math:`\mathbf{h}_2 = A_w \mathbf{h}_1` (weighted sums,
    no normalisation, :class:`~mmgraph.nn.conv.BipartiteLGConv` with the weights above),
    :math:`\mathbf{e}^{id} = \mathbf{x} + \mathbf{h}_1 + \mathbf{h}_2`.
    Representation :math:`[\mathbf{e}^{id}; \mathbf{c}^{m_1}; \dots; \mathbf{c}^{m_K}]`
    (``d + K·latent_dim``), :math:`\hat y_{ui} = \mathbf{e}_u^\top\mathbf{e}_i`.

    **Routing.** GRCN's ``num_routing`` rounds are meant to update the user preferences,
    :math:`\mathbf{p} \leftarrow \mathrm{normalize}(\mathbf{p} + \sum_i \alpha_{iu}\mathbf{f}_i)`.
    In the reference code and in MMRec the rounds propagate over the train edges as stored,
    ``(user, item)``, so with PyG's source-to-target flow the messages reach the **items** and the
    user rows of the result are zero: the rounds leave :math:`\mathbf{p} = \mathrm{normalize}(\mathbf{P})`.
    ``user_routing=False`` (default) reproduces that (and skips the no-op computation);
    ``user_routing=True`` runs the rounds as the paper describes (users attend over their items).

    **Loss** (MMRec, ``logsigmoid`` for its ``log(sigmoid)``):
    :math:`-\mathrm{mean}\log\sigma(\hat y_{ui} - \hat y_{uj}) + \lambda\,[\mathrm{mean}(
    \mathbf{E}^{ID}[u]^2 + \mathbf{E}^{ID}[i]^2) + \mathrm{mean}(\mathbf{P}_v^2) + \sum_m
    \mathrm{mean}(\mathbf{P}_m[u]^2)]` over the ``2B`` (user, item) rows of the positive and
    negative pairs; the whole-table term :math:`\mathbf{P}_v` is the visual slot's only
    (MMRec; :func:`~mmgraph.models.mmgcn.visual_slot`). The confidence is not regularised
    (MMRec computes ``reg_confid_loss`` and drops it).

    **Deliberate difference from MMRec:** evaluation runs a fresh :meth:`forward`; MMRec ranks
    with the representation cached by the last training batch.

    MMRec names: ``embedding_size`` → ``embedding_dim``, ``latent_embedding`` → ``latent_dim``,
    ``n_layers`` → ``num_routing``, ``reg_weight`` → ``reg_weight``; ``model_specific_conf`` →
    ``confidence``. Its ``learning_rate`` grid ``[1, 0.1, ...]`` is a trainer setting.
    Initialisation as MMRec: Xavier-normal ID embeddings, preferences, confidence and MLP
    weights (of the ``(U+I)×d``, ``U×C``, ``(U+I)×K`` tables).

    Args:
        num_users: number of users.
        num_items: number of items.
        modality_dims: feature size of every modality (passed by the pipeline).
        embedding_dim: ID embedding size. (default: ``64``)
        latent_dim: size of the content representations. (default: ``64``)
        num_routing: routing rounds (only with ``user_routing``). (default: ``3``)
        reg_weight: weight :math:`\lambda` (MMRec grid ``[0.1, 0.01, ..., 1e-5]``). (default: ``0.1``)
        user_routing: run the routing rounds towards the users (paper) instead of MMRec's
            no-op. (default: ``False``)
        modalities: modalities to use, in order (default: all, in MMRec's slot order).
        graph: graph spec (default: the user–item graph; its weights are not used).
    """

    required_edge_types = (UI, IU)

    def __init__(self, num_users: int, num_items: int, *, modality_dims: dict[str, int],
                 embedding_dim: int = 64, latent_dim: int = 64, num_routing: int = 3, reg_weight: float = 0.1,
                 user_routing: bool = False, modalities: list[str] | None = None,
                 graph: GraphSpec | None = None) -> None:
        super().__init__(num_users, num_items, embedding_dim=embedding_dim,
                         graph=graph if graph is not None else GraphSpec(ui_norm="none"))
        if num_routing < 0:
            raise ValueError(f"num_routing must be >= 0, got {num_routing}")
        mods = resolve_modalities("GRCN", modality_dims, modalities,
                                  default=mmrec_modality_order(modality_dims))
        self.modalities = mods
        self.latent_dim = latent_dim
        self.num_routing = num_routing
        self.reg_weight = reg_weight
        self.user_routing = user_routing
        self.visual = visual_slot(mods)
        self.required_modalities = tuple(mods)  # type: ignore[misc]
        self.id_embedding = torch.nn.Parameter(torch.empty(num_users + num_items, embedding_dim))
        self.preference = torch.nn.ParameterDict(
            {m: torch.nn.Parameter(torch.empty(num_users, latent_dim)) for m in mods})
        self.mlp = torch.nn.ModuleDict({m: torch.nn.Linear(int(modality_dims[m]), latent_dim) for m in mods})
        self.confidence = torch.nn.Parameter(torch.empty(num_users + num_items, len(mods)))
        self.att_conv = GRCNConv()
        self.id_conv = BipartiteLGConv()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """MMRec's initialisation (Xavier-normal tables and MLP weights, default MLP biases)."""
        with torch.no_grad():
            torch.nn.init.xavier_normal_(self.id_embedding)
            torch.nn.init.xavier_normal_(self.confidence)
            for m in self.modalities:
                torch.nn.init.xavier_normal_(self.preference[m])
                self.mlp[m].reset_parameters()
                torch.nn.init.xavier_normal_(self.mlp[m].weight)

    def forward(self, data: HeteroData) -> dict[str, Tensor]:
        U, I = self.num_users, self.num_items
        ui, iu = _structure(data, UI), _structure(data, IU)  # user -> item, item -> user
        att_ui, att_iu, content_u, content_i = [], [], [], []
        for m in self.modalities:
            f = F.normalize(F.leaky_relu(self.mlp[m](data[ITEM][f"x_{m}"])), dim=1)  # [I, C]
            p = F.normalize(self.preference[m], dim=1)  # [U, C]
            if self.user_routing:
                for _ in range(self.num_routing):
                    p = F.normalize(p + self.att_conv((f, p), iu, size=(I, U)), dim=1)
            out_i, a_ui = self.att_conv((p, f), ui, size=(U, I), return_attention_weights=True)
            out_u, a_iu = self.att_conv((f, p), iu, size=(I, U), return_attention_weights=True)
            content_u.append(p + out_u)
            content_i.append(f + out_i)
            att_ui.append(a_ui)
            att_iu.append(a_iu)
        conf_u, conf_i = self.confidence.split([U, I])
        # refined weights: ReLU(max_m alpha_m * confidence_m of the edge's source node)
        w_ui = torch.relu((torch.stack(att_ui, 1) * conf_u[_sources(ui)]).max(1).values)  # [E]
        w_iu = torch.relu((torch.stack(att_iu, 1) * conf_i[_sources(iu)]).max(1).values)
        # learned weights: the edge-list path of BipartiteLGConv (gradients per edge, no dense matrix)
        e_ui, e_iu = _edge_list(ui), _edge_list(iu)
        x_u, x_i = F.normalize(self.id_embedding, dim=1).split([U, I])
        h1_u = self.id_conv((x_i, None), e_iu, w_iu, size=(I, U))
        h1_i = self.id_conv((x_u, None), e_ui, w_ui, size=(U, I))
        h2_u = self.id_conv((h1_i, None), e_iu, w_iu, size=(I, U))
        h2_i = self.id_conv((h1_u, None), e_ui, w_ui, size=(U, I))
        user = torch.cat([x_u + h1_u + h2_u, *content_u], dim=1)
        item = torch.cat([x_i + h1_i + h2_i, *content_i], dim=1)
        return {"user": user, "item": item}

    def loss(self, data: HeteroData, batch: BPRBatch) -> dict[str, Tensor]:
        bpr, reg = bpr_and_id_reg(self(data), self.id_embedding, self.num_users, batch)
        if self.visual is not None:
            reg = reg + self.preference[self.visual].pow(2).mean()
        for m in self.modalities:
            reg = reg + self.preference[m][batch.users].pow(2).mean()
        return {"loss": bpr + self.reg_weight * reg, "bpr": bpr, "reg": reg}

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", modalities={self.modalities}, latent_dim={self.latent_dim}, "
                f"reg_weight={self.reg_weight}, user_routing={self.user_routing}")
