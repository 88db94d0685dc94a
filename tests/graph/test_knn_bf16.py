"""topk_cosine(precision='bf16'): bf16 candidates re-ranked and certified in fp32 equal the fp32 result."""

from __future__ import annotations

import pytest
import torch

from mmgraph.graph.knn import bf16_dot_error_bound, knn_graph, topk_cosine


def features(n=1500, f=256, clusters=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, f, generator=g)
    return torch.relu(centres[torch.randint(0, clusters, (n,), generator=g)] + torch.randn(n, f, generator=g))


def same_sets(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((torch.sort(a, 1).values == torch.sort(b, 1).values).all(1).float().mean())


@pytest.mark.parametrize("loop", [True, False])
@pytest.mark.parametrize("seed", [0, 1])
def test_bf16_neighbours_equal_fp32(loop, seed):
    x = features(seed=seed)
    v32, i32 = topk_cosine(x, 10, loop=loop, batch_size=256)
    v16, i16 = topk_cosine(x, 10, loop=loop, batch_size=256, precision="bf16")
    assert same_sets(i32, i16) >= 0.999  # ties aside
    assert torch.allclose(v16, v32, atol=1e-5)  # values are fp32 cosines, not bf16 ones
    if not loop:
        assert not (i16 == torch.arange(x.size(0)).unsqueeze(1)).any()


def test_uncertified_rows_fall_back_to_fp32():
    x = features(n=800, f=128, clusters=4, seed=3)  # dense clusters: near-ties, small gaps
    v32, i32 = topk_cosine(x, 10, loop=False)
    v16, i16 = topk_cosine(x, 10, loop=False, precision="bf16", candidates=10)  # no slack: most rows unsure
    assert topk_cosine.last_fallback_rows > 0
    assert same_sets(i32, i16) >= 0.999 and torch.allclose(v16, v32, atol=1e-5)
    assert not (i16 == torch.arange(x.size(0)).unsqueeze(1)).any()


def test_error_bound_holds():
    x = torch.nn.functional.normalize(features(n=600, f=512, seed=4), dim=1)
    exact = x @ x.T
    approx = (x.bfloat16() @ x.bfloat16().T).float()
    assert float((approx - exact).abs().max()) <= bf16_dot_error_bound(512)


def test_knn_graph_passes_precision_and_refuses_unknown():
    x = features(n=300, f=64)
    a = knn_graph(x, 5, precision="fp32")
    b = knn_graph(x, 5, precision="bf16")
    assert same_sets(a[0][0].view(300, 5), b[0][0].view(300, 5)) >= 0.99
    with pytest.raises(ValueError, match="precision"):
        topk_cosine(x, 5, precision="fp16")
