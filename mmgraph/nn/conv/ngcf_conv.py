"""NGCF convolution (LATTICE reference-code form) for one direction of a relation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn.conv import MessagePassing
from torch_geometric.typing import Adj, OptTensor, PairTensor

from mmgraph.utils.precision import fp32_spmm


class NGCFConv(MessagePassing):
    r"""The graph convolution of `"Neural Graph Collaborative Filtering"
    <https://arxiv.org/abs/1905.08108>`_ (SIGIR'19), in the form used by the LATTICE
    reference code.

    .. math::
        \mathbf{s}_i = \sum_{j \in \mathcal{N}(i)} w_{ji}\, \mathbf{x}_j + c_i\, \mathbf{x}_i,
        \qquad
        \mathbf{x}^{\prime}_i = \sigma\big(\mathbf{W}_1 \mathbf{s}_i + \mathbf{b}_1\big)
        + \sigma\big(\mathbf{W}_2 (\mathbf{x}_i \odot \mathbf{s}_i) + \mathbf{b}_2\big)

    with :math:`\sigma` the LeakyReLU. With the weights of
    ``GraphSpec(ui_norm='rw_selfloop')`` (:math:`w_{ji} = 1/(\deg(i) + 1)` and the
    self-loop weight :math:`c_i = 1/(\deg(i)+1)`), :math:`\mathbf{s} = D^{-1}(A + I)\mathbf{X}`
    is the reference's ``side`` embedding. The same layer (shared :math:`\mathbf{W}_1,
    \mathbf{W}_2`) is applied to both directions of the user–item graph, which equals
    one NGCF layer on the homogeneous ``U + I`` graph. Message dropout and the
    row-normalisation of the layer outputs belong to the model.

    Args:
        in_channels: input size.
        out_channels: output size.
        negative_slope: LeakyReLU slope (PyTorch's default, as the reference). (default: ``0.01``)
        bias: learn :math:`\mathbf{b}_1, \mathbf{b}_2`. (default: ``True``)
        **kwargs: :class:`torch_geometric.nn.conv.MessagePassing` arguments.

    Shapes:
        - **input:** ``x`` ``(N, F_in)`` or a pair ``((|S|, F_in), (|D|, F_in))``;
          ``edge_index`` ``(2, |E|)`` or a sparse ``adj_t`` ``(|D|, |S|)``;
          ``edge_weight`` ``(|E|)`` (optional); ``self_weight`` ``(|D|)`` (optional).
        - **output:** ``(|D|, F_out)``.
    """

    def __init__(self, in_channels: int, out_channels: int, negative_slope: float = 0.01,
                 bias: bool = True, **kwargs) -> None:
        kwargs.setdefault("aggr", "add")
        super().__init__(**kwargs)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.negative_slope = negative_slope
        self.lin1 = torch.nn.Linear(in_channels, out_channels, bias=bias)  # W1, b1 (sum term)
        self.lin2 = torch.nn.Linear(in_channels, out_channels, bias=bias)  # W2, b2 (bi-interaction)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``nn.Linear``'s default initialisation (as the reference code)."""
        super().reset_parameters()
        self.lin1.reset_parameters()
        self.lin2.reset_parameters()

    def forward(self, x: Tensor | PairTensor, edge_index: Adj, edge_weight: OptTensor = None,
                self_weight: OptTensor = None) -> Tensor:
        """Propagate ``x`` from sources to destinations and transform."""
        if isinstance(x, Tensor):
            x = (x, x)
        x_dst = x[1]
        side = self.propagate(edge_index, x=x, edge_weight=edge_weight, size=None)  # [|D|, F_in]
        if self_weight is not None:
            side = side + self_weight.view(-1, 1) * x_dst
        return (F.leaky_relu(self.lin1(side), self.negative_slope)
                + F.leaky_relu(self.lin2(x_dst * side), self.negative_slope))

    def message(self, x_j: Tensor, edge_weight: OptTensor) -> Tensor:
        """Reference path: weight each source embedding."""
        return x_j if edge_weight is None else edge_weight.view(-1, 1) * x_j

    def message_and_aggregate(self, adj_t: Adj, x: PairTensor) -> Tensor:
        """Fast path: one sparse-dense matrix product ``adj_t @ x_src``."""
        return fp32_spmm(adj_t, x[0], reduce=self.aggr)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.in_channels}, {self.out_channels})"
