"""Message-passing layers, one per file."""

from mmgraph.nn.conv.bipartite_gcn_conv import BipartiteGCNConv
from mmgraph.nn.conv.bipartite_lg_conv import BipartiteLGConv
from mmgraph.nn.conv.grcn_conv import GRCNConv
from mmgraph.nn.conv.knn_conv import KNNConv
from mmgraph.nn.conv.layer_refined_conv import LayerRefinedConv
from mmgraph.nn.conv.mmgcn_conv import MMGCNConv
from mmgraph.nn.conv.ngcf_conv import NGCFConv
from mmgraph.nn.conv.soft_hypergraph_conv import SoftHypergraphConv

__all__ = ["BipartiteLGConv", "BipartiteGCNConv", "KNNConv", "NGCFConv", "SoftHypergraphConv", "MMGCNConv", "GRCNConv", "LayerRefinedConv"]
