"""Fixtures of the graph tests: a small random HeteroData with two modalities."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.data import HeteroData

from mmgraph.typing import ITEM, IU, UI, USER


def make_hetero(U: int = 14, I: int = 17, E: int = 60, seed: int = 0) -> HeteroData:
    g = torch.Generator().manual_seed(seed)
    key = torch.randperm(U * I, generator=g)[:E]
    ei = torch.stack([key // I, key % I])
    data = HeteroData()
    data[USER].num_nodes = U
    data[ITEM].num_nodes = I
    data[ITEM].x_image = torch.randn(I, 6, generator=g)
    data[ITEM].x_text = torch.randn(I, 4, generator=g)
    data[UI].edge_index = ei
    data[IU].edge_index = ei.flip(0)
    data.modalities = ["image", "text"]
    return data


@pytest.fixture
def hetero() -> HeteroData:
    return make_hetero()


@pytest.fixture
def make_graph_data():
    return make_hetero


def dense(edge_index: torch.Tensor, weight: torch.Tensor, n_src: int, n_dst: int) -> torch.Tensor:
    """``W[dst, src]`` with duplicate edges summed."""
    W = torch.zeros(n_dst, n_src, dtype=weight.dtype)
    W.index_put_((edge_index[1], edge_index[0]), weight, accumulate=True)
    return W


@pytest.fixture
def to_dense():
    return dense
