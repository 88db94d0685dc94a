"""Edge-weight normalisations, computed once in the data layer.

All functions take ``edge_index`` with PyG's convention (row 0 source ``j``, row 1
target ``i``) and return the normalised weights ``[E]``. The dense equivalents:

* :func:`sym_norm`: ``D^{-1/2} W D^{-1/2}`` with ``D`` the row sums of ``W``
  (``W[i, j]`` = weight of edge ``j -> i``), i.e. ``w_ij / sqrt(d_i d_j)``;
* :func:`row_norm`: ``D^{-1} W``, each target's incoming weights sum to 1;
* :func:`bipartite_norm`: LightGCN's ``D_u^{-1/2} R D_i^{-1/2}`` for a bipartite
  relation, degrees counted on each side;
* :func:`rw_selfloop_norm`: one direction of ``D^{-1}(A + I)`` on the user–item
  graph (LATTICE's/NGCF's reference code), self-loop weights returned apart;
* :func:`softmax_norm`: ``softmax`` of each target's positive incoming weights
  (DualGNN's and DRAGON's user–user graph: softmax of co-interaction counts).

Nodes with zero degree get weight 0 on their (non-existent) edges: no ``inf`` and
no epsilon (MMRec's ``+1e-7`` changes weights by a relative ``~1e-7`` only).
"""

from __future__ import annotations

import torch
from torch import Tensor


def _inv(x: Tensor, power: float) -> Tensor:
    # pow on a masked copy: ``0 ** -p = inf`` would turn the backward of a learned
    # graph's degrees into ``0 * inf = nan`` even though the forward masks it.
    zero = x == 0
    return x.masked_fill(zero, 1.0).pow(-power).masked_fill(zero, 0.0)


def _weights(edge_index: Tensor, edge_weight: Tensor | None) -> Tensor:
    if edge_weight is None:
        return torch.ones(edge_index.size(1), device=edge_index.device)
    return edge_weight


def sym_norm(edge_index: Tensor, num_nodes: int, edge_weight: Tensor | None = None) -> Tensor:
    """``w_ij / sqrt(d_i d_j)`` with ``d`` = row sums (weighted in-degree of the target)."""
    w = _weights(edge_index, edge_weight)
    deg = torch.zeros(num_nodes, dtype=w.dtype, device=w.device).index_add_(0, edge_index[1], w)
    d = _inv(deg, 0.5)
    return d[edge_index[0]] * w * d[edge_index[1]]


def row_norm(edge_index: Tensor, num_nodes: int, edge_weight: Tensor | None = None) -> Tensor:
    """``w_ij / d_i`` with ``d`` = row sums."""
    w = _weights(edge_index, edge_weight)
    deg = torch.zeros(num_nodes, dtype=w.dtype, device=w.device).index_add_(0, edge_index[1], w)
    return w * _inv(deg, 1.0)[edge_index[1]]


def bipartite_norm(
    edge_index: Tensor, num_src: int, num_dst: int, edge_weight: Tensor | None = None
) -> Tensor:
    """``w_sd / sqrt(deg_src(s) · deg_dst(d))`` for a bipartite relation ``src -> dst``."""
    w = _weights(edge_index, edge_weight)
    deg_s = torch.zeros(num_src, dtype=w.dtype, device=w.device).index_add_(0, edge_index[0], w)
    deg_d = torch.zeros(num_dst, dtype=w.dtype, device=w.device).index_add_(0, edge_index[1], w)
    return _inv(deg_s, 0.5)[edge_index[0]] * w * _inv(deg_d, 0.5)[edge_index[1]]


def rw_selfloop_norm(
    edge_index: Tensor, num_dst: int, edge_weight: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """One direction of ``D^{-1}(A + I)`` (row-normalised, with self-loops) for a bipartite relation.

    Row ``d`` of ``D^{-1}(A + I)`` holds ``w_sd / (deg(d) + 1)`` for each neighbour ``s``
    and ``1 / (deg(d) + 1)`` on the diagonal, so each row sums to 1 (LATTICE's and
    NGCF's reference code). The diagonal term is not an edge of the relation: it is
    returned separately, for the model to add as ``self_weight · x_d``.

    Returns:
        ``(edge weights [E], self-loop weight of every destination node [num_dst])``.
    """
    w = _weights(edge_index, edge_weight)
    deg = torch.zeros(num_dst, dtype=w.dtype, device=w.device).index_add_(0, edge_index[1], w)
    inv = 1.0 / (deg + 1.0)
    return w * inv[edge_index[1]], inv


def softmax_norm(edge_index: Tensor, num_nodes: int, edge_weight: Tensor | None = None) -> Tensor:
    """``exp(w_ij) / sum_j' exp(w_ij')`` over the target's incoming edges with ``w > 0``; other edges get 0.

    DualGNN's (and DRAGON's) user–user weights: the softmax of the co-interaction counts of a
    user's neighbours. Edges of weight ``<= 0`` are not neighbours (the zero-count edges
    :func:`~mmgraph.graph.cointeraction_knn_graph` adds for users with fewer than ``k``
    co-interacting users), so they stay 0 and a target without positive edges aggregates
    nothing. Computed per target with its maximum subtracted (no overflow).
    """
    w = _weights(edge_index, edge_weight)
    pos = w > 0
    tgt, v = edge_index[1][pos], w[pos]
    mx = torch.full((num_nodes,), float("-inf"), dtype=w.dtype, device=w.device)
    mx = mx.scatter_reduce(0, tgt, v, reduce="amax", include_self=True)
    e = (v - mx[tgt]).exp()
    s = torch.zeros(num_nodes, dtype=w.dtype, device=w.device).index_add_(0, tgt, e)
    out = torch.zeros_like(w)
    out[pos] = e / s[tgt]
    return out


def normalize(edge_index: Tensor, num_nodes: int, edge_weight: Tensor | None, how: str) -> Tensor:
    """Dispatch on ``how`` in ``{'sym', 'row', 'softmax', 'none'}``."""
    if how == "sym":
        return sym_norm(edge_index, num_nodes, edge_weight)
    if how == "row":
        return row_norm(edge_index, num_nodes, edge_weight)
    if how == "softmax":
        return softmax_norm(edge_index, num_nodes, edge_weight)
    if how == "none":
        return _weights(edge_index, edge_weight)
    raise ValueError(f"unknown normalisation {how!r}; expected 'sym', 'row', 'softmax' or 'none'")


def to_adj_t(edge_index: Tensor, edge_weight: Tensor, num_src: int, num_dst: int) -> Tensor:
    """Transposed adjacency as a ``torch.sparse_csr`` tensor ``[num_dst, num_src]``.

    ``adj_t @ x_src`` aggregates messages into targets; this is the fast path that
    :class:`~mmgraph.nn.conv.BipartiteLGConv` takes through ``spmm``. Duplicate edges
    are summed.
    """
    adj = torch.sparse_coo_tensor(edge_index.flip(0), edge_weight, (num_dst, num_src))
    return adj.coalesce().to_sparse_csr()
