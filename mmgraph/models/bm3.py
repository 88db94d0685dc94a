"""BM3: bootstrapped multimodal self-supervision without negative sampling."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import HeteroData

from mmgraph.graph.build import GraphSpec
from mmgraph.models.base import GraphRecommender, resolve_modalities
from mmgraph.models.lightgcn import LightGCN
from mmgraph.nn.losses import emb_loss
from mmgraph.typing import ITEM, IU, UI, BPRBatch


def _neg_cos(online: Tensor, target: Tensor) -> Tensor:
    """``1 − mean_b cos(online_b, target_b)`` with the target's gradient stopped."""
    return 1.0 - F.cosine_similarity(online, target.detach(), dim=-1).mean()


class BM3(GraphRecommender):
    r"""BM3 from `"Bootstrap Latent Representations for Multi-modal Recommendation"
    <https://arxiv.org/abs/2207.05969>`_ (WWW'23), as MMRec's ``BM3``.

    Online encoder: LightGCN (layer mean over :math:`\hat A`, a
    :class:`~mmgraph.models.LightGCN` submodule) with the item ID embedding added,
    :math:`\mathbf{e}_u = \bar{\mathbf{e}}_u`, :math:`\mathbf{e}_i = \bar{\mathbf{e}}_i +
    \mathbf{E}^{ID}_i`; per modality a projection :math:`\mathbf{f}^m_i = \mathbf{W}_m
    \mathbf{x}^m_i + \mathbf{b}_m` of the (trainable, MMRec) raw features; one shared predictor
    :math:`P = \mathrm{Linear}(d, d)`. Targets are dropout-perturbed stop-gradient copies,
    :math:`\tilde{\mathbf{e}} = \mathrm{dropout}_p(\mathrm{sg}(\mathbf{e}))`,
    :math:`\tilde{\mathbf{f}}^m = \mathrm{dropout}_p(\mathrm{sg}(\mathbf{f}^m))`. For a batch of
    observed pairs :math:`(u, i)` (no negatives: ``batch.neg_items`` is ignored):

    .. math::
        \mathcal{L} = [1 - \cos(P\mathbf{e}_u, \tilde{\mathbf{e}}_i)]
        + [1 - \cos(P\mathbf{e}_i, \tilde{\mathbf{e}}_u)]
        + \lambda\,\mathrm{EmbLoss}(\mathbf{E}_U, \mathbf{E}_I)
        + \mu \sum_m \big([1 - \cos(P\mathbf{f}^m_i, \tilde{\mathbf{e}}_i)]
        + [1 - \cos(P\mathbf{f}^m_i, \tilde{\mathbf{f}}^m_i)]\big)

    with batch means of the cosines, and EmbLoss over the whole online tables
    (:math:`(\lVert\mathbf{E}_U\rVert_F + \lVert\mathbf{E}_I\rVert_F) / I`). Scores
    :math:`\hat y_{ui} = (P\mathbf{e}_u)^\top (P\mathbf{e}_i)`: :meth:`forward` returns the
    predictor outputs. Init as MMRec: Xavier-uniform ID embeddings, Xavier-normal weights of the
    predictor and projections (default ``Linear`` biases).

    The target dropout is drawn on whole rows' tables, as MMRec (an item or user repeated in a
    batch gets the same target), and only in training (``self.training``); in ``eval`` mode
    the targets are the unperturbed embeddings. MMRec computes the feature projections of all
    items on every batch; here only the batch's distinct items are projected (the same values
    and gradients). Evaluation always uses a fresh :meth:`forward`, never embeddings cached
    from the last training batch.

    MMRec names: ``embedding_size`` → ``embedding_dim``, ``n_layers`` → ``num_layers``,
    ``dropout``, ``reg_weight``, ``cl_weight`` unchanged; ``feat_embed_dim`` is ignored by
    MMRec's code (it uses ``embedding_size``, which the predictor requires) and absent here;
    ``use_neg_sampling: False`` is implicit. MMRec grid: ``n_layers [1, 2]``,
    ``dropout [0.3, 0.5]``, ``reg_weight [0.1, 0.01]`` (defaults: the first values).

    Args:
        num_users: number of users.
        num_items: number of items.
        modality_dims: feature size of every modality (passed by the pipeline).
        embedding_dim: embedding size ``d``. (default: ``64``)
        num_layers: LightGCN layers. (default: ``1``)
        dropout: target dropout ``p``. (default: ``0.3``)
        reg_weight: weight ``λ`` of EmbLoss. (default: ``0.1``)
        cl_weight: weight ``μ`` of the modality terms. (default: ``2.0``)
        modalities: modalities to use (``None``: all of ``modality_dims``). (default: ``None``)
        train_raw_features: the raw features are trainable parameters (MMRec), copied from
            ``data`` by :meth:`init_from_data`. (default: ``True``)
        graph: graph spec (default: the ``'sym'``-normalised user–item graph).
    """

    required_edge_types = (UI, IU)

    def __init__(self, num_users: int, num_items: int, *, modality_dims: dict[str, int],
                 embedding_dim: int = 64, num_layers: int = 1, dropout: float = 0.3,
                 reg_weight: float = 0.1, cl_weight: float = 2.0, modalities: list[str] | None = None,
                 train_raw_features: bool = True, graph: GraphSpec | None = None) -> None:
        super().__init__(num_users, num_items, embedding_dim=embedding_dim, graph=graph)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        mods = resolve_modalities("BM3", modality_dims, modalities, allow_empty=True)
        self.modalities = mods
        self.required_modalities = tuple(mods)  # type: ignore[misc]
        self.dropout = dropout
        self.reg_weight = reg_weight
        self.cl_weight = cl_weight
        self.train_raw_features = train_raw_features
        self.backbone = LightGCN(num_users, num_items, embedding_dim=embedding_dim,
                                 num_layers=num_layers, reg_weight=0.0)
        self.predictor = torch.nn.Linear(embedding_dim, embedding_dim)
        self.projections = torch.nn.ModuleDict(
            {m: torch.nn.Linear(int(modality_dims[m]), embedding_dim) for m in mods})
        if mods and train_raw_features:
            self.add_raw_features({m: modality_dims[m] for m in mods})
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform ID embeddings, Xavier-normal predictor/projection weights (MMRec)."""
        self.backbone.reset_parameters()
        for lin in (self.predictor, *self.projections.values()):
            lin.reset_parameters()  # the bias keeps torch's default init, as MMRec
            torch.nn.init.xavier_normal_(lin.weight)

    def init_from_data(self, data: HeteroData) -> None:
        """Copy ``data['item'].x_<m>`` into the trainable raw features (when there are any)."""
        if self.modalities and self.train_raw_features:
            self.load_raw_features(data)

    def online(self, data: HeteroData) -> tuple[Tensor, Tensor]:
        """Online embeddings before the predictor: ``(LGN_u [U, d], LGN_i + E_i^ID [I, d])``."""
        e_user, e_item = self.backbone.user_emb.weight, self.backbone.item_emb.weight
        u, i = self.backbone.propagate(data, e_user, e_item)
        return u, i + e_item

    def features(self, data: HeteroData, m: str, items: Tensor) -> Tensor:
        """Projected features ``f^m`` of ``items``, ``[B, d]``."""
        if self.train_raw_features:
            x = self.loaded_raw_features()[m][items]
        else:
            x = data[ITEM][f"x_{m}"][items]
        return self.projections[m](x)

    def forward(self, data: HeteroData) -> dict[str, Tensor]:
        u, i = self.online(data)
        return {"user": self.predictor(u), "item": self.predictor(i)}

    def loss(self, data: HeteroData, batch: BPRBatch) -> dict[str, Tensor]:
        users, items = batch.users, batch.pos_items  # no negatives
        u_all, i_all = self.online(data)  # [U, d], [I, d]
        with torch.no_grad():  # targets: stop-gradient, dropout on the whole tables (MMRec)
            u_tgt = F.dropout(u_all, self.dropout, training=self.training)[users]
            i_tgt = F.dropout(i_all, self.dropout, training=self.training)[items]
        loss_ui = _neg_cos(self.predictor(u_all[users]), i_tgt)
        loss_iu = _neg_cos(self.predictor(i_all[items]), u_tgt)
        reg = emb_loss(u_all, i_all)
        out = {"loss_ui": loss_ui, "loss_iu": loss_iu, "reg": reg}
        total = loss_ui + loss_iu + self.reg_weight * reg
        if self.modalities:
            uniq, inv = items.unique(return_inverse=True)  # distinct items: one dropout mask each
            cl = torch.zeros((), device=loss_ui.device)
            for m in self.modalities:
                f = self.features(data, m, uniq)  # [B', d]
                with torch.no_grad():
                    f_tgt = F.dropout(f, self.dropout, training=self.training)[inv]
                p_f = self.predictor(f)[inv]
                cl = cl + _neg_cos(p_f, i_tgt) + _neg_cos(p_f, f_tgt)
            out["cl"] = cl
            total = total + self.cl_weight * cl
        out["loss"] = total
        return out

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", num_layers={self.backbone.num_layers}, dropout={self.dropout}, "
                f"reg_weight={self.reg_weight}, cl_weight={self.cl_weight}, modalities={self.modalities}")
