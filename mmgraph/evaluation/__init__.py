"""Full-ranking evaluation and top-K metrics."""

from mmgraph.evaluation.metrics import (
    ALL_METRICS,
    avg_pop_at_k,
    coverage,
    gini,
    hit_at_k,
    map_at_k,
    mrr_at_k,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
)
from mmgraph.evaluation.ranking import FullRankingEvaluator, NonFiniteScoresError

__all__ = ["ALL_METRICS", "FullRankingEvaluator", "NonFiniteScoresError", "recall_at_k", "ndcg_at_k", "precision_at_k",
           "map_at_k", "hit_at_k", "mrr_at_k", "avg_pop_at_k", "coverage", "gini"]
