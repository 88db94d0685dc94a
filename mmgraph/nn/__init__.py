"""Neural building blocks: message-passing layers and losses."""

from mmgraph.nn.conv import BipartiteLGConv, KNNConv
from mmgraph.nn.losses import bpr_loss, emb_loss, l2_reg

__all__ = ["BipartiteLGConv", "KNNConv", "bpr_loss", "emb_loss", "l2_reg"]
