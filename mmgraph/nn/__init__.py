"""Neural building blocks: message-passing layers and losses."""

from mmgraph.nn.conv import BipartiteLGConv, KNNConv
from mmgraph.nn.dct import dct, dctn
from mmgraph.nn.losses import bpr_loss, emb_loss, l2_reg
from mmgraph.nn.pwc import ProgressiveWeightCopying, pwc_weights

__all__ = ["BipartiteLGConv", "KNNConv", "bpr_loss", "emb_loss", "l2_reg", "dct", "dctn", "ProgressiveWeightCopying", "pwc_weights"]
