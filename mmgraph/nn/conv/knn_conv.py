"""Weighted propagation over a kNN graph (item–item or user–user)."""

from __future__ import annotations

import weakref

import torch
from torch import Tensor
from torch_geometric.typing import Adj, OptTensor
from torch_geometric.utils import is_sparse

from mmgraph.graph.norm import normalize as normalize_weights
from mmgraph.nn.conv.bipartite_lg_conv import BipartiteLGConv
from mmgraph.utils.precision import dense_fp32


class _EdgeWeightedSum(torch.autograd.Function):
    """``out[i] = Σ_{e: dst_e = i} w_e x[src_e]`` in edge chunks, with gradients for ``w`` and ``x``.

    PyG's message path materialises the ``[E, F]`` messages and autograd keeps them
    (several GB for a user–user kNN graph at Amazon Electronics size). Here only one chunk
    of ``chunk`` edges is gathered at a time, in the forward and in the backward:

    * ``∂x[j] = Σ_{e: src_e = j} w_e ∂out[dst_e]``,
    * ``∂w_e = ⟨∂out[dst_e], x[src_e]⟩``.

    Memory ``O(E + chunk · F)``.
    """

    @staticmethod
    def forward(ctx, x: Tensor, src: Tensor, dst: Tensor, w: Tensor, num_dst: int, chunk: int) -> Tensor:  # noqa: D102
        out = x.new_zeros(num_dst, x.size(1))
        for s in range(0, src.numel(), chunk):
            e = min(s + chunk, src.numel())
            out.index_add_(0, dst[s:e], x[src[s:e]] * w[s:e, None])
        ctx.save_for_backward(x, src, dst, w)
        ctx.chunk = chunk
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):  # noqa: D102
        x, src, dst, w = ctx.saved_tensors
        chunk = ctx.chunk
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[3]
        grad = grad.contiguous()
        dx = torch.zeros_like(x) if need_x else None
        dw = torch.empty_like(w) if need_w else None
        for s in range(0, src.numel(), chunk):
            e = min(s + chunk, src.numel())
            g = grad[dst[s:e]]  # [c, F]
            if need_x:
                dx.index_add_(0, src[s:e], g * w[s:e, None])
            if need_w:
                dw[s:e] = (g * x[src[s:e]]).sum(1)
        return dx, None, None, dw, None, None


def edge_weighted_sum(x: Tensor, edge_index: Tensor, edge_weight: Tensor, num_dst: int | None = None,
                      chunk: int | None = None) -> Tensor:
    r""":math:`X'_i = \sum_{(j \to i)} w_{ji} X_j` over an edge list, differentiable in ``x`` and
    ``edge_weight``, without an ``[E, F]`` tensor (edges processed ``chunk`` at a time; default:
    about 16M gathered values per chunk)."""
    n_dst = x.size(0) if num_dst is None else num_dst
    c = chunk or max(1, (1 << 24) // max(1, x.size(1)))
    return _EdgeWeightedSum.apply(x, edge_index[0], edge_index[1], edge_weight.to(x.dtype), n_dst, c)


class KNNConv(BipartiteLGConv):
    r"""Weighted neighbourhood sum over a square kNN graph (item–item or user–user),
    as used by LATTICE, FREEDOM, DualGNN and ULF.

    .. math::
        \mathbf{x}^{\prime}_i = \sum_{j \in \mathcal{N}_k(i)} s_{ij}\, \mathbf{x}_j

    with ``s_ij`` the (normalised) weight of edge ``j -> i``, i.e. ``X' = S X`` with
    the sparse ``S``. :func:`mmgraph.graph.build_graph` normally stores the
    normalised weights; ``normalize='sym'`` (``D^{-1/2} S D^{-1/2}``) or ``'row'``
    (``D^{-1} S``) computes them in :meth:`forward` for ad-hoc use.

    On the sparse path the backward pass needs :math:`S^\top`. PyTorch would transpose
    the CSR matrix on every backward (a sort over all edges); the layer instead keeps the
    transpose of the last ``adj_t`` it saw (held through a weak reference, so it is
    recomputed exactly when a new graph object arrives: a frozen graph is transposed once
    per run, a per-epoch learned graph once per epoch). ``adj_rev`` passes it explicitly.
    An edge list with weights (a learned graph whose weights carry gradient) goes through
    :func:`edge_weighted_sum`, which never forms the ``[E, F]`` messages.

    Args:
        normalize: ``None``, ``'sym'`` or ``'row'``. (default: ``None``)
        **kwargs: :class:`torch_geometric.nn.conv.MessagePassing` arguments.

    Shapes:
        - **input:** ``x`` ``(N, F)``; ``edge_index`` ``(2, |E|)`` or sparse
          ``adj_t`` ``(N, N)``; ``edge_weight`` ``(|E|)`` (optional).
        - **output:** ``(N, F)``.
    """

    def __init__(self, normalize: str | None = None, **kwargs) -> None:
        if normalize not in (None, "sym", "row"):
            raise ValueError(f"KNNConv normalize must be None, 'sym' or 'row', got {normalize!r}")
        super().__init__(normalize=False, **kwargs)
        self.norm = normalize
        self._rev_memo: tuple[weakref.ref, Tensor] | None = None

    def forward(self, x: Tensor, edge_index: Adj, edge_weight: OptTensor = None,  # type: ignore[override]
                adj_rev: OptTensor = None) -> Tensor:
        """Propagate ``x`` over the graph (``adj_rev``: the transpose of a sparse ``edge_index``)."""
        x = dense_fp32(x)
        if self.norm is not None and not is_sparse(edge_index):
            edge_weight = normalize_weights(edge_index, x.size(0), edge_weight, self.norm)
        if (adj_rev is None and isinstance(edge_index, Tensor) and edge_index.layout == torch.sparse_csr
                and not edge_index.requires_grad and torch.is_grad_enabled() and x.requires_grad):
            adj_rev = self._transpose(edge_index)
        if (edge_weight is not None and not is_sparse(edge_index) and self.aggr == "add"
                and not self.explain):  # the memory-lean edge-list path (same math as ``message``)
            return edge_weighted_sum(x, edge_index, edge_weight, x.size(0))
        return self.propagate(edge_index, x=(x, x), edge_weight=edge_weight, size=None, adj_rev=adj_rev)

    def _transpose(self, adj_t: Tensor) -> Tensor:
        """``adj_tᵀ`` as CSR, memoised for the last ``adj_t`` object."""
        memo = self._rev_memo
        if memo is not None and memo[0]() is adj_t:
            return memo[1]
        rev = adj_t.t().to_sparse_csr()
        self._rev_memo = (weakref.ref(adj_t), rev)
        return rev

    def __getstate__(self):  # weak references do not pickle; the memo is a cache
        state = self.__dict__.copy()
        state["_rev_memo"] = None
        return state

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(normalize={self.norm!r})"
