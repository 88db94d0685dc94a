"""FREEDOM invariants: degree-sensitive pruning, the frozen item graph, dense oracle, feature terms."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.data import HeteroData

from mmgraph.data.sampler import UniformNegativeSampler
from mmgraph.graph import GraphSpec
from mmgraph.models.base import build_model
from mmgraph.models.freedom import FREEDOM, degree_sensitive_prune
from mmgraph.typing import II, ITEM, IU, UI, USER

SPEC = GraphSpec(item_knn_k=5, item_knn_weighted=False, item_knn_norm="sym",
                 modality_weights={"image": 0.1, "text": 0.9})


def make(tiny_data, **kw):
    data, split = tiny_data
    torch.manual_seed(0)
    model, data = build_model(FREEDOM, data, graph=SPEC, **kw)
    return model, data, split


def dense(edge_index, weight, n_dst, n_src):
    a = torch.zeros(n_dst, n_src)
    a.index_put_((edge_index[1], edge_index[0]), weight, accumulate=True)
    return a  # a[dst, src]


def test_pruning_keeps_the_fraction_renormalises_and_is_pure(tiny_data):
    _, data, _ = make(tiny_data)
    U, I = data[USER].num_nodes, data[ITEM].num_nodes
    ei = data[UI].edge_index
    before = {et: (data[et].edge_index.clone(), data[et].edge_weight.clone()) for et in data.edge_types}
    torch.manual_seed(1)
    out = degree_sensitive_prune(data, 0.2)
    E = ei.size(1)
    kept = out[UI].edge_index
    assert kept.size(1) == int(E * 0.2)
    keys = kept[0] * I + kept[1]
    assert keys.unique().numel() == kept.size(1)  # without replacement
    assert torch.isin(keys, ei[0] * I + ei[1]).all()  # a subset of the train edges
    # re-normalised on the kept degrees: 1/sqrt(d'_u d'_i)
    du = torch.bincount(kept[0], minlength=U).float()
    di = torch.bincount(kept[1], minlength=I).float()
    torch.testing.assert_close(out[UI].edge_weight, (du[kept[0]] * di[kept[1]]).rsqrt())
    assert torch.equal(out[IU].edge_index, kept.flip(0))
    torch.testing.assert_close(out[IU].edge_weight, out[UI].edge_weight)
    torch.testing.assert_close(out[UI].adj_t.to_dense(), dense(kept, out[UI].edge_weight, I, U))
    torch.testing.assert_close(out[IU].adj_t.to_dense(), dense(kept.flip(0), out[IU].edge_weight, U, I))
    # pure: data untouched, the item graph shared
    for et, (e, w) in before.items():
        assert torch.equal(data[et].edge_index, e) and torch.equal(data[et].edge_weight, w)
    assert out[II].edge_index is data[II].edge_index
    # resampled: another draw keeps other edges
    assert not torch.equal(degree_sensitive_prune(data, 0.2)[UI].edge_index, kept)


def test_pruning_prefers_edges_between_low_degree_nodes():
    # user 0 - item 0 are degree 1; users 1..9 all rate items 1..9 (degree 9)
    ei = torch.tensor([[0] + [u for u in range(1, 10) for _ in range(9)],
                       [0] + [i for _ in range(1, 10) for i in range(1, 10)]])
    data = HeteroData()
    data[USER].num_nodes, data[ITEM].num_nodes = 10, 10
    data[UI].edge_index, data[IU].edge_index = ei, ei.flip(0)
    g = torch.Generator().manual_seed(0)
    hits = sum(int((degree_sensitive_prune(data, 0.1, g)[UI].edge_index[0] == 0).any()) for _ in range(200))
    # weight 1 vs 1/9 for the others: kept with probability ~0.6, vs 0.1 under uniform sampling
    assert hits > 80


def test_train_graph_prunes_and_evaluation_uses_the_full_graph(tiny_data):
    model, data, _ = make(tiny_data)
    model.eval()
    with torch.no_grad():
        full = model(data)
        pruned = model(model.train_graph(data, 0))
    assert not torch.allclose(full["user"], pruned["user"])
    assert model.train_graph(data, 0)[UI].edge_index.size(1) == int(data[UI].edge_index.size(1) * 0.2)
    model0, data0, _ = make(tiny_data, edge_dropout=0.0)
    assert model0.train_graph(data0, 3) is data0


def test_item_graph_is_freedoms_mix(tiny_data):
    _, data, _ = make(tiny_data)
    ew = data[II].edge_weight
    I = data[ITEM].num_nodes
    rows = torch.zeros(I).index_add_(0, data[II].edge_index[1], ew)
    torch.testing.assert_close(rows, torch.ones(I))  # row-stochastic
    vals = {round(v, 6) for v in ew.tolist()}
    assert vals <= {round(0.1 / 5, 6), round(0.9 / 5, 6), round(1 / 5, 6)}
    assert (data[II].edge_index[0] == data[II].edge_index[1]).sum() == I  # self is a neighbour


def test_forward_matches_dense_oracle(tiny_data):
    model, data, _ = make(tiny_data)
    U, I = data[USER].num_nodes, data[ITEM].num_nodes
    eu, ei_ = model.backbone.user_emb.weight, model.backbone.item_emb.weight
    r = dense(data[UI].edge_index, data[UI].edge_weight, I, U).t()  # [U, I]
    a = torch.zeros(U + I, U + I)
    a[:U, U:], a[U:, :U] = r, r.t()
    x = torch.cat([eu, ei_])
    layers = [x, a @ x, a @ a @ x]
    mean = torch.stack(layers).mean(0)
    s = dense(data[II].edge_index, data[II].edge_weight, I, I)
    out = model(data)
    torch.testing.assert_close(out["user"], mean[:U], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["item"], mean[U:] + s @ ei_, atol=1e-5, rtol=1e-5)


def test_feature_terms_train_projections_and_raw_features(tiny_data):
    model, data, split = make(tiny_data, reg_weight=1e-3)
    assert set(model.projections) == {"image", "text"}
    torch.testing.assert_close(model.raw_features["image"].detach(), data[ITEM].x_image)
    batch = UniformNegativeSampler(split, torch.Generator().manual_seed(0)).epoch()
    batch = type(batch)(*(t[:32] for t in batch))
    losses = model.loss(model.train_graph(data, 0), batch)
    assert {"loss", "bpr", "feat_bpr"} <= set(losses)
    torch.testing.assert_close(losses["loss"], losses["bpr"] + 1e-3 * losses["feat_bpr"])
    losses["loss"].backward()
    for name in ("projections.image.weight", "raw_features.text", "backbone.item_emb.weight"):
        assert dict(model.named_parameters())[name].grad.abs().sum() > 0
    # reg_weight 0: nothing to train there, nothing built
    model0, _, _ = make(tiny_data)
    assert len(model0.projections) == 0 and not hasattr(model0, "raw_features")


def test_bad_arguments(tiny_data):
    data, _ = tiny_data
    with pytest.raises(ValueError, match="edge_dropout"):
        FREEDOM(5, 5, modality_dims={"image": 3}, edge_dropout=1.0)
    with pytest.raises(ValueError, match="item_knn_k"):
        FREEDOM(5, 5, modality_dims={"image": 3}, graph=GraphSpec())
    with pytest.raises(ValueError, match="feat_embed_dim"):
        FREEDOM(5, 5, modality_dims={"image": 3}, reg_weight=0.1, feat_embed_dim=8)
