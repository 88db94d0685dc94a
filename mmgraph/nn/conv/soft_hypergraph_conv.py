"""Hypergraph propagation through a (soft) node–hyperedge incidence matrix, as in LGMRec."""

from __future__ import annotations

from torch import Tensor
from torch_geometric.nn.conv import MessagePassing
from torch_geometric.typing import OptTensor


class SoftHypergraphConv(MessagePassing):
    r"""The hypergraph layer of `"LGMRec: Local and Global Graph Learning for Multimodal
    Recommendation" <https://arxiv.org/abs/2312.16400>`_ (AAAI'24; MMRec's ``HGNNLayer``):
    nodes send their features to the hyperedges through the incidence :math:`\mathbf{H}`,
    and the hyperedges send them back through an output incidence :math:`\mathbf{H}_{out}`.

    .. math::
        \boldsymbol\Lambda = \mathbf{H}^\top \mathbf{X} \in \mathbb{R}^{K \times F}, \qquad
        \mathbf{X}' = \mathbf{H}_{out} \boldsymbol\Lambda
        = \mathbf{H}_{out} \mathbf{H}^\top \mathbf{X}

    No normalisation, weights, self-loops or nonlinearity (LGMRec's incidences are row-wise
    Gumbel-softmax assignments of the nodes to ``K`` hyperedges). :math:`\mathbf{H}_{out}`
    defaults to :math:`\mathbf{H}`; LGMRec passes the item incidence as :math:`\mathbf{H}` and
    :math:`[\mathbf{H}_u; \mathbf{H}_i]` as :math:`\mathbf{H}_{out}` so that one call gives the
    users' and the items' outputs from the same :math:`\boldsymbol\Lambda`. The
    :math:`N \times N` matrix :math:`\mathbf{H}_{out}\mathbf{H}^\top` is never formed.

    Two input forms:

    * **dense** (the fast path, for soft incidences): ``incidence`` ``[N, K]`` and
      ``incidence_out`` ``[N_out, K]`` floating-point tensors; two matrix products, :math:`O(NKF)`.
    * **edge list** (PyG's message path, for sparse/hard incidences): ``incidence`` a
      ``[2, E]`` index (row 0 node, row 1 hyperedge) with ``edge_weight`` ``[E]`` and
      ``num_hyperedges``; ``incidence_out`` likewise with ``edge_weight_out`` and
      ``num_nodes_out`` (default: the input incidence and ``N``).

    :meth:`to_hyperedges` and :meth:`to_nodes` are the two halves (``Λ`` itself is useful: the
    outputs have rank at most ``K``).

    Args:
        **kwargs: :class:`torch_geometric.nn.conv.MessagePassing` arguments (``aggr='add'``).

    Shapes:
        - **input:** ``x`` ``(N, F)``; ``incidence`` ``(N, K)`` or ``(2, E)``;
          ``incidence_out`` ``(N_out, K)`` or ``(2, E_out)`` (optional).
        - **output:** ``(N_out, F)``.
    """

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("aggr", "add")
        super().__init__(**kwargs)

    def forward(self, x: Tensor, incidence: Tensor, incidence_out: OptTensor = None, *,
                edge_weight: OptTensor = None, num_hyperedges: int | None = None,
                edge_weight_out: OptTensor = None, num_nodes_out: int | None = None) -> Tensor:
        """``H_out (Hᵀ x)``; see the class docstring for the two input forms."""
        lam = self.to_hyperedges(x, incidence, edge_weight=edge_weight, num_hyperedges=num_hyperedges)
        if incidence_out is None:
            incidence_out, edge_weight_out, num_nodes_out = incidence, edge_weight, x.size(0)
        return self.to_nodes(lam, incidence_out, edge_weight=edge_weight_out, num_nodes=num_nodes_out)

    def to_hyperedges(self, x: Tensor, incidence: Tensor, *, edge_weight: OptTensor = None,
                      num_hyperedges: int | None = None) -> Tensor:
        """The first half, ``Λ = Hᵀ x`` ``[K, F]`` (nodes → hyperedges)."""
        if incidence.is_floating_point():  # dense soft incidence
            if incidence.dim() != 2 or incidence.size(0) != x.size(0):
                raise ValueError(f"dense incidence must be [N={x.size(0)}, K], got {tuple(incidence.shape)}")
            return incidence.t() @ x
        if num_hyperedges is None:
            raise ValueError("an edge-list incidence needs num_hyperedges")
        return self.propagate(incidence, x=(x, None), edge_weight=edge_weight,
                              size=(x.size(0), num_hyperedges))

    def to_nodes(self, lam: Tensor, incidence_out: Tensor, *, edge_weight: OptTensor = None,
                 num_nodes: int | None = None) -> Tensor:
        """The second half, ``H_out Λ`` ``[N_out, F]`` (hyperedges → nodes)."""
        if incidence_out.is_floating_point():
            if incidence_out.dim() != 2 or incidence_out.size(1) != lam.size(0):
                raise ValueError(f"dense incidence_out must be [N_out, K={lam.size(0)}], "
                                 f"got {tuple(incidence_out.shape)}")
            return incidence_out @ lam
        if num_nodes is None:
            raise ValueError("an edge-list incidence_out needs num_nodes_out")
        return self.propagate(incidence_out.flip(0), x=(lam, None), edge_weight=edge_weight,
                              size=(lam.size(0), num_nodes))

    def message(self, x_j: Tensor, edge_weight: OptTensor) -> Tensor:
        """Weight each sender's features by its incidence value."""
        return x_j if edge_weight is None else edge_weight.view(-1, 1) * x_j

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}()"
