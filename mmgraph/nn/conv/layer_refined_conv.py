"""LightGCN propagation refined by each node's similarity to its layer-0 embedding (LayerGCN, COHESION)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor
from torch_geometric.typing import Adj, OptTensor, PairTensor, Size

from mmgraph.nn.conv.bipartite_lg_conv import BipartiteLGConv


class LayerRefinedConv(BipartiteLGConv):
    r"""The layer-refined graph convolution of `"Layer-refined Graph Convolutional Networks for
    Recommendation" <https://arxiv.org/abs/2207.11088>`_ (LayerGCN, ICDE'23), which COHESION
    (`"Composite Graph Convolutional Network with Dual-Stage Fusion for Multimodal
    Recommendation" <https://arxiv.org/abs/2504.04452>`_, SIGIR'25) applies per modality.

    A LightGCN step, then every destination's result is rescaled by its cosine similarity with
    a reference embedding :math:`\mathbf{r}_d` (the layer-0 "ego" embedding of that node):

    .. math::
        \mathbf{z}_d = \sum_{s \in \mathcal{N}(d)} w_{sd}\, \mathbf{x}_s, \qquad
        \mathbf{x}^{\prime}_d = \cos(\mathbf{z}_d, \mathbf{r}_d)\, \mathbf{z}_d, \qquad
        \cos(\mathbf{a}, \mathbf{b}) = \frac{\mathbf{a}^\top \mathbf{b}}
        {\max(\lVert\mathbf{a}\rVert, \epsilon)\,\max(\lVert\mathbf{b}\rVert, \epsilon)}

    (``torch.nn.functional.cosine_similarity``; the weight is not detached). With ``groups = G``
    the ``F`` channels are ``G`` independent blocks of ``F / G`` channels, each with its own
    cosine: ``G`` embeddings of the same graph propagate in one ``F``-wide sparse product
    (COHESION's ID and modality branches). The edge weights are normally LightGCN's
    :math:`1/\sqrt{\deg(s)\deg(d)}`, computed once by :func:`mmgraph.graph.build_graph`;
    on the :math:`(U + I)` node graph, ``HeteroConv({UI: ..., IU: ...})`` of this layer equals
    the homogeneous rule :math:`\mathbf{X}' = \mathrm{diag}(\cos(\hat A\mathbf{X},
    \mathbf{R}))\,\hat A\mathbf{X}`. No parameters.

    Args:
        groups: number of channel blocks with their own cosine. (default: ``1``)
        eps: :math:`\epsilon` of the cosine. (default: ``1e-8``, PyTorch's)
        normalize: compute :math:`w_{sd}` from the degrees (edge-list input only), as
            :class:`~mmgraph.nn.conv.BipartiteLGConv`. (default: ``False``)
        **kwargs: :class:`torch_geometric.nn.conv.MessagePassing` arguments.

    Shapes:
        - **input:** ``x`` ``(|S|, F)`` or a pair ``((|S|, F), (|D|, F) or None)``;
          ``edge_index`` ``(2, |E|)`` or a sparse ``adj_t`` ``(|D|, |S|)``;
          ``edge_weight`` ``(|E|)`` (optional); ``ref`` ``(|D|, F)``.
        - **output:** ``(|D|, F)``.
    """

    def __init__(self, groups: int = 1, eps: float = 1e-8, normalize: bool = False, **kwargs) -> None:
        if int(groups) < 1:
            raise ValueError(f"LayerRefinedConv groups must be >= 1, got {groups}")
        super().__init__(normalize=normalize, **kwargs)
        self.groups = int(groups)
        self.eps = float(eps)

    def forward(  # type: ignore[override]
        self,
        x: Tensor | PairTensor | tuple[Tensor, None],
        edge_index: Adj,
        edge_weight: OptTensor = None,
        *,
        ref: Tensor,
        size: Size = None,
        adj_rev: OptTensor = None,
    ) -> Tensor:
        """Propagate ``x`` from sources to destinations and rescale by ``cos(·, ref)`` per group.

        ``adj_rev``: the transpose of a sparse ``adj_t`` (see
        :meth:`BipartiteLGConv.forward <mmgraph.nn.conv.BipartiteLGConv.forward>`).
        """
        z = super().forward(x, edge_index, edge_weight, size=size, adj_rev=adj_rev)  # [D, F]
        if ref.shape != z.shape:
            raise ValueError(f"LayerRefinedConv: ref has shape {tuple(ref.shape)}, the output {tuple(z.shape)}")
        n, f = z.shape
        if f % self.groups:
            raise ValueError(f"LayerRefinedConv: {f} channels do not split into {self.groups} groups")
        zg = z.view(n, self.groups, f // self.groups)  # [D, G, F/G]
        cos = F.cosine_similarity(zg, ref.view_as(zg), dim=-1, eps=self.eps)  # [D, G]
        return (zg * cos.unsqueeze(-1)).view(n, f)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(groups={self.groups}, normalize={self.normalize})"
