"""Graph utilities: blockwise kNN, normalisation, declarative specs with a content-hash cache."""

from mmgraph.graph.build import GraphSpec, build_graph, tensor_digest
from mmgraph.graph.knn import cointeraction_knn_graph, knn_graph, scatter_mean_features, topk_cosine
from mmgraph.graph.norm import (
    bipartite_norm,
    normalize,
    row_norm,
    rw_selfloop_norm,
    softmax_norm,
    sym_norm,
    to_adj_t,
)

__all__ = [
    "GraphSpec",
    "build_graph",
    "tensor_digest",
    "knn_graph",
    "topk_cosine",
    "cointeraction_knn_graph",
    "scatter_mean_features",
    "bipartite_norm",
    "sym_norm",
    "row_norm",
    "rw_selfloop_norm",
    "softmax_norm",
    "normalize",
    "to_adj_t",
]
