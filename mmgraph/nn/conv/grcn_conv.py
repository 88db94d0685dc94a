"""GRCN's parameter-free dot-product attention convolution for one direction of a bipartite relation."""

from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.nn.conv import MessagePassing
from torch_geometric.typing import Adj, PairTensor, Size
from torch_geometric.utils import is_sparse, softmax

from mmgraph.utils.precision import dense_fp32, fp32_region


class _AttentionSpmm(torch.autograd.Function):
    """``csr(values) @ x`` whose value gradient is computed at the nonzeros only.

    ``torch.sparse.mm`` builds the gradient of CSR values as a dense ``|D| × |S|`` matrix
    masked afterwards (users × items on the user–item graph: 0.5 GB per call at Amazon Baby
    size). Here it is the sampled product ``<grad_d, x_s>`` per stored entry, and the gradient
    of ``x`` is a scatter of the weighted rows: ``O(|E|·F)`` memory either way.
    """

    @staticmethod
    def forward(ctx, crow: Tensor, col: Tensor, rows: Tensor, values: Tensor, x: Tensor) -> Tensor:  # noqa: D102
        ctx.save_for_backward(col, rows, values, x)
        return torch.sparse.mm(torch.sparse_csr_tensor(crow, col, values, (crow.numel() - 1, x.size(0))), x)

    @staticmethod
    def backward(ctx, grad: Tensor):  # noqa: D102
        col, rows, values, x = ctx.saved_tensors
        g_rows = grad[rows]  # [E, F]
        g_values = (g_rows * x[col]).sum(-1) if ctx.needs_input_grad[3] else None
        g_x = None
        if ctx.needs_input_grad[4]:
            g_x = torch.zeros_like(x).index_add_(0, col, g_rows * values.unsqueeze(1))
        return None, None, None, g_values, g_x


class GRCNConv(MessagePassing):
    r"""The graph-refining attention layer of `"Graph-Refined Convolutional Network for
    Multimedia Recommendation with Implicit Feedback" <https://arxiv.org/abs/2008.00210>`_
    (ACM MM'20), as the ``GATConv`` of GRCN's reference code and MMRec:

    .. math::
        \alpha_{sd} = \frac{\exp\langle \mathbf{x}_d, \mathbf{x}_s\rangle}
        {\sum_{s' \in \mathcal{N}(d)} \exp\langle \mathbf{x}_d, \mathbf{x}_{s'}\rangle},
        \qquad \mathbf{x}^{\prime}_d = \sum_{s \in \mathcal{N}(d)} \alpha_{sd}\, \mathbf{x}_s

    No weights, no self-loops (the reference removes them; a bipartite relation has none),
    no nonlinearity. The per-edge attention :math:`\alpha` is what GRCN uses to refine the
    user–item graph; ``return_attention_weights=True`` returns it, one value per edge: in the
    order of ``edge_index`` (reference path), or of the stored entries of a
    ``torch.sparse_csr`` ``adj_t`` (fast path: the dot products are computed at its nonzeros,
    whose values are ignored, and the sum is one ``spmm`` with the attention as values; the
    attention's gradient is computed at the nonzeros only, never as a dense matrix).

    Args:
        **kwargs: :class:`torch_geometric.nn.conv.MessagePassing` arguments.

    Shapes:
        - **input:** ``x`` ``(N, F)`` or a pair ``((|S|, F), (|D|, F))``; ``edge_index`` ``(2, |E|)``
          or a ``torch.sparse_csr`` ``adj_t`` ``(|D|, |S|)``.
        - **output:** ``(|D|, F)``, and ``(|E|)`` attention weights when asked for.
    """

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("aggr", "add")
        super().__init__(**kwargs)

    def forward(self, x: Tensor | PairTensor, edge_index: Adj, size: Size = None,
                return_attention_weights: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Attend over each destination's sources (softmax of dot products) and sum."""
        x = dense_fp32(x)
        if isinstance(x, Tensor):
            x = (x, x)
        if is_sparse(edge_index):
            if not (isinstance(edge_index, Tensor) and edge_index.layout == torch.sparse_csr):
                raise ValueError("GRCNConv's sparse path needs a torch.sparse_csr adj_t (or pass an edge_index)")
            crow, col = edge_index.crow_indices(), edge_index.col_indices()
            n_dst = edge_index.size(0)
            rows = torch.repeat_interleave(torch.arange(n_dst, device=crow.device), crow.diff())
            alpha = softmax((x[1][rows] * x[0][col]).sum(-1), rows, num_nodes=n_dst)
            with fp32_region(x[0].device.type):
                out = _AttentionSpmm.apply(crow, col, rows, alpha, x[0])
            return (out, alpha) if return_attention_weights else out
        if size is None:
            size = (x[0].size(0), x[1].size(0))
        alpha = self.edge_updater(edge_index, x=x, size=size)  # [E]
        out = self.propagate(edge_index, x=x, alpha=alpha, size=size)
        return (out, alpha) if return_attention_weights else out

    def edge_update(self, x_i: Tensor, x_j: Tensor, index: Tensor, size_i: int | None) -> Tensor:
        """Softmax over each destination's incoming edges of ``<x_dst, x_src>``."""
        return softmax((x_i * x_j).sum(-1), index, num_nodes=size_i)

    def message(self, x_j: Tensor, alpha: Tensor) -> Tensor:
        """Weight each source by its attention."""
        return alpha.view(-1, 1) * x_j

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}()"
