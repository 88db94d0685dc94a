"""LightGCN convolution for a bipartite relation."""

from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.nn.conv import MessagePassing
from torch_geometric.typing import Adj, OptTensor, PairTensor, Size
from torch_geometric.utils import is_sparse

from mmgraph.graph.norm import bipartite_norm
from mmgraph.utils.precision import dense_fp32, fp32_region, fp32_spmm


class _SpmmWithTranspose(torch.autograd.Function):
    """``adj @ x`` whose backward uses a given ``adjᵀ`` (no CSR transpose per call)."""

    @staticmethod
    def forward(ctx, adj: Tensor, adj_transposed: Tensor, x: Tensor) -> Tensor:  # noqa: D102
        ctx.adj_transposed = adj_transposed
        return torch.sparse.mm(adj, x)

    @staticmethod
    def backward(ctx, grad: Tensor):  # noqa: D102
        return None, None, torch.sparse.mm(ctx.adj_transposed, grad)


class BipartiteLGConv(MessagePassing):
    r"""The LightGCN propagation of `"LightGCN: Simplifying and Powering Graph
    Convolution Network for Recommendation" <https://arxiv.org/abs/2002.02126>`_
    for one direction of a bipartite relation ``src -> dst``.

    .. math::
        \mathbf{x}^{\prime}_d = \sum_{s \in \mathcal{N}(d)} w_{sd}\, \mathbf{x}_s,
        \qquad w_{sd} = \frac{1}{\sqrt{\deg(s)}\sqrt{\deg(d)}} \text{ (LightGCN)}

    i.e. ``x_user' = Â_UI x_item`` and ``x_item' = Â_IU x_user`` with
    ``Â = D_u^{-1/2} R D_i^{-1/2}``. Wrapped in ``HeteroConv({UI: ..., IU: ...})`` it
    equals PyG's homogeneous ``LGConv`` on the ``(U + I)`` node graph. No weights, no
    self-loops, no nonlinearity. The weights are normally computed once by
    :func:`mmgraph.graph.build_graph` and passed as ``edge_weight`` (or as the
    values of a sparse ``adj_t``); ``normalize=True`` computes them on the fly.

    Args:
        normalize: compute ``w_sd`` from degrees in :meth:`forward` (only for an
            ``edge_index`` input; multiplies any given ``edge_weight``). (default: ``False``)
        **kwargs: :class:`torch_geometric.nn.conv.MessagePassing` arguments.

    Shapes:
        - **input:** ``x`` ``(|S|, F)`` or a pair ``((|S|, F), (|D|, F) or None)``;
          ``edge_index`` ``(2, |E|)`` or a sparse ``adj_t`` ``(|D|, |S|)``;
          ``edge_weight`` ``(|E|)`` (optional).
        - **output:** ``(|D|, F)``.
    """

    def __init__(self, normalize: bool = False, **kwargs) -> None:
        kwargs.setdefault("aggr", "add")
        super().__init__(**kwargs)
        self.normalize = normalize

    def forward(
        self,
        x: Tensor | PairTensor | tuple[Tensor, None],
        edge_index: Adj,
        edge_weight: OptTensor = None,
        size: Size = None,
        adj_rev: OptTensor = None,
    ) -> Tensor:
        """Propagate ``x`` from sources to destinations.

        ``adj_rev`` (optional, sparse path only) is the transpose of ``adj_t`` — for a
        bipartite relation, the reverse relation's ``adj_t``, which the data layer already
        holds. The backward pass then multiplies by it instead of transposing ``adj_t`` on
        every call (1.8x faster forward + backward on the Baby graph). It must not require
        gradients.
        """
        x = dense_fp32(x)  # under bf16 autocast: sparse sums stay fp32 (no bf16 kernel)
        if isinstance(x, Tensor):
            x = (x, x)
        if x[1] is None and size is None and not is_sparse(edge_index):
            # PyG would silently assume |D| = |S| and return the wrong number of rows.
            raise ValueError("BipartiteLGConv with x_dst=None needs size=(|S|, |D|) (or a sparse adj_t)")
        if self.normalize and not is_sparse(edge_index):
            n_src = x[0].size(0)
            n_dst = size[1] if size is not None else x[1].size(0)
            edge_weight = bipartite_norm(edge_index, n_src, n_dst, edge_weight)
        return self.propagate(edge_index, x=x, edge_weight=edge_weight, size=size, adj_rev=adj_rev)

    def message(self, x_j: Tensor, edge_weight: OptTensor) -> Tensor:
        """Reference path: weight each source embedding."""
        return x_j if edge_weight is None else edge_weight.view(-1, 1) * x_j

    def message_and_aggregate(self, adj_t: Adj, x: PairTensor, adj_rev: OptTensor = None) -> Tensor:
        """Fast path: one sparse-dense matrix product ``adj_t @ x_src``."""
        if (adj_rev is not None and self.aggr == "add" and isinstance(adj_t, Tensor)
                and not adj_t.requires_grad):
            with fp32_region(x[0].device.type):  # autocast would send the sparse addmm to bf16
                return _SpmmWithTranspose.apply(adj_t, adj_rev, dense_fp32(x[0]))
        return fp32_spmm(adj_t, x[0], reduce=self.aggr)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(normalize={self.normalize})"
