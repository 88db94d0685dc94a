"""LIRDRec: item representations computed from multimodal features only (no item ID embeddings)."""

from __future__ import annotations

import copy
import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import HeteroData

from mmgraph.graph.build import GraphSpec
from mmgraph.models.base import GraphRecommender, edge_inputs
from mmgraph.models.lightgcn import lightgcn_propagate
from mmgraph.nn.conv import BipartiteLGConv, KNNConv
from mmgraph.nn.dct import dct as dct_1d
from mmgraph.nn.dct import dctn, idct
from mmgraph.nn.pwc import SCHEDULES, THETA_MODES, ProgressiveWeightCopying
from mmgraph.typing import II, ITEM, IU, UI, BPRBatch

DCT_MODES = ("feature", "full", "none")
II_RESIDUALS = ("readout", "ego")
PWC_MODES = ("pwc", "concat", "mean")
#: Attribute that :meth:`LIRDRec.train_graph` sets on its copy of ``data``: the 1-based epoch.
EPOCH_ATTR = "lirdrec_epoch"


def _mlp(in_dim: int, hidden_dim: int, out_dim: int) -> torch.nn.Sequential:
    # eq. 11/13: φ(x W1 + b1) W2, no bias on the second layer
    return torch.nn.Sequential(torch.nn.Linear(in_dim, hidden_dim), torch.nn.LeakyReLU(),
                               torch.nn.Linear(hidden_dim, out_dim, bias=False))


class LIRDRec(GraphRecommender):
    r"""LIRDRec from `"Learning Item Representations Directly from Multimodal Features for
    Effective Recommendation" <https://arxiv.org/abs/2505.04960>`_ (Zhou et al., 2025), exact to
    the authors' code by default.

    Items have **no ID embeddings**: each modality ``m`` goes through its own MLP
    (eq. 11), the concatenated DCT-transformed features of all modalities through a shared MLP
    (eqs. 12–13), and the ``d``-wide outputs, each L2-normalised per row (code), are
    concatenated into ``ℓ = B·d`` columns, ``B = |M| + 1`` (eq. 14). Users have ``B`` free
    blocks of ``d`` columns, normalised the same way. Then

    .. math::
        \mathbf{R} = \sum_{l=0}^{L_{ui}} \hat A^l \mathbf{X}^{(0)}, \qquad
        \tilde{\mathbf{H}}_i = \mathbf{R}_i + (S^{L_{ii}} \mathbf{R}_I)_i, \qquad
        \mathbf{H}_u = \mathrm{PWC}(\mathbf{R}_u), \qquad \hat y_{ui} = \mathbf{H}_u^\top \tilde{\mathbf{H}}_i

    with LightGCN's :math:`\hat A` (sum readout, layer 0 included;
    :func:`~mmgraph.models.lightgcn.lightgcn_propagate`), FREEDOM's frozen item–item graph
    :math:`S` (edge type ``II``, built by the data layer) and Progressive Weight Copying
    (:class:`~mmgraph.nn.pwc.ProgressiveWeightCopying`; eqs. 18–20) on the user blocks.
    Loss (code): mean BPR + :math:`\lambda(\operatorname{mean}(\mathbf{H}_U^2) +
    \operatorname{mean}(\tilde{\mathbf{H}}^2))` over **all** users and items.

    **DCT** (``dct``): ``'feature'`` (code, default) is the orthonormal DCT-II along each
    modality's feature axis; ``'full'`` the paper's 2-D DCT over items × features (eq. 12,
    orthonormal, FFT-based, never an ``I × I`` matrix; it makes an item's input depend on all
    items and their order); ``'none'`` feeds the raw concatenation. Computed once, from
    ``data``, by :meth:`init_from_data` into a non-persistent buffer; the raw features are read
    from ``data`` in every forward and are never trained. With ``'feature'`` and ``fold_dct``
    (default) no transformed copy exists: the orthonormal DCT ``C_m`` is folded into the shared
    layer's weights, :math:`\mathrm{DCT}(\mathbf{X}^m)\mathbf{W}_m^\top = \mathbf{X}^m
    (\mathbf{W}_m C_m)^\top` with :math:`\mathbf{W}_m C_m` the row-wise inverse DCT of the
    weight block (:func:`~mmgraph.nn.dct.idct`, exact), and each modality's first encoder layer
    and its block of the shared first layer become one GEMM over :math:`\mathbf{X}^m`. The
    parameters (and checkpoints) are the same as unfolded; only the arithmetic order changes.

    **PWC state.** The PWC epoch counter, the copied target θ and the last training weights are
    buffers/parameters of the model (so checkpoints and the best state carry them; evaluation
    uses the weights of the epoch being evaluated, as the code). :meth:`train_graph` only tags a
    shallow copy of ``data`` with the 1-based epoch; the first training forward that sees a new
    epoch performs the code's epoch-start update (θ ← last α, next ``(w1, w2)``).

    **Ablations** (the paper's Tables III and IV): ``pwc='concat'`` (w/o PWC: plain concatenation,
    all weights 1; ``'mean'`` is the fixed-``1/B`` control), ``shared_branch=False`` (w/o DCT: the
    DCT + shared MLP branch removed, ``B = |M|``), ``drop_modality=<m>`` (w/o that modality: its
    MLP, its part of the shared input and its kNN graph are removed; the remaining modality
    weights of ``S`` are rescaled to sum to 1).

    Reference-code names: ``embedding_size`` → ``embedding_dim`` (per block), ``n_ui_layers`` →
    ``num_ui_layers``, ``n_mm_layers`` → ``num_ii_layers``, ``decay_weight`` → ``decay_weight``
    (τ), ``decay_base`` → ``decay_base`` (γ), ``reg_weight`` unchanged, ``knn_k`` →
    ``graph.item_knn_k``, ``mm_image_weight`` → ``graph.modality_weights`` (image share);
    the hard-coded ``4·d`` and ``d/4`` are ``hidden_dim`` and ``pwc_hidden_dim``.

    Args:
        num_users: number of users.
        num_items: number of items.
        modality_dims: feature size of every modality (passed by the pipeline); any number ≥ 1.
        embedding_dim: block width ``d``; the representations have ``B·d`` columns. (default: ``64``)
        hidden_dim: hidden size of the item MLPs. (default: ``4·d``)
        pwc_hidden_dim: hidden size of the PWC scorers. (default: ``d/4``)
        num_ui_layers: LightGCN layers :math:`L_{ui}`. (default: ``2``)
        num_ii_layers: item-graph layers :math:`L_{ii}`. (default: ``1``)
        reg_weight: :math:`\lambda`. (default: ``0.01``)
        decay_weight: PWC initial decay rate τ. (default: ``0.9``)
        decay_base: PWC decay base γ. (default: ``0.9``)
        pwc: ``'pwc'``, ``'concat'`` or ``'mean'``. (default: ``'pwc'``)
        pwc_schedule: ``'code'``, ``'eq19'`` or ``'alg2'`` (:func:`~mmgraph.nn.pwc.pwc_weights`).
            (default: ``'code'``)
        pwc_theta: ``'param'`` (code) or ``'buffer'`` (paper). (default: ``'param'``)
        dct: ``'feature'``, ``'full'`` or ``'none'``. (default: ``'feature'``)
        shared_branch: keep the DCT + shared MLP branch. (default: ``True``)
        drop_modality: a modality to leave out (Table IV), or ``None``. (default: ``None``)
        ii_residual: what eq. 17's residual adds to :math:`S^{L_{ii}}\mathbf{R}_I`: ``'readout'``
            (code: :math:`\mathbf{R}_I`) or ``'ego'`` (the eq. 14 features :math:`\mathbf{X}^{(0)}_I`,
            a reading of the paper's "initial item representation"). (default: ``'readout'``)
        dct_block_size: slices per block of the DCT (memory knob; default automatic).
        fold_dct: with ``dct='feature'``, fold the DCT into the first layers' weights instead of
            storing the transformed features (above). (default: ``True``)
        graph: graph spec (default: FREEDOM's item graph with equal modality weights).
    """

    required_edge_types = (UI, IU, II)

    def __init__(self, num_users: int, num_items: int, *, modality_dims: dict[str, int],
                 embedding_dim: int = 64, hidden_dim: int | None = None, pwc_hidden_dim: int | None = None,
                 num_ui_layers: int = 2, num_ii_layers: int = 1, reg_weight: float = 0.01,
                 decay_weight: float = 0.9, decay_base: float = 0.9, pwc: str = "pwc",
                 pwc_schedule: str = "code", pwc_theta: str = "param", dct: str = "feature",
                 shared_branch: bool = True, drop_modality: str | None = None, ii_residual: str = "readout",
                 dct_block_size: int | None = None, fold_dct: bool = True,
                 graph: GraphSpec | None = None) -> None:
        for name, value, allowed in (("pwc", pwc, PWC_MODES), ("dct", dct, DCT_MODES),
                                     ("ii_residual", ii_residual, II_RESIDUALS),
                                     ("pwc_schedule", pwc_schedule, SCHEDULES),
                                     ("pwc_theta", pwc_theta, THETA_MODES)):
            if value not in allowed:
                raise ValueError(f"LIRDRec {name} must be one of {allowed}, got {value!r}")
        if drop_modality is not None and drop_modality not in modality_dims:
            raise ValueError(f"LIRDRec drop_modality={drop_modality!r} is not a modality of the dataset "
                             f"({list(modality_dims)})")
        modalities = [m for m in modality_dims if m != drop_modality]
        if not modalities:
            raise ValueError("LIRDRec needs at least one modality")
        if num_ui_layers < 0 or num_ii_layers < 0:
            raise ValueError("num_ui_layers and num_ii_layers must be >= 0")
        if graph is None:
            graph = GraphSpec(ui_norm="sym", item_knn_k=10, item_knn_loop=True, item_knn_weighted=False,
                              item_knn_norm="sym")
        if graph.item_knn_k is None:
            raise ValueError("LIRDRec needs FREEDOM's item kNN graph: set graph.item_knn_k")
        graph = graph.for_modalities(list(modality_dims))  # the reference image/text slots, if asked
        if drop_modality is not None:  # S from the remaining modalities only
            weights = graph.modality_weights or {m: 1.0 for m in modality_dims}
            graph = dataclasses.replace(graph, modality_weights=_kept_weights(weights, modalities))
        super().__init__(num_users, num_items, embedding_dim=embedding_dim, graph=graph)
        self.modalities = modalities
        self.required_modalities = tuple(modalities)  # type: ignore[misc]
        self.dims = {m: int(modality_dims[m]) for m in modalities}
        self.shared_branch = shared_branch
        self.num_blocks = len(modalities) + int(shared_branch)
        self.hidden_dim = hidden_dim or 4 * embedding_dim
        self.num_ui_layers = num_ui_layers
        self.num_ii_layers = num_ii_layers
        self.reg_weight = reg_weight
        self.pwc_mode = pwc
        self.dct_mode = dct
        self.dct_block_size = dct_block_size
        self.fold_dct = bool(fold_dct and dct == "feature" and shared_branch)
        self.drop_modality = drop_modality
        self.ii_residual = ii_residual

        self.user_emb = torch.nn.Parameter(torch.empty(num_users, self.num_blocks, embedding_dim))
        self.encoders = torch.nn.ModuleDict(
            {m: _mlp(self.dims[m], self.hidden_dim, embedding_dim) for m in modalities})
        if shared_branch:
            self.shared = _mlp(sum(self.dims.values()), self.hidden_dim, embedding_dim)
            # [I, Σ F_m] constant input of the shared MLP, filled by init_from_data
            self.register_buffer("shared_input", torch.empty(0), persistent=False)
        self.ui_conv = BipartiteLGConv()
        self.item_conv = KNNConv()
        if pwc == "pwc":
            self.pwc = ProgressiveWeightCopying(num_users, self.num_blocks, embedding_dim, pwc_hidden_dim,
                                                tau=decay_weight, gamma=decay_base, schedule=pwc_schedule,
                                                theta=pwc_theta)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Code's init: Xavier-normal per ``[U, d]`` user block, PyTorch defaults for the MLPs."""
        U, d = self.num_users, self.embedding_dim
        with torch.no_grad():
            self.user_emb.normal_(0.0, (2.0 / (U + d)) ** 0.5)  # = xavier_normal_ on each [U, d] block
        for mlp in [*self.encoders.values(), *([self.shared] if self.shared_branch else [])]:
            for layer in mlp:
                if isinstance(layer, torch.nn.Linear):
                    layer.reset_parameters()
        if self.pwc_mode == "pwc":
            self.pwc.reset_parameters()

    @torch.no_grad()
    def init_from_data(self, data: HeteroData) -> None:
        """Compute the shared branch's constant input ``[T(X^0) | … | T(X^{M-1})]`` from ``data``."""
        if not self.shared_branch or self.fold_dct:
            return
        parts = []
        for m in self.modalities:
            x = data[ITEM][f"x_{m}"].float()  # [I, F_m]
            if tuple(x.shape) != (self.num_items, self.dims[m]):
                raise ValueError(f"LIRDRec: data['item'].x_{m} has shape {tuple(x.shape)}, "
                                 f"expected {(self.num_items, self.dims[m])}")
            if self.dct_mode == "feature":
                x = dct_1d(x, dim=1, block_size=self.dct_block_size)
            elif self.dct_mode == "full":
                x = dctn(x, (0, 1), block_size=self.dct_block_size)
            parts.append(x)
        self.shared_input = torch.cat(parts, dim=1).to(self.user_emb.device)  # [I, Σ F_m]

    # --------------------------------------------------------------- parts
    def item_features(self, data: HeteroData) -> Tensor:
        """Ego item representations ``[I, B·d]``: normalised modality (and shared) MLP outputs."""
        if self.fold_dct:
            return self._folded_item_features(data)
        blocks = [self.encoders[m](data[ITEM][f"x_{m}"]) for m in self.modalities]  # each [I, d]
        if self.shared_branch:
            if self.shared_input.numel() == 0:
                raise RuntimeError("LIRDRec: call model.init_from_data(data) before the first forward "
                                   "(mmgraph.training.run does) to compute the DCT input")
            blocks.append(self.shared(self.shared_input))
        return torch.cat([F.normalize(b, dim=1) for b in blocks], dim=1)  # [I, B·d]

    def _folded_item_features(self, data: HeteroData) -> Tensor:
        """:meth:`item_features` with the DCT folded into the weights: one GEMM per modality."""
        H, shared0 = self.hidden_dim, self.shared[0]
        blocks, shared_pre, off = [], shared0.bias, 0
        for m in self.modalities:
            enc0, F_m = self.encoders[m][0], self.dims[m]
            w_shared = idct(shared0.weight[:, off:off + F_m], dim=1)  # W_m C_m, [H, F_m]
            off += F_m
            h = F.linear(data[ITEM][f"x_{m}"], torch.cat([enc0.weight, w_shared]))  # [I, 2H]
            h_enc, h_shared = h.split(H, dim=1)
            blocks.append(self.encoders[m][2](self.encoders[m][1](h_enc + enc0.bias)))
            shared_pre = shared_pre + h_shared
        blocks.append(self.shared[2](self.shared[1](shared_pre)))
        return torch.cat([F.normalize(b, dim=1) for b in blocks], dim=1)  # [I, B·d]

    def user_features(self) -> Tensor:
        """Ego user representations ``[U, B·d]``: each block normalised."""
        return F.normalize(self.user_emb, dim=-1).reshape(self.num_users, -1)

    # ------------------------------------------------------------ contract
    def forward(self, data: HeteroData) -> dict[str, Tensor]:
        if self.training and self.pwc_mode == "pwc":
            epoch = data.get(EPOCH_ATTR)
            if epoch is not None:
                self.pwc.advance(int(epoch))  # the code's epoch-start update, once per epoch
        x_item = self.item_features(data)  # [I, B·d]
        r_user, r_item = lightgcn_propagate(self.ui_conv, data, self.user_features(), x_item,
                                            self.num_ui_layers, readout="sum")  # [U, B·d], [I, B·d]
        adj, w = edge_inputs(data, II)
        h = r_item
        for _ in range(self.num_ii_layers):
            h = self.item_conv(h, adj, w)
        # code: residual with the user–item readout; 'ego': with the eq. 14 features (paper wording)
        item = h + (r_item if self.ii_residual == "readout" else x_item)
        if self.pwc_mode == "pwc":
            user, _ = self.pwc(r_user)
        elif self.pwc_mode == "mean":
            user = r_user / self.num_blocks
        else:
            user = r_user
        return {"user": user, "item": item}

    def loss(self, data: HeteroData, batch: BPRBatch) -> dict[str, Tensor]:
        emb = self(data)
        users, items = emb["user"], emb["item"]
        u = users[batch.users]  # [B, ℓ]
        pos = (u * items[batch.pos_items]).sum(-1)
        neg = (u * items[batch.neg_items]).sum(-1)
        bpr = -F.logsigmoid(pos - neg).mean()
        reg = users.pow(2).mean() + items.pow(2).mean()  # code: all users and items, element-wise mean
        return {"loss": bpr + self.reg_weight * reg, "bpr": bpr, "reg": reg}

    def train_graph(self, data: HeteroData, epoch: int) -> HeteroData:
        """A shallow copy of ``data`` tagged with the 1-based epoch (drives PWC); no graph change."""
        if self.pwc_mode != "pwc":
            return data
        out = copy.copy(data)
        setattr(out, EPOCH_ATTR, epoch + 1)
        return out

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", modalities={self.modalities}, num_blocks={self.num_blocks}, "
                f"num_ui_layers={self.num_ui_layers}, num_ii_layers={self.num_ii_layers}, "
                f"pwc={self.pwc_mode!r}, dct={self.dct_mode!r}, shared_branch={self.shared_branch}, "
                f"ii_residual={self.ii_residual!r}, fold_dct={self.fold_dct}")


def _kept_weights(weights: dict[str, float], kept: list[str]) -> dict[str, float]:
    """Item-graph modality weights restricted to ``kept`` and rescaled to sum to 1."""
    out = {m: float(w) for m, w in weights.items() if m in kept}
    total = sum(out.values())
    if total <= 0:
        raise ValueError(f"LIRDRec: no item-graph weight left for the modalities {kept} (weights {weights})")
    return {m: w / total for m, w in out.items()}
