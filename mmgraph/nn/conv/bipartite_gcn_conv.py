"""Linear graph convolution with a weight matrix for one direction of a bipartite relation."""

from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.typing import Adj, OptTensor, PairTensor, Size

from mmgraph.nn.conv.bipartite_lg_conv import BipartiteLGConv


class BipartiteGCNConv(BipartiteLGConv):
    r"""The heterogeneous user–item graph convolution of `"Cross-Modal Attention
    Network with Dual Graph Learning in Multimodal Recommendation"
    <https://arxiv.org/abs/2601.11151>`_ (CRANE, eqs. 3–4): a normalised neighbourhood sum
    followed by a trainable linear map, no bias and no nonlinearity.

    .. math::
        \mathbf{x}^{\prime}_d = \Big(\sum_{s \in \mathcal{N}(d)} w_{sd}\, \mathbf{x}_s\Big)
        \mathbf{W} = \sum_{s \in \mathcal{N}(d)} w_{sd}\, \mathbf{x}_s \mathbf{W}

    i.e. ``x_user' = Â_UI x_item W`` and ``x_item' = Â_IU x_user W``. One instance applied
    to both directions shares :math:`\mathbf{W}` between users and items, which equals
    :math:`\hat{A} Z \mathbf{W}` on the homogeneous ``U + I`` graph. :math:`\mathbf{W}` is
    applied to the sources before propagation (both maps are linear, so the order does
    not change the result). The edge weights (e.g. ``1/sqrt(deg(s) deg(d))`` of a
    DropEdge-sampled graph) come from the caller, as for
    :class:`~mmgraph.nn.conv.BipartiteLGConv`.

    Args:
        in_channels: input size.
        out_channels: output size.
        normalize: compute LightGCN weights from degrees in :meth:`forward` (``edge_index``
            input only). (default: ``False``)
        **kwargs: :class:`torch_geometric.nn.conv.MessagePassing` arguments.

    Shapes:
        - **input:** ``x`` ``(|S|, F_in)`` or a pair ``((|S|, F_in), (|D|, F_in) or None)``;
          ``edge_index`` ``(2, |E|)`` or a sparse ``adj_t`` ``(|D|, |S|)``;
          ``edge_weight`` ``(|E|)`` (optional).
        - **output:** ``(|D|, F_out)``.
    """

    def __init__(self, in_channels: int, out_channels: int, normalize: bool = False, **kwargs) -> None:
        super().__init__(normalize=normalize, **kwargs)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.lin = torch.nn.Linear(in_channels, out_channels, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform :math:`\\mathbf{W}` (CRANE's initialiser)."""
        super().reset_parameters()
        torch.nn.init.xavier_uniform_(self.lin.weight)

    def forward(
        self,
        x: Tensor | PairTensor | tuple[Tensor, None],
        edge_index: Adj,
        edge_weight: OptTensor = None,
        size: Size = None,
        adj_rev: OptTensor = None,
    ) -> Tensor:
        """Transform the sources with :math:`\\mathbf{W}`, then propagate them to the destinations."""
        if isinstance(x, Tensor):
            x = (x, x)
        # x_dst only fixes the number of destinations (there are no self-loops)
        return super().forward((self.lin(x[0]), x[1]), edge_index, edge_weight, size=size, adj_rev=adj_rev)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, normalize={self.normalize})"
