"""LatentGraph against a dense re-implementation of LATTICE's reference formula.

The oracle builds every item–item matrix densely, as the authors' code does: cosine matrix,
``topk`` + ``scatter`` of the kept values, ``D^{-1/2} X D^{-1/2}`` with row-sum degrees
(``inf -> 0``), fusion with ``softmax`` weights and the ``λ`` skip connection. Values and
gradients (w.r.t. the transforms, the modality logits and the raw features) must match.
"""

from __future__ import annotations

import pytest
import torch

from mmgraph.graph import knn_graph, sym_norm, topk_cosine
from mmgraph.nn.latent_graph import EpochGraphCache, LatentGraph

N, K, LAM = 40, 5, 0.9
DIMS = {"image": 12, "text": 7}


def dense_norm(adj: torch.Tensor) -> torch.Tensor:
    """The reference ``compute_normalized_laplacian``: D^{-1/2} A D^{-1/2}, row sums, inf -> 0."""
    d = adj.sum(-1).pow(-0.5)
    d = torch.where(torch.isinf(d), torch.zeros_like(d), d)
    return torch.diag(d) @ adj @ torch.diag(d)


def dense_knn(e: torch.Tensor, k: int) -> torch.Tensor:
    """The reference ``build_sim`` + ``build_knn_neighbourhood``: kept cosine values, dense."""
    en = e / e.norm(dim=-1, keepdim=True)
    sim = en @ en.t()
    vals, idx = sim.topk(k, dim=-1)
    return torch.zeros_like(sim).scatter_(-1, idx, vals)


def dense_reference(layer: LatentGraph, feats: dict, init: dict, order: str) -> torch.Tensor:
    alpha = torch.softmax(layer.modality_logits, 0)
    learned = [dense_knn(layer.transforms[m](feats[m]), K) for m in layer.modalities]
    if order == "code":
        L = dense_norm(sum(a * s for a, s in zip(alpha, learned, strict=True)))
    else:
        L = sum(a * dense_norm(s) for a, s in zip(alpha, learned, strict=True))
    init_fused = sum(a * init[m] for a, m in zip(alpha, layer.modalities, strict=True))
    return (1 - LAM) * L + LAM * init_fused


def to_dense(ei: torch.Tensor, w: torch.Tensor, n: int) -> torch.Tensor:
    m = torch.zeros(n, n, dtype=w.dtype)
    return m.index_put((ei[1], ei[0]), w, accumulate=True)  # A[i, j] = weight of j -> i


def setup(seed: int = 0, dtype=torch.float64):
    torch.manual_seed(seed)
    layer = LatentGraph(DIMS, out_dim=8, k=K, lambda_coeff=LAM).to(dtype)
    with torch.no_grad():
        layer.modality_logits.copy_(torch.tensor([0.3, 0.9]))  # unequal α: fusion order matters
    raw = {m: torch.randn(N, d, dtype=dtype) for m, d in DIMS.items()}
    feats = {m: torch.nn.Parameter(x.clone()) for m, x in raw.items()}
    # initial graphs as the data layer builds them (weighted kNN, self included, sym norm)
    init_sparse = {}
    for m, x in raw.items():
        ei, w = knn_graph(x, K, loop=True, weighted=True)
        init_sparse[m] = (ei, sym_norm(ei, N, w.to(dtype)))
    return layer, feats, raw, init_sparse


@pytest.mark.parametrize("order", ["code", "paper"])
def test_values_and_gradients_match_dense_reference(order):
    layer, feats, raw, init_sparse = setup()
    layer.norm_order = order
    init_dense = {m: dense_norm(dense_knn(raw[m], K)) for m in raw}
    for m in raw:  # the data layer's initial graphs (computed in float32) equal the reference's
        torch.testing.assert_close(to_dense(*init_sparse[m], N), init_dense[m], atol=1e-6, rtol=1e-5)
        init_dense[m] = to_dense(*init_sparse[m], N)  # then compare the rest at float64 precision

    h = torch.randn(N, 6, dtype=torch.float64)
    proj = torch.randn(N, 6, dtype=torch.float64)
    params = [*layer.parameters(), *feats.values()]

    ei, w = layer(feats, init_sparse)
    assert ei.shape == (2, 2 * N * K + sum(e.size(1) for e, _ in init_sparse.values()))
    ours = to_dense(ei, w, N)
    loss = ((ours @ h) * proj).sum()
    g_ours = torch.autograd.grad(loss, params)

    ref = dense_reference(layer, feats, init_dense, order)
    loss_ref = ((ref @ h) * proj).sum()
    g_ref = torch.autograd.grad(loss_ref, params)

    torch.testing.assert_close(ours, ref, atol=1e-10, rtol=1e-8)
    torch.testing.assert_close(loss, loss_ref)
    for a, b in zip(g_ours, g_ref, strict=True):
        assert a.abs().sum() > 0, "every parameter gets a gradient"
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)


def test_orders_differ_and_rows_of_learned_part():
    layer, feats, _, _ = setup()
    layer.norm_order = "code"
    a = to_dense(*layer.learned(feats), N)
    layer.norm_order = "paper"
    b = to_dense(*layer.learned(feats), N)
    assert not torch.allclose(a, b)
    # each node is its own nearest neighbour in the learned graphs (self included)
    ei, _ = layer.knn(layer.transform(feats)["image"])
    assert torch.equal(ei[0].view(N, K)[:, 0], torch.arange(N))


def test_blockwise_knn_equals_dense():
    layer, feats, _, _ = setup()
    z = layer.transform(feats)["text"].detach()
    vals, idx = topk_cosine(z, K, loop=True, batch_size=7)  # 7 does not divide N
    dense = torch.nn.functional.normalize(z, dim=1)
    dv, di = (dense @ dense.t()).topk(K, dim=1)
    torch.testing.assert_close(vals, dv.float())
    assert torch.equal(idx, di)
    # the layer's graph does not depend on the block size
    ref = layer(feats, None)
    layer.block_size = 3
    blk = layer(feats, None)
    assert torch.equal(ref[0], blk[0])
    torch.testing.assert_close(ref[1], blk[1])


def test_initial_only_and_learned_only():
    layer, feats, raw, init_sparse = setup()
    alpha = layer.alpha()
    ei, w = layer(None, init_sparse)  # 'never': Σ_m α_m O_m
    expect = sum(a * to_dense(*init_sparse[m], N) for a, m in zip(alpha, layer.modalities, strict=True))
    torch.testing.assert_close(to_dense(ei, w, N), expect)
    ei, w = layer(feats, None)  # λ = 0
    torch.testing.assert_close(to_dense(ei, w, N), to_dense(*layer.learned(feats), N))
    with pytest.raises(ValueError):
        layer(None, None)


def test_float32_and_zero_degree_rows_have_finite_gradients():
    layer, feats, _, _ = setup(dtype=torch.float32)
    layer.norm_order = "paper"  # normalise per modality, so the image graph's row 0 has degree 0
    with torch.no_grad():  # node 0's transformed image feature is the zero vector: cosines all 0
        layer.transforms["image"].bias.zero_()
        feats["image"][0].zero_()
    ei, w = layer(feats, None)
    w.sum().backward()
    for p in layer.parameters():
        assert torch.isfinite(p.grad).all()


def test_epoch_graph_cache():
    calls = []
    ei = torch.tensor([[0, 1], [1, 0]])

    def build():
        calls.append(1)
        return ei, torch.tensor([1.0, 2.0], requires_grad=True)

    cache = EpochGraphCache("epoch")
    first = cache.get("item", build, 2)
    assert first[1].requires_grad
    adj_t, none = cache.get("item", build, 2)
    assert none is None and adj_t.layout == torch.sparse_csr and not adj_t.requires_grad
    assert torch.equal(adj_t.to_dense(), torch.tensor([[0.0, 2.0], [1.0, 0.0]]))
    assert len(calls) == 1 and cache.builds == 1
    batch = EpochGraphCache("batch")
    batch.get("item", build, 2)
    batch.get("item", build, 2)
    assert len(calls) == 3
    with pytest.raises(ValueError):
        EpochGraphCache("never")


def test_repr_and_validation():
    layer = LatentGraph(DIMS, out_dim=8, k=3)
    assert "modalities=['image', 'text']" in repr(layer) and "norm_order='code'" in repr(layer)
    torch.testing.assert_close(layer.alpha(), torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError):
        LatentGraph({}, out_dim=8)
    with pytest.raises(ValueError):
        LatentGraph(DIMS, norm_order="other")


def test_neighbour_selection_is_reused_for_identical_features_only():
    """Evaluation, then the next epoch's first batch: same parameters, one top-k search; any change
    of the features (a training step) searches again. Values and gradients are unchanged."""
    torch.manual_seed(0)
    g = LatentGraph({"a": 6, "b": 5}, out_dim=4, k=3)
    feats = {"a": torch.randn(12, 6), "b": torch.randn(12, 5)}
    with torch.no_grad():
        ei0, w0 = g(feats)  # "evaluation"
    assert g.knn_selections == 2  # one per modality
    ei1, w1 = g(feats)  # "first training batch": same z, memo hit
    assert g.knn_selections == 2
    assert torch.equal(ei0, ei1) and torch.allclose(w0, w1) and w1.requires_grad
    fresh = LatentGraph({"a": 6, "b": 5}, out_dim=4, k=3)
    fresh.load_state_dict(g.state_dict())
    ei2, w2 = fresh(feats)
    torch.testing.assert_close(w2, w1)
    (ga,) = torch.autograd.grad(w1.sum(), g.transforms["a"].weight)
    (gb,) = torch.autograd.grad(w2.sum(), fresh.transforms["a"].weight)
    torch.testing.assert_close(ga, gb)  # the reused selection gives the same gradient
    with torch.no_grad():
        g.transforms["a"].weight.add_(0.5)  # a training step changes z_a (not z_b)
    g(feats)
    assert g.knn_selections == 3
    import pickle

    assert pickle.loads(pickle.dumps(g))._knn_memo == {}
