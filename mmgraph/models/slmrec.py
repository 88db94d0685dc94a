"""SLMRec: self-supervised multimedia recommendation (in-batch InfoNCE + fine-and-coarse contrast)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import HeteroData

from mmgraph.graph.build import GraphSpec
from mmgraph.models.base import GraphRecommender, resolve_modalities
from mmgraph.models.lightgcn import lightgcn_propagate
from mmgraph.models.mmgcn import mmrec_modality_order
from mmgraph.nn.conv import BipartiteLGConv
from mmgraph.nn.losses import info_nce
from mmgraph.typing import ITEM, BPRBatch

FUSIONS = ("concat", "mean")


def default_fac_chain(modalities: list[str]) -> list[str | None]:
    """MMRec's fine-and-coarse hierarchy for the given (slot-ordered) modalities.

    The original SLMRec contrasts ID → +visual → +acoustic → +text; MMRec drops the acoustic
    loss but keeps its projection in the chain, so two modalities give
    ``[m1, None, m2]`` (``None``: a chain step without a contrastive term). One modality gives
    ``[m1]`` (MMRec's ``kwai`` branch); three or more give the modalities themselves.
    """
    if len(modalities) == 2:
        return [modalities[0], None, modalities[1]]
    return list(modalities)


def in_batch_ce(anchor: Tensor, positive: Tensor, temperature: float) -> Tensor:
    r"""SLMRec's FAC InfoNCE: ``CE(anchor @ positiveᵀ / τ, arange(B))`` on **unnormalised** vectors."""
    logits = anchor @ positive.t() / temperature
    return F.cross_entropy(logits, torch.arange(anchor.size(0), device=anchor.device))


class SLMRec(GraphRecommender):
    r"""SLMRec from `"Self-supervised Learning for Multimedia Recommendation"
    <https://doi.org/10.1109/TMM.2022.3187556>`_ (IEEE TMM'22), as MMRec's ``SLMRec``
    (``ssl_task: 'FAC'``, ``mm_fusion_mode: 'concat'``).

    **Encoder.** LightGCN with layer-mean readout over :math:`\hat A = D^{-1/2} A D^{-1/2}`
    (MMRec ``adj_type: 'pre'``, whose ``+1e-8`` on the degrees is left out) is run once per
    channel, each pairing the user ID embeddings with one item input: the item ID embeddings
    :math:`\mathbf{E}_i` and, per modality, :math:`\mathbf{W}_m \mathrm{normalize}(\mathbf{x}_m)
    + \mathbf{b}_m` (fixed, L2-normalised features). The channels are propagated together as one
    ``(K + 1)·d``-wide LightGCN pass (the propagation is linear, so this equals ``K + 1`` passes).
    Fusion: :math:`\mathbf{e}_u = \mathbf{W}_u [\mathbf{u}^{id}; \mathbf{u}^{m_1}; \dots]`,
    :math:`\mathbf{e}_i = \mathbf{W}_i [\mathbf{i}^{id}; \mathbf{i}^{m_1}; \dots]`
    (``(K+1)d → d``; ``fusion='mean'`` averages the channels and maps ``d → d``);
    :math:`\hat y_{ui} = \mathbf{e}_u^\top \mathbf{e}_i` (MMRec ranks by
    :math:`\sigma(\hat y_{ui})`: the same order).

    **Main loss**: in-batch InfoNCE over the batch's (user, positive item) pairs,
    :math:`\mathrm{CE}(\mathrm{normalize}(\mathbf{e}_u)\,\mathrm{normalize}(\mathbf{e}_{i^+})^\top /
    \tau)` with :math:`\tau` = ``temperature``; sampled negatives are not used.

    **FAC** (fine and coarse) on the batch's positive items, with the propagated item
    channels: a chain :math:`\mathbf{a}_1 = g_1(\mathbf{i}^{id})`, :math:`\mathbf{a}_k =
    g_k(\mathbf{a}_{k-1})`, each step :math:`k` naming a modality :math:`m_k` adds
    :math:`\mathrm{CE}(\mathbf{a}_k\, h_k(\mathbf{i}^{m_k})^\top / \tau_{ssl})` (linear maps,
    **no** normalisation, as MMRec's ``fac``). Steps are ``d``-wide except the last, ``d/2``,
    when there are several. MMRec with image and text: ``fac_chain = [image, None, text]``
    (``g_i_iv``/``g_v_iv``, ``g_iv_iva`` without its acoustic term, ``g_iva_ivat``/``g_t_ivat``;
    :func:`default_fac_chain`). :math:`L = L_{main} + \alpha\, L_{FAC}`.

    **Deliberate difference from MMRec:** evaluation runs a fresh :meth:`forward`; MMRec ranks with
    the embeddings computed for the last training batch (before its optimiser step).

    MMRec names: ``recdim`` → ``embedding_dim``, ``layer_num`` → ``num_layers``, ``temp`` →
    ``temperature``, ``ssl_alpha`` → ``ssl_weight``, ``ssl_temp`` → ``ssl_temperature``,
    ``mm_fusion_mode`` → ``fusion``; ``ssl_task`` is ``'FAC'`` (MMRec's ``FD``/``FM`` branches read
    a config key MMRec never sets and cannot run); ``reg`` is unused by MMRec's code and
    ``dropout_rate`` only by ``FD``: both absent. ``init: 'xavier'``: Xavier-uniform weights of
    every embedding and linear map (default biases). MMRec's ``weight_decay: 1e-4`` and
    ``learning_rate`` grid are trainer settings (``trainer.optimizer.weight_decay``, ``.lr``).

    Args:
        num_users: number of users.
        num_items: number of items.
        modality_dims: feature size of every modality (passed by the pipeline).
        embedding_dim: embedding size ``d``. (default: ``64``)
        num_layers: LightGCN layers. (default: ``3``)
        temperature: main InfoNCE temperature. (default: ``0.2``)
        ssl_weight: weight :math:`\alpha` of the FAC loss (MMRec grid ``[0.01, ..., 1.0]``). (default: ``0.01``)
        ssl_temperature: FAC temperature (MMRec grid ``[0.1, 0.2, 0.5, 1.0]``). (default: ``0.1``)
        fusion: ``'concat'`` or ``'mean'``. (default: ``'concat'``)
        fac_chain: the FAC steps (modality names or ``None``), default :func:`default_fac_chain`.
        modalities: modalities to use, in order (default: all, in MMRec's slot order).
        graph: graph spec (default: ``'sym'``-normalised user–item graph).
    """

    def __init__(self, num_users: int, num_items: int, *, modality_dims: dict[str, int],
                 embedding_dim: int = 64, num_layers: int = 3, temperature: float = 0.2,
                 ssl_weight: float = 0.01, ssl_temperature: float = 0.1, fusion: str = "concat",
                 fac_chain: list[str | None] | None = None, modalities: list[str] | None = None,
                 graph: GraphSpec | None = None) -> None:
        if graph is None:
            graph = GraphSpec(ui_norm="sym")
        super().__init__(num_users, num_items, embedding_dim=embedding_dim, graph=graph)
        if fusion not in FUSIONS:
            raise ValueError(f"SLMRec fusion must be one of {FUSIONS}, got {fusion!r}")
        if num_layers < 0:
            raise ValueError(f"num_layers must be >= 0, got {num_layers}")
        mods = resolve_modalities("SLMRec", modality_dims, modalities,
                                  default=mmrec_modality_order(modality_dims))
        chain = default_fac_chain(mods) if fac_chain is None else list(fac_chain)
        if not chain or chain[0] is None:
            raise ValueError(f"SLMRec fac_chain must start with a modality, got {chain}")
        bad = [m for m in chain if m is not None and m not in mods]
        if bad or len([m for m in chain if m is not None]) != len({m for m in chain if m is not None}):
            raise ValueError(f"SLMRec fac_chain {chain} must name distinct modalities among {mods}")
        self.modalities = mods
        self.num_layers = num_layers
        self.temperature = temperature
        self.ssl_weight = ssl_weight
        self.ssl_temperature = ssl_temperature
        self.fusion = fusion
        self.fac_chain = chain
        self.required_modalities = tuple(mods)  # type: ignore[misc]
        d = embedding_dim
        self.user_emb = torch.nn.Embedding(num_users, d)
        self.item_emb = torch.nn.Embedding(num_items, d)
        self.dense = torch.nn.ModuleDict({m: torch.nn.Linear(int(modality_dims[m]), d) for m in mods})
        fused = d * (len(mods) + 1) if fusion == "concat" else d
        self.user_fuse = torch.nn.Linear(fused, d)  # embedding_user_after_GCN
        self.item_fuse = torch.nn.Linear(fused, d)  # embedding_item_after_GCN
        widths = [d] * len(chain)
        if len(chain) > 1:
            widths[-1] = d // 2
        self.fac_widths = widths
        self.fac_anchor = torch.nn.ModuleList(
            [torch.nn.Linear(d if k == 0 else widths[k - 1], widths[k]) for k in range(len(chain))])
        self.fac_positive = torch.nn.ModuleDict(
            {m: torch.nn.Linear(d, widths[k]) for k, m in enumerate(chain) if m is not None})
        self.conv = BipartiteLGConv()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """MMRec's ``init: 'xavier'``: Xavier-uniform embeddings and linear weights, default biases."""
        torch.nn.init.xavier_uniform_(self.user_emb.weight)
        torch.nn.init.xavier_uniform_(self.item_emb.weight)
        for lin in [*self.dense.values(), self.user_fuse, self.item_fuse, *self.fac_anchor,
                    *self.fac_positive.values()]:
            lin.reset_parameters()
            torch.nn.init.xavier_uniform_(lin.weight)

    def channels(self, data: HeteroData) -> tuple[list[Tensor], list[Tensor]]:
        """Propagated ``(user channels, item channels)``, each a list ``[id, m_1, ..., m_K]`` of ``[N, d]``."""
        d = self.embedding_dim
        n = len(self.modalities) + 1
        items = [self.item_emb.weight] + [
            self.dense[m](F.normalize(data[ITEM][f"x_{m}"], dim=1)) for m in self.modalities]
        x_user = self.user_emb.weight.repeat(1, n)  # [U, n·d]: the same user input for every channel
        u, i = lightgcn_propagate(self.conv, data, x_user, torch.cat(items, dim=1), self.num_layers)
        return list(u.split(d, dim=1)), list(i.split(d, dim=1))

    def _fuse(self, lin: torch.nn.Linear, chans: list[Tensor]) -> Tensor:
        z = torch.cat(chans, dim=1) if self.fusion == "concat" else torch.stack(chans).mean(0)
        return lin(z)

    def _embed(self, data: HeteroData) -> tuple[Tensor, Tensor, list[Tensor]]:
        cu, ci = self.channels(data)
        return self._fuse(self.user_fuse, cu), self._fuse(self.item_fuse, ci), ci

    def forward(self, data: HeteroData) -> dict[str, Tensor]:
        u, i, _ = self._embed(data)
        return {"user": u, "item": i}

    def fac_loss(self, item_channels: list[Tensor], items: Tensor) -> Tensor:
        """The fine-and-coarse contrastive loss on ``items`` (the batch's positive items)."""
        by_mod = dict(zip(self.modalities, item_channels[1:], strict=True))
        a = item_channels[0][items]
        loss = a.new_zeros(())
        for k, m in enumerate(self.fac_chain):
            a = self.fac_anchor[k](a)
            if m is not None:
                loss = loss + in_batch_ce(a, self.fac_positive[m](by_mod[m][items]), self.ssl_temperature)
        return loss

    def loss(self, data: HeteroData, batch: BPRBatch) -> dict[str, Tensor]:
        u, i, item_channels = self._embed(data)
        main = info_nce(u[batch.users], i[batch.pos_items], self.temperature)
        fac = self.fac_loss(item_channels, batch.pos_items)
        return {"loss": main + self.ssl_weight * fac, "main": main, "fac": fac}

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", modalities={self.modalities}, num_layers={self.num_layers}, "
                f"fusion={self.fusion!r}, fac_chain={self.fac_chain}, ssl_weight={self.ssl_weight}")

