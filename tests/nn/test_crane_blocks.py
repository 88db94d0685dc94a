"""CRANE's building blocks: degree-aware DropEdge, user modality profiles, InfoNCE."""

from __future__ import annotations

import math

import pytest
import torch

from mmgraph.graph import bipartite_norm
from mmgraph.nn.drop_edge import degree_drop_edge, degree_keep_prob
from mmgraph.nn.losses import info_nce
from mmgraph.nn.user_profile import interaction_matrix, user_profiles

# 3 users x 4 items. Degrees: users (2, 1, 3), items (1, 3, 1, 1).
UI_EDGES = torch.tensor([[0, 0, 1, 2, 2, 2],
                         [0, 1, 1, 1, 2, 3]])


def random_bipartite(num_u, num_i, num_e, seed):
    g = torch.Generator().manual_seed(seed)
    key = torch.randperm(num_u * num_i, generator=g)[:num_e]
    return torch.stack([key // num_i, key % num_i])


# ------------------------------------------------------------------ DropEdge
def test_keep_prob_formula_by_hand():
    p = degree_keep_prob(UI_EDGES, 3, 4)
    by_hand = torch.tensor([1 / math.sqrt(2 * 1), 1 / math.sqrt(2 * 3), 1 / math.sqrt(1 * 3),
                            1 / math.sqrt(3 * 3), 1 / math.sqrt(3 * 1), 1 / math.sqrt(3 * 1)])
    torch.testing.assert_close(p, by_hand)
    # the scale c multiplies, and probabilities are capped at 1
    torch.testing.assert_close(degree_keep_prob(UI_EDGES, 3, 4, scale=1.5), (1.5 * by_hand).clamp(max=1))


@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_empirical_keep_fraction_and_renormalisation(scale):
    ei = random_bipartite(300, 200, 6000, seed=0)
    p = degree_keep_prob(ei, 300, 200, scale)
    expected = p.mean().item()  # the configured expected fraction
    gen = torch.Generator().manual_seed(1)
    fractions = []
    for _ in range(20):
        kept, w = degree_drop_edge(ei, 300, 200, scale, gen)
        fractions.append(kept.size(1) / ei.size(1))
        # the sampled graph is renormalised on its own degrees
        torch.testing.assert_close(w, bipartite_norm(kept, 300, 200))
    sd = math.sqrt((p * (1 - p)).sum().item()) / ei.size(1)  # std of one fraction
    assert abs(sum(fractions) / 20 - expected) < 4 * sd / math.sqrt(20)
    # kept edges are a subset of the graph, each at most once
    keys = set((ei[0] * 200 + ei[1]).tolist())
    assert set((kept[0] * 200 + kept[1]).tolist()) <= keys and kept.size(1) == len(set((kept[0] * 200 + kept[1]).tolist()))


def test_per_edge_frequency_follows_probability():
    gen = torch.Generator().manual_seed(2)
    # 1 user with 1 item (p = 1), plus a star: user 1 with 4 items, each of degree 1 (p = 1/2)
    ei = torch.tensor([[0, 1, 1, 1, 1], [0, 1, 2, 3, 4]])
    counts = torch.zeros(5)
    for _ in range(2000):
        kept, _ = degree_drop_edge(ei, 2, 5, generator=gen)
        counts[kept[1]] += 1
    assert counts[0] == 2000
    assert ((counts[1:] / 2000 - 0.5).abs() < 0.05).all()


# ----------------------------------------------------------- user profiles
@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
def test_user_profiles_equal_dense(reduce):
    torch.manual_seed(0)
    ei = random_bipartite(9, 7, 25, seed=3)
    x = torch.randn(7, 5, dtype=torch.float64)
    r = torch.zeros(10, 7, dtype=torch.float64)  # user 9 has no items
    r[ei[0], ei[1]] = 1.0
    if reduce == "sum":
        dense = r @ x
    elif reduce == "mean":
        dense = (r @ x) / r.sum(1, keepdim=True).clamp_min(1)
    else:
        dense = torch.stack([x[r[u] > 0].max(0).values if r[u].any() else torch.zeros(5, dtype=x.dtype)
                             for u in range(10)])
    got = user_profiles(ei, x, 10, reduce, chunk_edges=4)
    torch.testing.assert_close(got, dense, atol=1e-12, rtol=0)
    assert (got[9] == 0).all()


def test_user_profile_sum_by_hand():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [10.0, 10.0], [100.0, 0.0]])
    got = user_profiles(UI_EDGES, x, 3)
    torch.testing.assert_close(got, torch.tensor([[1.0, 1.0], [0.0, 1.0], [110.0, 11.0]]))
    r = interaction_matrix(UI_EDGES, 3, 4, "mean").to_dense()
    torch.testing.assert_close(r.sum(1), torch.ones(3))


# ---------------------------------------------------------------- InfoNCE
def test_info_nce_by_hand():
    # anchors and positives already unit-norm: cos = dot products
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    p = torch.tensor([[1.0, 0.0], [0.6, 0.8]], dtype=torch.float64)
    tau = 0.5
    # row 0: cos(a0, p0) = 1, cos(a0, p1) = 0.6; row 1: cos(a1, p0) = 0, cos(a1, p1) = 0.8
    l0 = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + math.exp(0.6 / tau)))
    l1 = -math.log(math.exp(0.8 / tau) / (math.exp(0 / tau) + math.exp(0.8 / tau)))
    assert info_nce(a, p, tau).item() == pytest.approx((l0 + l1) / 2, abs=1e-12)
    # scale invariance (cosine), and ≈ ln B for unrelated random views
    assert info_nce(3 * a, 0.1 * p, tau).item() == pytest.approx((l0 + l1) / 2, abs=1e-12)
    torch.manual_seed(0)
    big = info_nce(torch.randn(1000, 64), torch.randn(1000, 64), 1.0).item()
    assert abs(big - math.log(1000)) < 0.05
