r"""Adaptive degree-aware DropEdge on the user–item graph (CRANE, eq. 2).

Every training edge ``(u, i)`` is kept independently with probability

.. math::
    p_{ui} = \min\Big(1, \frac{c}{\sqrt{d_u\, d_i}}\Big)

with ``d_u, d_i`` the degrees in the full training graph, so edges between high-degree
nodes are dropped more often. ``c = 1`` is the paper's rule (no rate hyperparameter; the
expected kept fraction is the mean of ``p`` over the edges, about 0.09 on Amazon Baby);
``c`` scales the kept fraction up as an option. The sampled graph is renormalised with
LightGCN's weights ``1/sqrt(d̃_u d̃_i)`` on its own degrees.

:func:`degree_sample_edges` is the other rule, that of FREEDOM and of CRANE's published
code: a **fixed** number ``⌊keep·|E|⌋`` of edges drawn without replacement with
probability proportional to ``1/sqrt(d_u d_i)``.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from mmgraph.graph.norm import bipartite_norm, to_adj_t
from mmgraph.typing import ITEM, IU, UI, USER


def degree_keep_prob(edge_index: Tensor, num_users: int, num_items: int, scale: float = 1.0) -> Tensor:
    """Keep probability ``min(1, scale / sqrt(d_u d_i))`` of every edge ``[E]`` (user, item)."""
    deg_u = torch.bincount(edge_index[0], minlength=num_users).to(torch.float32)
    deg_i = torch.bincount(edge_index[1], minlength=num_items).to(torch.float32)
    return (scale * torch.rsqrt(deg_u[edge_index[0]] * deg_i[edge_index[1]])).clamp_(max=1.0)


def degree_drop_edge(edge_index: Tensor, num_users: int, num_items: int, scale: float = 1.0,
                     generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Sample the user–item graph with :func:`degree_keep_prob` and renormalise it.

    Args:
        edge_index: training interactions ``[2, E]`` (row 0 users, row 1 items).
        num_users: ``U``.
        num_items: ``I``.
        scale: ``c`` in ``min(1, c / sqrt(d_u d_i))``. (default: ``1.0``)
        generator: random generator on ``edge_index``'s device (default: the global one).

    Returns:
        ``(kept edge_index [2, E'], weights 1/sqrt(d̃_u d̃_i) [E'])``, degrees ``d̃`` of the
        sampled graph.
    """
    p = degree_keep_prob(edge_index, num_users, num_items, scale)  # [E]
    keep = torch.rand(p.shape, generator=generator, device=p.device) < p
    kept = edge_index[:, keep]  # [2, E']
    return kept, bipartite_norm(kept, num_users, num_items)


def degree_sample_edges(edge_index: Tensor, num_users: int, num_items: int, keep_ratio: float,
                        generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Keep ``⌊keep_ratio·|E|⌋`` edges drawn without replacement ``∝ 1/sqrt(d_u d_i)``, renormalised.

    Args:
        edge_index: training interactions ``[2, E]`` (row 0 users, row 1 items).
        num_users: ``U``.
        num_items: ``I``.
        keep_ratio: kept fraction in ``(0, 1]`` (``1 − dropout`` in MMRec).
        generator: random generator on ``edge_index``'s device (default: the global one, as MMRec).

    Returns:
        ``(kept edge_index [2, E'], weights 1/sqrt(d̃_u d̃_i) [E'])`` on the kept degrees.
    """
    if not 0.0 < keep_ratio <= 1.0:
        raise ValueError(f"keep_ratio must be in (0, 1], got {keep_ratio}")
    w = bipartite_norm(edge_index, num_users, num_items)  # 1/sqrt(d_u d_i): the sampling weights
    n_keep = int(edge_index.size(1) * keep_ratio)
    idx = torch.multinomial(w, n_keep, replacement=False, generator=generator)  # [E']
    kept = edge_index[:, idx]
    return kept, bipartite_norm(kept, num_users, num_items)


def with_ui_graph(data: HeteroData, edge_index: Tensor, edge_weight: Tensor) -> HeteroData:
    """A shallow copy of ``data`` whose ``UI``/``IU`` relations are ``edge_index [2, E']`` (user, item)
    with ``edge_weight [E']``, sparse ``adj_t`` included; ``data`` itself is not modified."""
    U, I = data[USER].num_nodes, data[ITEM].num_nodes
    out = copy.copy(data)  # copies the stores: assignments below do not reach ``data``
    rev = edge_index.flip(0)
    out[UI].edge_index, out[UI].edge_weight = edge_index, edge_weight
    out[UI].adj_t = to_adj_t(edge_index, edge_weight, U, I)  # [I, U]
    out[IU].edge_index, out[IU].edge_weight = rev, edge_weight
    out[IU].adj_t = to_adj_t(rev, edge_weight, I, U)  # [U, I]
    return out


__all__ = ["degree_keep_prob", "degree_drop_edge", "degree_sample_edges", "with_ui_graph"]
