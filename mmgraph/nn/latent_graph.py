r"""Latent structure learning: kNN graphs learned from transformed modality features.

LATTICE learns, per modality, a kNN graph over linearly transformed features, fuses the
modalities with softmax weights and mixes the result with the fixed kNN graphs of the raw
features. ULF learns the same kind of graph over users. Both use :class:`LatentGraph`.

Nothing here is ``N × N``: the neighbours are chosen in row blocks without gradient
(:func:`mmgraph.graph.topk_cosine`), then only the ``k`` kept cosine values per node are
recomputed with autograd. Because the top-``k`` selection is piecewise constant and
``scatter``/``topk`` route gradient only to the kept entries, this gives exactly the
gradient of the dense reference computation, with ``O(N·k·d')`` autograd memory.

:class:`EpochGraphCache` is the per-epoch object through which a model's
``train_graph(data, epoch)`` hook controls how often the learned graph is rebuilt.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from mmgraph.graph.knn import topk_cosine
from mmgraph.graph.norm import sym_norm, to_adj_t

#: A graph as ``(edge_index [2, E], edge_weight [E])`` or as ``(adj_t, None)``.
Graph = tuple[Tensor, Tensor | None]

NORM_ORDERS = ("code", "paper", "ulf")
REFRESH = ("epoch", "batch", "never")


class LatentGraph(torch.nn.Module):
    r"""The latent graph of `"Mining Latent Structures for Multimedia
    Recommendation" <https://arxiv.org/abs/2104.09036>`_ (LATTICE, ACM MM'21).

    Per modality :math:`m`, the features are transformed and a directed weighted kNN
    graph is taken over their cosine similarities (the node itself is always a
    candidate, hence one of its own neighbours):

    .. math::
        \tilde{\mathbf{e}}^m_i = \mathbf{W}_m \mathbf{e}^m_i + \mathbf{b}_m, \qquad
        \hat{S}^m_{ij} = \cos(\tilde{\mathbf{e}}^m_i, \tilde{\mathbf{e}}^m_j)
        \text{ if } j \in \mathrm{topk}_j \cos(\tilde{\mathbf{e}}^m_i, \cdot)
        \text{ else } 0

    With :math:`\boldsymbol{\alpha} = \mathrm{softmax}(\mathbf{w})` (logits initialised
    to 0.5 each, i.e. equal weights), :math:`\mathcal{N}(X) = D^{-1/2} X D^{-1/2}` with
    :math:`D` the row sums of :math:`X`, and the initial (raw-feature) graphs
    :math:`O_m` already normalised by the data layer, the item graph is

    .. math::
        A = (1 - \lambda)\, L + \lambda \sum_m \alpha_m O_m, \qquad
        L = \begin{cases}
            \mathcal{N}\big(\sum_m \alpha_m \hat{S}^m\big) & \texttt{norm\_order='code'} \\
            \sum_m \alpha_m \mathcal{N}(\hat{S}^m) & \texttt{norm\_order='paper'}
        \end{cases}

    ``'code'`` is the authors' implementation (it produced the paper's numbers);
    ``'paper'`` is eqs. (3)–(6) of the paper. ``'ulf'`` is the order of ULF's eqs. (7)–(10)
    (Raj & Saha, 2025): the skip connection first, on the *un-normalised* initial graphs
    :math:`S_m` (pass them so), then one normalisation per modality, then the fusion:

    .. math::
        A = \sum_m \alpha_m\, \mathcal{N}\big(\lambda S_m + (1 - \lambda) \hat{S}^m\big)

    (a row may have up to :math:`2k` neighbours: the two edge sets are concatenated). :math:`\alpha` receives gradient through
    both :math:`L` and the initial part; :math:`\mathbf{W}_m, \mathbf{b}_m` (and the
    input features, if they are parameters) through the kept cosine values and the
    degrees of :math:`L`, never through which neighbours were selected.

    The output is an edge list ``j -> i`` (PyG's source-to-target flow, row ``i`` of
    :math:`A` aggregated at ``i``), with the learned edges and each modality's initial
    edges concatenated (duplicate pairs are summed by message passing), ready for
    :class:`~mmgraph.nn.conv.KNNConv`. It is not symmetrised (neither is the reference).

    Args:
        modality_dims: input feature size of every modality, e.g. ``{'image': 4096, 'text': 384}``.
        out_dim: transformed feature size :math:`d'`. (default: ``64``)
        k: neighbours per node in the learned graph. (default: ``10``)
        lambda_coeff: weight :math:`\lambda` of the initial graphs. (default: ``0.9``)
        norm_order: ``'code'``, ``'paper'`` or ``'ulf'`` (see above). (default: ``'code'``)
        clamp_negative: set negative kept cosines to 0 (the paper's wording; the reference
            code does not, and with the node itself among its neighbours it rarely
            matters). (default: ``False``)
        block_size: rows per block of the kNN search (default: about 32M similarities per block).

    A ``node_mask`` (``[N]`` bool) passed to :meth:`forward` zeroes the transformed features
    of the masked-out nodes before the kNN (e.g. ULF's users without training items, whose
    transformed feature would otherwise be the bias): their learned edges get weight 0.

    Shapes:
        - **input:** ``features`` ``{m: (N, d_m)}`` (or ``None``); ``initial``
          ``{m: ((2, E_m), (E_m))}`` (or ``None``).
        - **output:** ``((2, E), (E))`` with ``E = N·k·M`` plus the initial edges.
    """

    def __init__(self, modality_dims: dict[str, int], out_dim: int = 64, k: int = 10,
                 lambda_coeff: float = 0.9, norm_order: str = "code", clamp_negative: bool = False,
                 block_size: int | None = None) -> None:
        super().__init__()
        if not modality_dims:
            raise ValueError("LatentGraph needs at least one modality")
        if norm_order not in NORM_ORDERS:
            raise ValueError(f"norm_order must be one of {NORM_ORDERS}, got {norm_order!r}")
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        if not 0.0 <= lambda_coeff <= 1.0:
            raise ValueError(f"lambda_coeff must lie in [0, 1], got {lambda_coeff}")
        self.modalities = list(modality_dims)
        self.out_dim = out_dim
        self.k = k
        self.lambda_coeff = lambda_coeff
        self.norm_order = norm_order
        self.clamp_negative = clamp_negative
        self.block_size = block_size
        self.transforms = torch.nn.ModuleDict(
            {m: torch.nn.Linear(int(d), out_dim) for m, d in modality_dims.items()})
        self.modality_logits = torch.nn.Parameter(torch.empty(len(self.modalities)))
        #: Last neighbour selection per key: ``(z without grad, idx)``. The evaluation after an
        #: epoch and the next epoch's first training batch see the same parameters, hence the same
        #: ``z``: the second selection is skipped (only the kept cosines are recomputed, with grad).
        self._knn_memo: dict[str, tuple[Tensor, Tensor]] = {}
        self.knn_selections = 0  # top-k selections actually run (the memo's misses)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``nn.Linear``'s default init for the transforms (as the reference); logits 0.5."""
        for lin in self.transforms.values():
            lin.reset_parameters()
        with torch.no_grad():
            self.modality_logits.fill_(0.5)

    def alpha(self) -> Tensor:
        """Modality weights ``softmax(w)``, ``[M]`` in the order of ``modality_dims``."""
        return torch.softmax(self.modality_logits, dim=0)

    def transform(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        r"""Transformed features :math:`\tilde{\mathbf{e}}^m` ``{m: [N, d']}``."""
        missing = [m for m in self.modalities if m not in features]
        if missing:
            raise KeyError(f"LatentGraph: features of modalities {missing} are missing")
        return {m: self.transforms[m](features[m]) for m in self.modalities}

    def _neighbours(self, z: Tensor, key: str | None) -> Tensor:
        """``[N, k]`` top-``k`` cosine neighbours of the rows of ``z`` (no grad), memoised per ``key``
        on the exact values of ``z``."""
        zd = z.detach()
        memo = self._knn_memo.get(key) if key is not None else None
        if (memo is not None and memo[0].shape == zd.shape and memo[0].dtype == zd.dtype
                and memo[0].device == zd.device and torch.equal(memo[0], zd)):
            return memo[1]
        _, idx = topk_cosine(zd, self.k, loop=True, batch_size=self.block_size)  # [N, k], no grad
        self.knn_selections += 1
        if key is not None:
            self._knn_memo[key] = (zd.clone(), idx)
        return idx

    def __getstate__(self):  # the memo is a cache: not pickled
        state = self.__dict__.copy()
        state["_knn_memo"] = {}
        return state

    def knn(self, z: Tensor, key: str | None = None) -> tuple[Tensor, Tensor]:
        r"""Differentiable cosine kNN graph of the rows of ``z`` ``[N, d']``.

        ``key`` (e.g. the modality) memoises the neighbour selection: called again with
        bit-identical ``z`` under the same key, the top-``k`` search is skipped and the same
        neighbours are used (the result is identical; only the values are recomputed).

        Returns:
            ``(edge_index [2, N·k], values [N·k])``: edge ``j -> i`` for each of ``i``'s
            ``k`` nearest neighbours ``j`` (self included), value
            :math:`\cos(z_i, z_j)`, differentiable w.r.t. ``z``.
        """
        n = z.size(0)
        idx = self._neighbours(z, key)
        zn = F.normalize(z, dim=1)  # [N, d']
        vals = torch.einsum("nd,nkd->nk", zn, zn[idx])  # [N, k]: only the kept cosines, with grad
        if self.clamp_negative:
            vals = vals.clamp_min(0.0)
        target = torch.arange(n, device=z.device).repeat_interleave(self.k)  # [N·k]
        return torch.stack([idx.reshape(-1), target]), vals.reshape(-1)

    def learned(self, features: dict[str, Tensor], alpha: Tensor | None = None,
                node_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The normalised fused learned graph ``L`` as ``(edge_index, edge_weight)``."""
        alpha = self.alpha() if alpha is None else alpha
        z = self._masked_transform(features, node_mask)
        n = next(iter(z.values())).size(0)
        eis, ws = [], []
        for a, m in zip(alpha, self.modalities, strict=True):
            ei, v = self.knn(z[m], key=m)
            if self.norm_order == "code":  # fuse the raw kNN values, normalise once below
                ws.append(a * v)
            else:  # normalise each modality's graph, then fuse ('paper'; 'ulf' without initial graphs)
                ws.append(a * sym_norm(ei, n, v))
            eis.append(ei)
        edge_index, w = torch.cat(eis, dim=1), torch.cat(ws)  # [2, M·N·k], [M·N·k]
        if self.norm_order == "code":
            w = sym_norm(edge_index, n, w)  # degrees = row sums of Σ_m α_m Ŝ^m
        return edge_index, w

    def _masked_transform(self, features: dict[str, Tensor], node_mask: Tensor | None) -> dict[str, Tensor]:
        z = self.transform(features)
        if node_mask is None:
            return z
        keep = node_mask.to(next(iter(z.values())).dtype).unsqueeze(1)  # [N, 1]
        return {m: v * keep for m, v in z.items()}

    def _ulf(self, features: dict[str, Tensor] | None, initial: dict[str, tuple[Tensor, Tensor]] | None,
             alpha: Tensor, node_mask: Tensor | None, num_nodes: int | None) -> tuple[Tensor, Tensor]:
        """``Σ_m α_m N(λ S_m + (1 − λ) Ŝ^m)`` (either part may be absent, then weight 1)."""
        z = self._masked_transform(features, node_mask) if features is not None else None
        lam = self.lambda_coeff if (features is not None and initial is not None) else None
        eis, ws = [], []
        for a, m in zip(alpha, self.modalities, strict=True):
            parts_e, parts_w = [], []
            if z is not None:
                ei, v = self.knn(z[m], key=m)
                parts_e.append(ei)
                parts_w.append(v if lam is None else (1.0 - lam) * v)
            if initial is not None:
                ei, w = initial[m]
                parts_e.append(ei)
                parts_w.append(w if lam is None else lam * w)
            ei, w = torch.cat(parts_e, dim=1), torch.cat(parts_w)  # [2, E_m], [E_m]
            n = z[m].size(0) if z is not None else int(num_nodes)  # type: ignore[arg-type]
            eis.append(ei)
            ws.append(a * sym_norm(ei, n, w))  # degrees = row sums of λ S_m + (1 − λ) Ŝ^m
        return torch.cat(eis, dim=1), torch.cat(ws)

    def forward(self, features: dict[str, Tensor] | None,
                initial: dict[str, tuple[Tensor, Tensor]] | None = None,
                node_mask: Tensor | None = None, num_nodes: int | None = None) -> tuple[Tensor, Tensor]:
        r"""The item graph :math:`A`.

        Args:
            features: input features per modality; ``None`` skips the learned part
                (then :math:`A = \sum_m \alpha_m O_m`; with ``'ulf'``,
                :math:`\sum_m \alpha_m \mathcal{N}(S_m)`).
            initial: initial graph ``(edge_index, edge_weight)`` per modality, normalised
                (``'code'``, ``'paper'``) or not (``'ulf'``); ``None`` skips it (then :math:`A = L`).
            node_mask: ``[N]`` bool, nodes whose learned edges are kept (default: all).
            num_nodes: ``N``, needed only for ``'ulf'`` without ``features``.
        """
        if features is None and initial is None:
            raise ValueError("LatentGraph needs features, initial graphs, or both")
        alpha = self.alpha()
        if initial is not None:
            missing = [m for m in self.modalities if m not in initial]
            if missing:
                raise KeyError(f"LatentGraph: initial graphs of modalities {missing} are missing")
        if self.norm_order == "ulf":
            if features is None and num_nodes is None:
                raise ValueError("LatentGraph(norm_order='ulf') needs num_nodes when features is None")
            return self._ulf(features, initial, alpha, node_mask, num_nodes)
        eis, ws = [], []
        lam = self.lambda_coeff if (features is not None and initial is not None) else None
        if features is not None:
            ei, w = self.learned(features, alpha, node_mask)
            eis.append(ei)
            ws.append(w if lam is None else (1.0 - lam) * w)
        if initial is not None:
            for a, m in zip(alpha, self.modalities, strict=True):
                ei, w = initial[m]
                eis.append(ei)
                ws.append(a * w if lam is None else (lam * a) * w)
        return torch.cat(eis, dim=1), torch.cat(ws)

    def extra_repr(self) -> str:
        return (f"modalities={self.modalities}, out_dim={self.out_dim}, k={self.k}, "
                f"lambda_coeff={self.lambda_coeff}, norm_order={self.norm_order!r}")


class EpochGraphCache:
    """Learned graphs of one training epoch, keyed by name (``'item'``, ``'user'``).

    A model's ``train_graph(data, epoch)`` puts a fresh cache on a shallow copy of
    ``data``; its ``forward`` asks the cache for the graph with :meth:`get`. So the
    rebuild schedule lives in the per-epoch data, not in a mutable flag on the model:

    * ``'epoch'`` (the reference code): the first :meth:`get` of the epoch builds the
      graph with gradient and returns it as is; later calls return a detached copy
      (stored as a sparse CSR ``adj_t`` for the fast propagation path);
    * ``'batch'``: every call rebuilds with gradient.

    Args:
        refresh: ``'epoch'`` or ``'batch'``. (default: ``'epoch'``)
    """

    def __init__(self, refresh: str = "epoch") -> None:
        if refresh not in ("epoch", "batch"):
            raise ValueError(f"EpochGraphCache refresh must be 'epoch' or 'batch', got {refresh!r}")
        self.refresh = refresh
        self.builds = 0
        self._graphs: dict[str, Graph] = {}

    def get(self, key: str, build: Callable[[], tuple[Tensor, Tensor]], num_nodes: int) -> Graph:
        """The graph ``key``: ``build()``'s result, or this epoch's detached copy of it."""
        if self.refresh == "epoch" and key in self._graphs:
            return self._graphs[key]
        edge_index, edge_weight = build()
        self.builds += 1
        if self.refresh == "epoch":
            self._graphs[key] = (to_adj_t(edge_index, edge_weight.detach(), num_nodes, num_nodes), None)
        return edge_index, edge_weight

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(refresh={self.refresh!r}, built={sorted(self._graphs)})"


__all__ = ["LatentGraph", "EpochGraphCache", "NORM_ORDERS", "REFRESH"]
