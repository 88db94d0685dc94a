r"""User modality profiles: an aggregate of the raw features of each user's training items.

CRANE (eq. 5) represents a user in modality :math:`m` by the **sum** of the features of the
items they interacted with, :math:`\mathbf{x}^m_u = \sum_{i \in \mathcal{N}_u} \mathbf{x}^m_i`
(the paper's §4.8 prefers it to the mean and the max). In matrix form
``X_U = R X_I`` (sum) or ``D_U^{-1} R X_I`` (mean), one sparse–dense product: the
``[E, F]`` matrix of gathered item features is never formed. The max is computed over
chunks of users, so at most ``chunk_edges × F`` values are gathered at a time.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mmgraph.utils.precision import dense_fp32, fp32_region

REDUCE = ("sum", "mean", "max")


def interaction_matrix(edge_index: Tensor, num_users: int, num_items: int, reduce: str = "sum",
                       dtype: torch.dtype = torch.float32) -> Tensor:
    """``R`` (``'sum'``) or ``D_U^{-1} R`` (``'mean'``) as a ``torch.sparse_csr`` ``[U, I]`` tensor."""
    if reduce not in ("sum", "mean"):
        raise ValueError(f"interaction_matrix reduce must be 'sum' or 'mean', got {reduce!r}")
    w = torch.ones(edge_index.size(1), device=edge_index.device, dtype=dtype)
    if reduce == "mean":
        deg = torch.bincount(edge_index[0], minlength=num_users).clamp_min(1).to(w.dtype)
        w = w / deg[edge_index[0]]
    r = torch.sparse_coo_tensor(edge_index, w, (num_users, num_items))
    return r.coalesce().to_sparse_csr()


def user_profiles(edge_index: Tensor, x_item: Tensor, num_users: int, reduce: str = "sum",
                  chunk_edges: int = 1 << 16) -> Tensor:
    """Profile ``[U, F]`` of every user from the features ``x_item [I, F]`` of their items.

    Args:
        edge_index: training interactions ``[2, E]`` (row 0 users, row 1 items).
        x_item: item features ``[I, F]``.
        num_users: ``U``.
        reduce: ``'sum'`` (CRANE), ``'mean'`` or ``'max'``. Users without items get zeros.
        chunk_edges: edges gathered at a time for ``'max'``. (default: ``65536``)
    """
    if reduce not in REDUCE:
        raise ValueError(f"reduce must be one of {REDUCE}, got {reduce!r}")
    if reduce != "max":
        x_item = dense_fp32(x_item)
        r = interaction_matrix(edge_index, num_users, x_item.size(0), reduce, x_item.dtype)
        with fp32_region(x_item.device.type):  # sparse products stay fp32 under bf16 autocast
            return torch.sparse.mm(r, x_item)  # [U, I] @ [I, F]
    out = x_item.new_full((num_users, x_item.size(1)), float("-inf"))
    for s in range(0, edge_index.size(1), chunk_edges):
        u, i = edge_index[0, s:s + chunk_edges], edge_index[1, s:s + chunk_edges]
        src = x_item[i]  # [chunk, F] at most
        out.scatter_reduce_(0, u.view(-1, 1).expand_as(src), src, "amax")
    no_items = torch.bincount(edge_index[0], minlength=num_users) == 0
    return out.masked_fill_(no_items.view(-1, 1), 0.0)


__all__ = ["user_profiles", "interaction_matrix", "REDUCE"]
