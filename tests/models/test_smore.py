"""SMORE against the authors' forward and loss (kennethorq/SMORE ``src/models/smore.py``) re-implemented densely.

The oracle follows the reference line by line in float64 with its image and text slots (the tiny
dataset's ``image`` and ``text``), dense matrices for every graph, and explicit DFT matrices in
place of ``torch.fft`` (so the spectral step is checked against the transform's definition).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mmgraph.graph import GraphSpec
from mmgraph.models.base import build_model
from mmgraph.models.smore import SMORE, max_pool_graph, spectral_filter
from mmgraph.typing import II, ITEM, UI, USER, BPRBatch, item_knn_type

K = 4  # kNN size in these tests: small enough that the two modality graphs differ


def make(tiny_data, **kw):
    data, split = tiny_data
    torch.manual_seed(0)
    kw.setdefault("knn_k", K)
    model, data = build_model(SMORE, data, **kw)
    return model, data, split


# ----------------------------------------------------------------------------- the dense reference
def dense_norm_adj(data) -> torch.Tensor:
    """The reference's get_adj_mat: D^-1/2 A D^-1/2 of the (U + I) graph (inf -> 0)."""
    U, I = data[USER].num_nodes, data[ITEM].num_nodes
    ei = data[UI].edge_index
    A = torch.zeros(U + I, U + I, dtype=torch.float64)
    A[ei[0], U + ei[1]] = 1.0
    A[U + ei[1], ei[0]] = 1.0
    d = A.sum(1).pow(-0.5)
    d[torch.isinf(d)] = 0.0
    return d.view(-1, 1) * A * d.view(1, -1)


def dense_knn(x: torch.Tensor, k: int) -> torch.Tensor:
    """build_sim + build_knn_normalized_graph(topk=k, is_sparse=True, norm_type='sym'), densely:
    top-k cosine per row (self included), cosine values, deg = row sums, d_i^-1/2 w_ij d_j^-1/2."""
    xn = x.double().div(x.double().norm(p=2, dim=-1, keepdim=True))
    sim = xn @ xn.t()
    val, ind = torch.topk(sim, k, dim=-1)
    W = torch.zeros_like(sim).scatter_(-1, ind, val)
    d = W.sum(1).pow(-0.5)
    d[torch.isinf(d)] = 0.0
    return d.view(-1, 1) * W * d.view(1, -1)


def dense_max_pool_fusion(image_adj: torch.Tensor, text_adj: torch.Tensor) -> torch.Tensor:
    """max_pool_fusion: union of the supports, each missing entry -inf, element-wise max; 0 off the union."""
    img = torch.where(image_adj != 0, image_adj, torch.full_like(image_adj, float("-inf")))
    txt = torch.where(text_adj != 0, text_adj, torch.full_like(text_adj, float("-inf")))
    fused = torch.maximum(img, txt)
    return torch.where(torch.isinf(fused), torch.zeros_like(fused), fused)


def rfft_ortho(x: torch.Tensor) -> torch.Tensor:
    """X_k = n^-1/2 Σ_t x_t exp(-2πi kt/n), k = 0..n//2 (definition, not torch.fft)."""
    n = x.size(-1)
    t = torch.arange(n, dtype=torch.float64)
    k = torch.arange(n // 2 + 1, dtype=torch.float64)
    W = torch.exp(-2j * math.pi * torch.outer(t, k) / n)  # [n, n//2+1]
    return x.to(torch.complex128) @ W / math.sqrt(n)


def irfft_ortho(X: torch.Tensor, n: int) -> torch.Tensor:
    """Real inverse of a half spectrum: Hermitian extension, n^-1/2 Σ_k X_k exp(2πi kt/n), real part
    (which drops the imaginary parts of the DC and Nyquist bins, as a C2R transform does)."""
    full = torch.zeros(*X.shape[:-1], n, dtype=torch.complex128)
    h = n // 2 + 1
    full[..., :h] = X[..., :h]
    for k in range(h, n):
        full[..., k] = X[..., n - k].conj()
    t = torch.arange(n, dtype=torch.float64)
    k = torch.arange(n, dtype=torch.float64)
    W = torch.exp(2j * math.pi * torch.outer(k, t) / n)  # [n, n]
    return (full @ W).real / math.sqrt(n)


def dense_smore(model: SMORE, data, k: int, dropout_masks: list[torch.Tensor] | None = None):
    """The reference's forward(norm_adj, train=True): (u, i, side_embeds, content_embeds), float64."""
    U = model.num_users
    dbl = lambda t: t.detach().double()  # noqa: E731

    def lin(layer, x):
        return x @ dbl(layer.weight).t() + (dbl(layer.bias) if layer.bias is not None else 0)

    def seq(s, x):  # nn.Sequential(Linear, Tanh, Linear(bias=False))
        return lin(s[2], torch.tanh(lin(s[0], x)))

    v_feat, t_feat = data[ITEM].x_image.double(), data[ITEM].x_text.double()
    norm_adj = dense_norm_adj(data)
    R = norm_adj[:U, U:]
    image_original_adj, text_original_adj = dense_knn(v_feat, k), dense_knn(t_feat, k)
    fusion_adj = dense_max_pool_fusion(image_original_adj, text_original_adj)
    item_id = dbl(model.item_emb.weight)
    d = item_id.size(1)

    image_feats = lin(model.feat_proj["image"], dbl(model.raw_features["image"]))
    text_feats = lin(model.feat_proj["text"], dbl(model.raw_features["text"]))
    # spectrum_convolution
    image_fft, text_fft = rfft_ortho(image_feats), rfft_ortho(text_feats)
    cw = lambda p: torch.complex(dbl(p)[..., 0], dbl(p)[..., 1])  # noqa: E731  (view_as_complex)
    image_conv = irfft_ortho(image_fft * cw(model.filter["image"]), d)
    text_conv = irfft_ortho(text_fft * cw(model.filter["text"]), d)
    fusion_conv = irfft_ortho(text_fft * image_fft * cw(model.filter_fusion), d)

    image_item_embeds = item_id * torch.sigmoid(lin(model.gate["image"], image_conv))
    text_item_embeds = item_id * torch.sigmoid(lin(model.gate["text"], text_conv))
    fusion_item_embeds = item_id * torch.sigmoid(lin(model.gate_fusion, fusion_conv))

    ego = torch.cat([dbl(model.user_emb.weight), item_id])
    all_embeddings = [ego]
    for _ in range(model.num_ui_layers):
        ego = norm_adj @ ego
        all_embeddings.append(ego)
    content_embeds = torch.stack(all_embeddings, 1).mean(1)

    for _ in range(model.num_ii_layers):
        image_item_embeds = image_original_adj @ image_item_embeds
    image_embeds = torch.cat([R @ image_item_embeds, image_item_embeds])
    for _ in range(model.num_ii_layers):
        text_item_embeds = text_original_adj @ text_item_embeds
    text_embeds = torch.cat([R @ text_item_embeds, text_item_embeds])
    for _ in range(model.num_ii_layers):
        fusion_item_embeds = fusion_adj @ fusion_item_embeds
    fusion_embeds = torch.cat([R @ fusion_item_embeds, fusion_item_embeds])

    agg_image_embeds = torch.softmax(seq(model.query["image"], fusion_embeds), dim=-1) * image_embeds
    agg_text_embeds = torch.softmax(seq(model.query["text"], fusion_embeds), dim=-1) * text_embeds
    image_prefer = torch.sigmoid(lin(model.gate_prefer["image"], content_embeds))
    text_prefer = torch.sigmoid(lin(model.gate_prefer["text"], content_embeds))
    fusion_prefer = torch.sigmoid(lin(model.gate_prefer_fusion, content_embeds))
    if dropout_masks is not None:  # the same masks as the model's dropout drew (image, text, fusion)
        image_prefer, text_prefer, fusion_prefer = (p * m.double() for p, m in
                                                    zip((image_prefer, text_prefer, fusion_prefer), dropout_masks,
                                                        strict=True))
    agg_image_embeds = image_prefer * agg_image_embeds
    agg_text_embeds = text_prefer * agg_text_embeds
    fusion_embeds = fusion_prefer * fusion_embeds
    side_embeds = torch.stack([agg_image_embeds, agg_text_embeds, fusion_embeds]).mean(0)
    all_embeds = content_embeds + side_embeds
    return all_embeds[:U], all_embeds[U:], side_embeds, content_embeds


def reference_info_nce(view1, view2, temperature):
    view1, view2 = F.normalize(view1, dim=1), F.normalize(view2, dim=1)
    pos_score = torch.exp((view1 * view2).sum(dim=-1) / temperature)
    ttl_score = torch.exp(view1 @ view2.t() / temperature).sum(dim=1)
    return torch.mean(-torch.log(pos_score / ttl_score))


def reference_loss(model, data, batch, k, reg_weight, cl_weight, dropout_masks=None):
    users, pos_items, neg_items = batch
    ua, ia, side, content = dense_smore(model, data, k, dropout_masks)
    u, p, n = ua[users], ia[pos_items], ia[neg_items]
    pos_scores, neg_scores = (u * p).sum(1), (u * n).sum(1)
    regularizer = (0.5 * (u ** 2).sum() + 0.5 * (p ** 2).sum() + 0.5 * (n ** 2).sum()) / len(users)
    mf_loss = -torch.mean(F.logsigmoid(pos_scores - neg_scores))
    U = model.num_users
    cl = (reference_info_nce(side[U:][pos_items], content[U:][pos_items], 0.2)
          + reference_info_nce(side[:U][users], content[:U][users], 0.2))
    return {"bpr": mf_loss, "reg": regularizer, "cl": cl, "loss": mf_loss + reg_weight * regularizer + cl_weight * cl}


class FixedMaskDropout(torch.nn.Module):
    """Multiplies the i-th call's input by ``masks[i]`` (records the order of the calls)."""

    def __init__(self, masks):
        super().__init__()
        self.masks, self.calls = masks, 0

    def forward(self, x):
        out = x * self.masks[self.calls % len(self.masks)]
        self.calls += 1
        return out


BATCH = BPRBatch(torch.tensor([0, 3, 5, 3, 17, 59]), torch.tensor([1, 2, 7, 9, 2, 39]),
                 torch.tensor([4, 0, 6, 8, 30, 11]))


# ----------------------------------------------------------------------------- tests
def test_graphs_are_the_reference_knn_and_max_pool(tiny_data):
    model, data, _ = make(tiny_data)
    assert II not in data.edge_types  # no weighted-sum graph: SMORE max-pools the per-modality graphs
    dense = {}
    for m in ("image", "text"):
        assert item_knn_type(m) in model.required_edge_types
        dense[m] = dense_knn(data[ITEM][f"x_{m}"], K)
        torch.testing.assert_close(data[item_knn_type(m)].adj_t.to_dense().double(), dense[m], atol=1e-6, rtol=1e-5)
    fused = model.fusion_graph(data).to_dense().double()
    expect = dense_max_pool_fusion(dense["image"], dense["text"])
    assert (expect != 0).sum() > (dense["image"] != 0).sum()  # the union is larger than either graph
    torch.testing.assert_close(fused, expect, atol=1e-6, rtol=1e-5)


def test_max_pool_graph_by_hand():
    # graph a: 0->1 (0.5), 2->1 (0.2); graph b: 0->1 (0.3), 1->2 (0.7)
    a = (torch.tensor([[0, 2], [1, 1]]), torch.tensor([0.5, 0.2]))
    b = (torch.tensor([[0, 1], [1, 2]]), torch.tensor([0.3, 0.7]))
    ei, w = max_pool_graph([a, b], 3)
    got = {(int(s), int(t)): float(v) for s, t, v in zip(ei[0], ei[1], w, strict=True)}
    assert got == pytest.approx({(0, 1): 0.5, (2, 1): 0.2, (1, 2): 0.7})
    # a negative weight present in one graph only is kept (missing counts as -inf, not 0)
    c = (torch.tensor([[0], [2]]), torch.tensor([-0.1]))
    _, w2 = max_pool_graph([b, c], 3)
    assert sorted(w2.tolist()) == pytest.approx([-0.1, 0.3, 0.7])


@pytest.mark.parametrize("n", [64, 7])
def test_spectral_filter_is_the_dft_definition(n):
    torch.manual_seed(0)
    x = torch.randn(5, n, dtype=torch.float64)
    w = torch.randn(n // 2 + 1, 2, dtype=torch.float64)
    got = spectral_filter(torch.fft.rfft(x, dim=-1, norm="ortho"), w, n)
    expect = irfft_ortho(rfft_ortho(x) * torch.complex(w[:, 0], w[:, 1]), n)
    torch.testing.assert_close(got, expect, atol=1e-10, rtol=1e-10)
    # an all-pass filter (1 + 0j) is the identity
    ones = torch.stack([torch.ones(n // 2 + 1), torch.zeros(n // 2 + 1)], 1).double()
    torch.testing.assert_close(spectral_filter(torch.fft.rfft(x, dim=-1, norm="ortho"), ones, n), x)


@pytest.mark.parametrize("layers", [(3, 1), (2, 2), (0, 0)])
@pytest.mark.parametrize("embedding_dim", [64, 7])
def test_forward_equals_dense_reference(tiny_data, layers, embedding_dim):
    model, data, _ = make(tiny_data, num_ui_layers=layers[0], num_ii_layers=layers[1], embedding_dim=embedding_dim)
    assert model.modalities == ["image", "text"]
    model.eval()
    with torch.no_grad():
        e, side, content = model.embeddings(data)
        out = model(data)
    u, i, side_ref, content_ref = dense_smore(model, data, K)
    torch.testing.assert_close(content.double(), content_ref, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(side.double(), side_ref, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out["user"].double(), u, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out["item"].double(), i, atol=1e-6, rtol=1e-5)
    assert side_ref.abs().max() > 1e-4  # the side view is not trivially zero


def test_dropout_is_on_the_preference_gates(tiny_data):
    model, data, _ = make(tiny_data, dropout=0.5)
    n, d = model.num_users + model.num_items, model.embedding_dim
    gen = torch.Generator().manual_seed(3)
    masks = [(torch.rand(n, d, generator=gen) > 0.5).float() * 2.0 for _ in range(3)]
    model.dropout = FixedMaskDropout(masks)
    model.train()
    with torch.no_grad():
        _, side, _ = model.embeddings(data)
    assert model.dropout.calls == 3
    _, _, side_ref, _ = dense_smore(model, data, K, dropout_masks=masks)
    torch.testing.assert_close(side.double(), side_ref, atol=1e-6, rtol=1e-5)


def test_dropout_only_in_training(tiny_data):
    model, data, _ = make(tiny_data, dropout=0.5)
    model.eval()
    with torch.no_grad():
        a = model(data)["user"]
        model.train()
        torch.manual_seed(1)
        b = model(data)["user"]
    assert not torch.allclose(a, b)
    model.dropout.p = 0.0
    with torch.no_grad():
        torch.testing.assert_close(model(data)["user"], a)


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_loss_equals_reference_formulas(tiny_data, dropout):
    model, data, _ = make(tiny_data, reg_weight=0.3, cl_weight=0.7, dropout=dropout)
    masks = None
    if dropout:
        n, d = model.num_users + model.num_items, model.embedding_dim
        gen = torch.Generator().manual_seed(5)
        masks = [(torch.rand(n, d, generator=gen) > dropout).float() / (1 - dropout) for _ in range(3)]
        model.dropout = FixedMaskDropout(masks)
    model.train()
    losses = model.loss(data, BATCH)
    ref = reference_loss(model, data, BATCH, K, 0.3, 0.7, masks)
    for key in ("bpr", "reg", "cl", "loss"):
        torch.testing.assert_close(losses[key].double(), ref[key], atol=1e-6, rtol=1e-5)
    losses["loss"].backward()
    for name in ("filter.image", "filter.text", "filter_fusion", "raw_features.image", "query.text.2.weight"):
        p = dict(model.named_parameters())[name]
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_fusion_graph_is_memoised_per_data(tiny_data):
    model, data, _ = make(tiny_data)
    g1 = model.fusion_graph(data)
    assert model.fusion_graph(data) is g1
    other = data.clone()  # new graph tensors: recomputed, same values
    g2 = model.fusion_graph(other)
    assert g2 is not g1
    torch.testing.assert_close(g2.to_dense(), g1.to_dense())
    import pickle

    assert pickle.loads(pickle.dumps(model))._fusion_memo is None


def test_raw_features_are_trained_and_required(tiny_data):
    model, data, _ = make(tiny_data)
    torch.testing.assert_close(model.raw_features["image"].detach(), data[ITEM].x_image)
    data_, _ = tiny_data
    dims = {m: int(data_[ITEM][f"x_{m}"].size(1)) for m in data_.modalities}
    fresh = SMORE(data_[USER].num_nodes, data_[ITEM].num_nodes, modality_dims=dims, knn_k=K)
    with pytest.raises(RuntimeError, match="init_from_data"):
        fresh(data)
    frozen = SMORE(data_[USER].num_nodes, data_[ITEM].num_nodes, modality_dims=dims, knn_k=K,
                   train_raw_features=False)
    assert not any("raw_features" in n for n, _ in frozen.named_parameters())
    frozen.eval()
    torch.manual_seed(0)
    twin, _ = build_model(SMORE, data_, knn_k=K)  # same init (same seed), trainable features at their data values
    twin.eval()
    frozen.load_state_dict({k: v for k, v in twin.state_dict().items() if "raw_features" not in k})
    with torch.no_grad():
        torch.testing.assert_close(frozen(data)["item"], twin(data)["item"])


def test_one_modality(tiny_data):
    model, data, _ = make(tiny_data, modalities=["text"])
    assert model.required_edge_types[2:] == (item_knn_type("text"),)
    torch.testing.assert_close(model.fusion_graph(data).to_dense(), data[item_knn_type("text")].adj_t.to_dense())
    with torch.no_grad():
        convs, conv_f = model.spectral_views(data)
        spec = torch.fft.rfft(model.feat_proj["text"](model.raw_features["text"]), dim=-1, norm="ortho")
        torch.testing.assert_close(conv_f, spectral_filter(spec, model.filter_fusion, model.embedding_dim))
        out = model(data)
    assert len(convs) == 1 and out["item"].shape == (model.num_items, 64)


def test_three_modalities_multiply_all_spectra(cache_dir):
    from mmgraph.data.synthetic import load_synthetic

    data, _ = load_synthetic(cache_dir, name="tiny3", num_users=30, num_items=20, num_interactions=200,
                             num_clusters=2, dims={"image": 5, "audio": 4, "text": 6},
                             noise={"image": 0.5, "audio": 1.0, "text": 2.0}, seed=0)
    torch.manual_seed(0)
    model, data = build_model(SMORE, data, knn_k=3)
    assert model.modalities == ["image", "audio", "text"]  # MMRec's slot order
    with torch.no_grad():
        _, conv_f = model.spectral_views(data)
        specs = [torch.fft.rfft(model.feat_proj[m](model.raw_features[m]).double(), dim=-1, norm="ortho")
                 for m in model.modalities]
        expect = irfft_ortho(specs[0] * specs[1] * specs[2] * torch.complex(
            model.filter_fusion[:, 0].double(), model.filter_fusion[:, 1].double()), 64)
        torch.testing.assert_close(conv_f.double(), expect, atol=1e-5, rtol=1e-5)
        dense = [data[item_knn_type(m)].adj_t.to_dense() for m in model.modalities]
        big = [torch.where(a != 0, a, torch.full_like(a, float("-inf"))) for a in dense]
        fused = torch.maximum(torch.maximum(big[0], big[1]), big[2])
        fused = torch.where(torch.isinf(fused), torch.zeros_like(fused), fused)
        torch.testing.assert_close(model.fusion_graph(data).to_dense(), fused)
        _, side, _ = model.embeddings(data)
    assert side.shape == (30 + 20, 64)


def test_arguments(tiny_data):
    model, _, _ = make(tiny_data)
    spec = model.graph_spec
    assert (spec.item_knn_k, spec.item_knn_weighted, spec.item_knn_loop, spec.item_knn_norm,
            spec.item_knn_modalities) == (K, True, True, "sym", True)
    assert spec.modality_weights == {"image": 0.0, "text": 0.0}
    assert model.filter["image"].shape == (33, 2) and model.filter_fusion.shape == (33, 2)
    assert "knn_k=4" in repr(model) and "dropout=0.0" in repr(model)
    dims = {"image": 8, "text": 6}
    with pytest.raises(ValueError, match="SMORE needs"):
        SMORE(3, 3, modality_dims=dims, graph=GraphSpec(item_knn_k=10))
    with pytest.raises(ValueError, match=">= 0"):
        SMORE(3, 3, modality_dims=dims, num_ui_layers=-1)
    with pytest.raises(ValueError, match="dropout"):
        SMORE(3, 3, modality_dims=dims, dropout=1.0)
    with pytest.raises(ValueError, match="cl_temperature"):
        SMORE(3, 3, modality_dims=dims, cl_temperature=0.0)
    with pytest.raises(ValueError, match="not in the dataset"):
        SMORE(3, 3, modality_dims=dims, modalities=["audio"])
