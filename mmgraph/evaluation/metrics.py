r"""Top-K metrics on per-user hit matrices, with MMRec's definitions (protocol §4.3).

``hits`` is ``[B, K]`` (bool or float), column ``j`` = rank ``j + 1``, sorted by
rank; ``num_pos`` is ``[B]``, the user's number of relevant items ``P_u``. Every
function returns the per-user values ``[B]``; the evaluator averages them.

* Recall@K  = hits@K / P_u (denominator P_u, not min(K, P_u));
* Precision@K = hits@K / K;
* NDCG@K = DCG / IDCG, DCG = Σ_{j≤K} r_j / log2(j + 1), IDCG over min(K, P_u) hits;
* MAP@K = Σ_{j≤K} r_j · (hits@j / j) / min(K, P_u);
* Hit@K = 1[hits@K > 0].
"""

from __future__ import annotations

import torch
from torch import Tensor


def _cut(hits: Tensor, k: int) -> Tensor:
    if k > hits.size(1):
        raise ValueError(f"k={k} exceeds the hit matrix width {hits.size(1)}")
    return hits[:, :k].to(torch.float64)


def recall_at_k(hits: Tensor, num_pos: Tensor, k: int) -> Tensor:
    """Recall@k per user."""
    return _cut(hits, k).sum(1) / num_pos.to(torch.float64)


def precision_at_k(hits: Tensor, k: int) -> Tensor:
    """Precision@k per user."""
    return _cut(hits, k).sum(1) / k


def _discounts(k: int, device) -> Tensor:
    return 1.0 / torch.log2(torch.arange(2, k + 2, device=device, dtype=torch.float64))


def ndcg_at_k(hits: Tensor, num_pos: Tensor, k: int) -> Tensor:
    """NDCG@k per user (IDCG over ``min(k, P_u)`` ideal hits)."""
    h = _cut(hits, k)
    disc = _discounts(k, h.device)
    dcg = (h * disc).sum(1)
    idcg_table = torch.cumsum(disc, 0)
    n = num_pos.clamp(max=k).clamp(min=1).long()
    return dcg / idcg_table[n - 1]


def map_at_k(hits: Tensor, num_pos: Tensor, k: int) -> Tensor:
    """MAP@k per user, normalised by ``min(k, P_u)``."""
    h = _cut(hits, k)
    ranks = torch.arange(1, k + 1, device=h.device, dtype=torch.float64)
    prec = torch.cumsum(h, 1) / ranks
    return (h * prec).sum(1) / num_pos.clamp(max=k).clamp(min=1).to(torch.float64)


def hit_at_k(hits: Tensor, k: int) -> Tensor:
    """Hit@k per user (1 if any relevant item is in the top k)."""
    return (_cut(hits, k).sum(1) > 0).to(torch.float64)


METRICS = ("recall", "ndcg", "precision", "map", "hit")


def compute(name: str, hits: Tensor, num_pos: Tensor, k: int) -> Tensor:
    """Per-user values of metric ``name`` at ``k``."""
    if name == "recall":
        return recall_at_k(hits, num_pos, k)
    if name == "ndcg":
        return ndcg_at_k(hits, num_pos, k)
    if name == "precision":
        return precision_at_k(hits, k)
    if name == "map":
        return map_at_k(hits, num_pos, k)
    if name == "hit":
        return hit_at_k(hits, k)
    raise ValueError(f"unknown metric {name!r}; expected one of {METRICS}")
