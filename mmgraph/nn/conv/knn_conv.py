"""Weighted propagation over a kNN graph (item–item or user–user)."""

from __future__ import annotations

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

    def forward(self, x: Tensor, edge_index: Adj, edge_weight: OptTensor = None) -> Tensor:  # type: ignore[override]
        """Propagate ``x`` over the graph."""
        if self.norm is not None and not is_sparse(edge_index):
            edge_weight = normalize_weights(edge_index, x.size(0), edge_weight, self.norm)
        return self.propagate(edge_index, x=(x, x), edge_weight=edge_weight, size=None, adj_rev=None)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(normalize={self.norm!r})"
