"""MMGCN: one graph convolution network per modality over the user–item graph."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import HeteroData

from mmgraph.graph.build import GraphSpec
from mmgraph.models.base import GraphRecommender, edge_inputs, resolve_modalities
from mmgraph.nn.conv.mmgcn_conv import MMGCNConv
from mmgraph.typing import ITEM, IU, UI, BPRBatch


def mmrec_modality_order(modalities: Sequence[str]) -> list[str]:
    """The dataset's modalities in the order of MMRec's slots: visual first, text last.

    MMRec's multimodal models have a visual (``v_feat``) and a text (``t_feat``) slot and
    process them in that order (the original SLMRec and DualGNN code: visual, acoustic,
    text). The visual slot is ``'image'`` when present, else the first modality that is not
    ``'text'``; ``'text'`` comes last; the others keep the dataset's order in between. E.g.
    ``[image, text]`` → ``[image, text]``; lfm2k's ``[text, audio]`` → ``[audio, text]``;
    tiktok's ``[image, audio]`` → ``[image, audio]`` (the mapping of
    ``conf/experiment/ref_freedom.yaml``).
    """
    mods = list(dict.fromkeys(modalities))
    rest = [m for m in mods if m != "text"]
    first = ["image"] if "image" in rest else rest[:1]
    middle = [m for m in rest if m not in first]
    return first + middle + (["text"] if "text" in mods else [])


def visual_slot(order: Sequence[str]) -> str | None:
    """The modality in MMRec's visual slot: the first of :func:`mmrec_modality_order`, unless it is text."""
    return order[0] if order and order[0] != "text" else None


def bpr_and_id_reg(emb: dict[str, Tensor], id_embedding: Tensor, num_users: int,
                   batch: BPRBatch) -> tuple[Tensor, Tensor]:
    """MMGCN's and GRCN's BPR (``-log σ``) and ID-embedding term of MMRec.

    ``id_embedding`` stacks users then items ``[U + I, d]``; the term is the mean over the 2B
    rows ``(u, i)`` and ``(u, j)`` of ``E[u]² + E[item]²``. Returns ``(bpr, reg)``.
    """
    u = emb["user"][batch.users]
    pos = (u * emb["item"][batch.pos_items]).sum(-1)
    neg = (u * emb["item"][batch.neg_items]).sum(-1)
    bpr = -F.logsigmoid(pos - neg).mean()
    id_u = id_embedding[batch.users].pow(2)
    id_pos = id_embedding[num_users + batch.pos_items].pow(2)
    id_neg = id_embedding[num_users + batch.neg_items].pow(2)
    return bpr, (2 * id_u.sum() + id_pos.sum() + id_neg.sum()) / (2 * id_u.numel())


class MMGCN(GraphRecommender):
    r"""MMGCN from `"MMGCN: Multi-modal Graph Convolution Network for Personalized
    Recommendation of Micro-video" <https://arxiv.org/abs/1908.10195>`_ (ACM MM'19), as MMRec's
    ``MMGCN``.

    Per modality :math:`m`, users get preference vectors :math:`\mathbf{P}_m` and items their
    features, through an MLP for the modalities in ``latent_dims`` (MMRec: the visual one,
    4096 → 256) and raw otherwise (MMRec: text, 384-d):
    :math:`\mathbf{x}^{(0)} = \mathrm{normalize}([\mathbf{P}_m; \mathrm{MLP}_m(\mathbf{x}_m)])`
    (row-wise L2). ``num_layers`` layers of :class:`~mmgraph.nn.conv.MMGCNConv` (mean
    aggregation over the user–item graph in both directions, per-layer weights shared by users
    and items, ID embeddings :math:`\mathbf{E}^{ID}` added in every layer) give
    :math:`\mathbf{x}^{(L)}_m`; the representation is the mean over modalities,
    :math:`\mathbf{e} = \frac{1}{K}\sum_m \mathbf{x}^{(L)}_m`, and :math:`\hat y_{ui} =
    \mathbf{e}_u^\top \mathbf{e}_i`.

    Loss (MMRec's, with ``logsigmoid`` for ``log(sigmoid)``, equal wherever the latter is finite):
    :math:`-\mathrm{mean}\log\sigma(\hat y_{ui} - \hat y_{uj}) + \lambda\,[
    \mathrm{mean}(\mathbf{E}^{ID}[u]^2 + \mathbf{E}^{ID}[i]^2) + \sum_{m \in \mathcal{P}}
    \mathrm{mean}(\mathbf{P}_m^2)]`, the first mean over the ``2B`` (user, item) rows of the
    positive and negative pairs, the second over the whole preference table of the modalities
    :math:`\mathcal{P}` = ``preference_reg_modalities`` (MMRec: the visual one only).

    **Deliberate differences from MMRec** (``mmrec_frozen_params=True`` restores the first):

    1. MMRec creates ``id_embedding`` and the ``preference`` tables as plain tensors, not
       ``nn.Parameter``, so they are never trained (fixed random values). Here they are
       trainable parameters; with ``mmrec_frozen_params=True`` they are buffers with MMRec's
       initialisation (Xavier-normal of a ``(U + I) × d`` and a ``U × F`` table), for parity.
    2. MMRec evaluates with the representation cached by the last training batch
       (``self.result``); here evaluation always runs a fresh :meth:`forward`.

    Also: MMRec's ``n_layers: 2`` is ignored by its code (three layers are hard-coded):
    ``num_layers = 3`` reproduces the code. Its ``aggr_mode = 'mean'``, ``concate`` (truthy)
    and ``has_id = True`` are fixed there and arguments here. Any number of named modalities;
    with ``modalities=None`` they are ordered as MMRec's slots (:func:`mmrec_modality_order`),
    whose visual slot gets the 256-d MLP and the preference regulariser by default.

    MMRec names: ``embedding_size`` → ``embedding_dim``, ``n_layers`` → ``num_layers``
    (see above), ``reg_weight`` → ``reg_weight``, ``dim_latent`` (256) → ``latent_dims``,
    ``concate`` → ``concat``, ``has_id`` → ``has_id``. Its ``learning_rate`` grid
    ``[0.0001, ...]`` is a trainer setting (``trainer.optimizer.lr``).

    Args:
        num_users: number of users.
        num_items: number of items.
        modality_dims: feature size of every modality (passed by the pipeline).
        embedding_dim: ID embedding and output size. (default: ``64``)
        num_layers: MMGCN layers. (default: ``3``)
        latent_dims: MLP output size per modality; modalities not listed use their raw features
            (default: ``{<visual slot>: 256}``).
        concat: concatenate the aggregated and the self features (MMRec). (default: ``True``)
        has_id: add the ID embeddings in every layer. (default: ``True``)
        reg_weight: weight :math:`\lambda` (MMRec grid ``[0, 1e-5, ..., 0.1]``). (default: ``0.0``)
        preference_reg_modalities: modalities whose full preference table is regularised
            (default: ``[<visual slot>]``, MMRec).
        mmrec_frozen_params: ID embeddings and preferences are fixed random buffers (MMRec's
            behaviour). (default: ``False``)
        modalities: modalities to use, in order (default: all, in MMRec's slot order).
        graph: graph spec (default: the user–item graph with unit weights, ``ui_norm='none'``:
            the layer takes the neighbour mean).
    """

    def __init__(self, num_users: int, num_items: int, *, modality_dims: dict[str, int],
                 embedding_dim: int = 64, num_layers: int = 3, latent_dims: dict[str, int] | None = None,
                 concat: bool = True, has_id: bool = True, reg_weight: float = 0.0,
                 preference_reg_modalities: list[str] | None = None, mmrec_frozen_params: bool = False,
                 modalities: list[str] | None = None, graph: GraphSpec | None = None) -> None:
        if graph is None:
            graph = GraphSpec(ui_norm="none")
        elif graph.ui_norm != "none":
            raise ValueError("MMGCN averages the neighbours (PyG aggr='mean'): graph.ui_norm must be 'none'")
        super().__init__(num_users, num_items, embedding_dim=embedding_dim, graph=graph)
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        mods = resolve_modalities("MMGCN", modality_dims, modalities,
                                  default=mmrec_modality_order(modality_dims))
        vis = visual_slot(mods)
        if latent_dims is None:
            latent_dims = {vis: 256} if vis is not None else {}
        if preference_reg_modalities is None:
            preference_reg_modalities = [vis] if vis is not None else []
        for arg, names in (("latent_dims", list(latent_dims)), ("preference_reg_modalities", preference_reg_modalities)):
            bad = [m for m in names if m not in mods]
            if bad:
                raise ValueError(f"MMGCN {arg} names {bad}, not among the modalities used {mods}")
        self.modalities = mods
        self.num_layers = num_layers
        self.latent_dims = dict(latent_dims)
        self.concat = concat
        self.has_id = has_id
        self.reg_weight = reg_weight
        self.preference_reg_modalities = list(preference_reg_modalities)
        self.mmrec_frozen_params = mmrec_frozen_params
        self.required_modalities = tuple(mods)  # type: ignore[misc]
        d = embedding_dim
        self.mlp = torch.nn.ModuleDict(
            {m: torch.nn.Linear(int(modality_dims[m]), int(k)) for m, k in self.latent_dims.items()})
        self.in_dims = {m: int(self.latent_dims.get(m, modality_dims[m])) for m in mods}
        self.convs = torch.nn.ModuleDict({
            m: torch.nn.ModuleList([MMGCNConv(self.in_dims[m] if layer == 0 else d, d, concat=concat)
                                    for layer in range(num_layers)])
            for m in mods})
        self._register("id_embedding", torch.empty(num_users + num_items, d))
        for m in mods:
            self._register(f"preference_{m}", torch.empty(num_users, self.in_dims[m]))
        self.reset_parameters()

    def _register(self, name: str, value: Tensor) -> None:
        if self.mmrec_frozen_params:
            self.register_buffer(name, value)
        else:
            self.register_parameter(name, torch.nn.Parameter(value))

    def preference(self, m: str) -> Tensor:
        """The user preference table ``P_m`` ``[U, F_m]`` of modality ``m``."""
        return getattr(self, f"preference_{m}")

    def reset_parameters(self) -> None:
        """MMRec's initialisation: Xavier-normal ID, preference, conv and first ``W_g`` weights."""
        with torch.no_grad():
            torch.nn.init.xavier_normal_(self.id_embedding)
            for m in self.modalities:
                torch.nn.init.xavier_normal_(self.preference(m))
                for layer in self.convs[m]:
                    layer.reset_parameters()
                torch.nn.init.xavier_normal_(self.convs[m][0].lin_g.weight)  # g_layer1 only
            for lin in self.mlp.values():
                lin.reset_parameters()  # MMRec: nn.Linear default

    def forward(self, data: HeteroData) -> dict[str, Tensor]:
        U, I = self.num_users, self.num_items
        ui, _ = edge_inputs(data, UI)
        iu, _ = edge_inputs(data, IU)
        w = data[UI].get("edge_weight")
        if w is not None and not bool((w == 1).all()):
            raise ValueError("MMGCN averages the neighbours: it needs unit edge weights (GraphSpec(ui_norm='none'))")
        id_u, id_i = (self.id_embedding.split([U, I]) if self.has_id else (None, None))
        rep_u = rep_i = None
        for m in self.modalities:
            feats = data[ITEM][f"x_{m}"]
            if m in self.mlp:
                feats = self.mlp[m](feats)
            x = F.normalize(torch.cat([self.preference(m), feats]), dim=1)
            x_u, x_i = x.split([U, I])
            for conv in self.convs[m]:
                x_u, x_i = (conv((x_i, x_u), iu, id_u, size=(I, U)),  # users from their items
                            conv((x_u, x_i), ui, id_i, size=(U, I)))  # items from their users
            rep_u = x_u if rep_u is None else rep_u + x_u
            rep_i = x_i if rep_i is None else rep_i + x_i
        K = len(self.modalities)
        return {"user": rep_u / K, "item": rep_i / K}

    def loss(self, data: HeteroData, batch: BPRBatch) -> dict[str, Tensor]:
        bpr, reg = bpr_and_id_reg(self(data), self.id_embedding, self.num_users, batch)
        for m in self.preference_reg_modalities:
            reg = reg + self.preference(m).pow(2).mean()
        return {"loss": bpr + self.reg_weight * reg, "bpr": bpr, "reg": reg}

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", modalities={self.modalities}, num_layers={self.num_layers}, "
                f"latent_dims={self.latent_dims}, reg_weight={self.reg_weight}, "
                f"mmrec_frozen_params={self.mmrec_frozen_params}")
