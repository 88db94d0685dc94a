r"""Top-K metrics on per-user hit matrices, with MMRec's definitions (protocol §4.3).

``hits`` is ``[B, K]`` (bool or float), column ``j`` = rank ``j + 1``, sorted by
rank; ``num_pos`` is ``[B]``, the user's number of relevant items ``P_u``. Every
function returns the per-user values ``[B]``; the evaluator averages them.

* Recall@K  = hits@K / P_u (denominator P_u, not min(K, P_u));
* Precision@K = hits@K / K;
* NDCG@K = DCG / IDCG, DCG = Σ_{j≤K} r_j / log2(j + 1), IDCG over min(K, P_u) hits;
* MAP@K = Σ_{j≤K} r_j · (hits@j / j) / min(K, P_u);
* Hit@K = 1[hits@K > 0];
* MRR@K = 1 / rank of the first hit within the top K (0 when there is none).

Beyond accuracy (RecBole's definitions), from the recommended item ids ``top [B, K]``:

* AvgPop@K (per user) = mean train popularity (number of train interactions) of the K items;
* Coverage@K (catalogue) = |∪_u top-K(u)| / |I|;
* Gini@K (catalogue) = Σ_{i=1..|I|} (2i − |I| − 1) · c_(i) / (|I| · Σ c), ``c_(i)`` the number of
  top-K lists item ``i`` appears in, sorted ascending over **all** items (never recommended: 0).
  0 = every item recommended equally often, → 1 = all exposure on one item.
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


def mrr_at_k(hits: Tensor, k: int) -> Tensor:
    """MRR@k per user: reciprocal rank of the first hit in the top k, 0 without one."""
    h = _cut(hits, k) > 0
    first = torch.argmax(h.to(torch.int8), dim=1)  # first True (0 when none: masked below)
    return torch.where(h.any(1), 1.0 / (first + 1).to(torch.float64), torch.zeros((), dtype=torch.float64,
                                                                                       device=h.device))


def avg_pop_at_k(top: Tensor, popularity: Tensor, k: int, real: Tensor | None = None) -> Tensor:
    """AvgPop@k per user: mean ``popularity`` of the first ``k`` recommended items (``top [B, >=k]``).

    ``real [B, >=k]`` (bool) marks the slots holding a candidate; the others (a list shorter than
    ``k`` padded with excluded items) are left out of the mean.
    """
    p = popularity[top[:, :k]].to(torch.float64)
    if real is None:
        return p.mean(1)
    r = real[:, :k]
    return (p * r).sum(1) / r.sum(1).clamp(min=1)


def coverage(counts: Tensor) -> float:
    """Catalogue coverage from per-item recommendation counts ``[I]``."""
    return float((counts > 0).sum()) / max(counts.numel(), 1)


def gini(counts: Tensor) -> float:
    """Gini index of per-item recommendation counts ``[I]`` (all items, zeros included)."""
    c = torch.sort(counts.to(torch.float64)).values
    n, total = c.numel(), float(c.sum())
    if n == 0 or total == 0:
        return 0.0
    i = torch.arange(1, n + 1, dtype=torch.float64, device=c.device)
    return float(((2 * i - n - 1) * c).sum()) / (n * total)


#: Metrics with one value per user from the hit matrix (averaged over users); :func:`compute`.
HIT_METRICS = ("recall", "ndcg", "precision", "map", "hit", "mrr")
METRICS = HIT_METRICS
#: Per-user metrics from the recommended ids and the train popularity.
LIST_METRICS = ("avg_pop",)
#: Catalogue-level metrics (one value per evaluation, no per-user values).
CATALOGUE_METRICS = ("coverage", "gini")
#: Everything the evaluator can report.
ALL_METRICS = HIT_METRICS + LIST_METRICS + CATALOGUE_METRICS


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
    if name == "mrr":
        return mrr_at_k(hits, k)
    raise ValueError(f"unknown metric {name!r} for a hit matrix; expected one of {HIT_METRICS}")
