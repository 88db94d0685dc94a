"""MMGCN's modality-specific graph convolution layer for one direction of a bipartite relation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn.conv import MessagePassing
from torch_geometric.typing import Adj, OptTensor, PairTensor, Size
from torch_geometric.utils import is_sparse

from mmgraph.utils.precision import fp32_spmm


class MMGCNConv(MessagePassing):
    r"""One layer of the modality-specific GCN of `"MMGCN: Multi-modal Graph Convolution
    Network for Personalized Recommendation of Micro-video"
    <https://arxiv.org/abs/1908.10195>`_ (ACM MM'19), as MMRec's ``MMGCN.GCN`` (eqs. 1, 5, 6):

    .. math::
        \mathbf{h}_d = \phi\Big(\frac{1}{|\mathcal{N}(d)|}\sum_{s \in \mathcal{N}(d)}
        \mathbf{x}_s \mathbf{W}\Big), \qquad
        \hat{\mathbf{x}}_d = \phi(\mathbf{W}_l \mathbf{x}_d + \mathbf{b}_l) + \mathbf{e}_d,

    .. math::
        \mathbf{x}^{\prime}_d = \phi\big(\mathbf{W}_g [\mathbf{h}_d ; \hat{\mathbf{x}}_d] +
        \mathbf{b}_g\big) \text{ (concat)} \quad\text{or}\quad
        \phi\big(\mathbf{W}_g \mathbf{h}_d + \mathbf{b}_g + \hat{\mathbf{x}}_d\big)

    with :math:`\phi` the LeakyReLU, mean aggregation over the neighbours (a destination
    without neighbours gets :math:`\mathbf{h}_d = \phi(\mathbf{0}) = \mathbf{0}`), and
    :math:`\mathbf{e}_d` the destination's ID embedding (omitted when ``None``: MMRec's
    ``has_id=False``). :math:`\mathbf{W}` is ``in × in`` (no bias), :math:`\mathbf{W}_l` ``in →
    out``, :math:`\mathbf{W}_g` ``in + out → out`` (concat) or ``in → out``. The same layer
    applied to both directions of the user–item graph (users from items, items from users,
    shared weights) is one layer of MMRec's homogeneous ``(U + I)`` GCN.

    The mean is PyG's ``aggr='mean'``: pass the graph with unit weights
    (``GraphSpec(ui_norm='none')``); the sparse path is ``spmm(adj_t, ·, reduce='mean')``.

    Args:
        in_channels: input size.
        out_channels: output size (the ID embedding size).
        concat: concatenate :math:`[\mathbf{h}; \hat{\mathbf{x}}]` before :math:`\mathbf{W}_g`
            (MMRec: ``self.concate = 'False'``, a non-empty string, so ``True``). (default: ``True``)
        negative_slope: LeakyReLU slope. (default: ``0.01``)
        **kwargs: :class:`torch_geometric.nn.conv.MessagePassing` arguments.

    Shapes:
        - **input:** ``x`` a pair ``((|S|, in), (|D|, in))``; ``edge_index`` ``(2, |E|)`` or a
          sparse ``adj_t`` ``(|D|, |S|)`` with unit weights; ``id_emb`` ``(|D|, out)`` (optional).
        - **output:** ``(|D|, out)``.
    """

    def __init__(self, in_channels: int, out_channels: int, concat: bool = True,
                 negative_slope: float = 0.01, **kwargs) -> None:
        kwargs.setdefault("aggr", "mean")
        super().__init__(**kwargs)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.concat = concat
        self.negative_slope = negative_slope
        self.weight = torch.nn.Parameter(torch.empty(in_channels, in_channels))  # conv_embed (BaseModel)
        self.lin = torch.nn.Linear(in_channels, out_channels)  # linear_layer
        self.lin_g = torch.nn.Linear(in_channels + out_channels if concat else in_channels, out_channels)  # g_layer
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """MMRec's init: Xavier-normal :math:`\\mathbf{W}` and :math:`\\mathbf{W}_l`, PyTorch's default
        for the biases and :math:`\\mathbf{W}_g` (MMRec re-initialises the first layer's
        :math:`\\mathbf{W}_g` Xavier-normal; the model does that)."""
        super().reset_parameters()
        self.lin.reset_parameters()
        self.lin_g.reset_parameters()
        torch.nn.init.xavier_normal_(self.weight)
        torch.nn.init.xavier_normal_(self.lin.weight)

    def forward(self, x: PairTensor, edge_index: Adj, id_emb: OptTensor = None, size: Size = None) -> Tensor:
        """Aggregate the sources into the destinations and combine with the destinations' own features."""
        x_src, x_dst = x
        if size is None and not is_sparse(edge_index):
            size = (x_src.size(0), x_dst.size(0))
        agg = self.propagate(edge_index, x=(x_src @ self.weight, x_dst), size=size)  # mean_s x_s W
        h = F.leaky_relu(agg, self.negative_slope)
        x_hat = F.leaky_relu(self.lin(x_dst), self.negative_slope)
        if id_emb is not None:
            x_hat = x_hat + id_emb
        if self.concat:
            return F.leaky_relu(self.lin_g(torch.cat([h, x_hat], dim=-1)), self.negative_slope)
        return F.leaky_relu(self.lin_g(h) + x_hat, self.negative_slope)

    def message(self, x_j: Tensor) -> Tensor:
        """Reference path: the (transformed) source features."""
        return x_j

    def message_and_aggregate(self, adj_t: Adj, x: PairTensor) -> Tensor:
        """Fast path: ``spmm(adj_t, x_src, reduce='mean')`` (unit weights: the neighbour mean)."""
        return fp32_spmm(adj_t, x[0], reduce=self.aggr)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, concat={self.concat})"
