"""Serving a trained run: top-K recommendations, scores, similar items, embeddings, ANN retrieval."""

from mmgraph.inference.recommender import (
    EXCLUDE,
    InferenceError,
    Recommendations,
    Recommender,
    load_run_config,
)

__all__ = ["EXCLUDE", "InferenceError", "Recommendations", "Recommender", "load_run_config"]
