"""Weighted propagation over a kNN graph (item–item or user–user)."""

from __future__ import annotations

import weakref

import torch
from torch import Tensor
from torch_geometric.typing import Adj, OptTensor
from torch_geometric.utils import is_sparse

from mmgraph.graph.norm import normalize as normalize_weights
from mmgraph.nn.conv.bipartite_lg_conv import BipartiteLGConv


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
        if self.norm is not None and not is_sparse(edge_index):
            edge_weight = normalize_weights(edge_index, x.size(0), edge_weight, self.norm)
        if (adj_rev is None and isinstance(edge_index, Tensor) and edge_index.layout == torch.sparse_csr
                and not edge_index.requires_grad and torch.is_grad_enabled() and x.requires_grad):
            adj_rev = self._transpose(edge_index)
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
