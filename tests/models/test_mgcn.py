"""MGCN invariants: a dense re-implementation of MMRec's MGCN, its graphs, loss terms, modalities."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmgraph.models.base import build_model
from mmgraph.models.mgcn import MGCN
from mmgraph.typing import II, ITEM, USER, BPRBatch, item_knn_type


def make(tiny_data, **kw):
    data, split = tiny_data
    torch.manual_seed(0)
    model, data = build_model(MGCN, data, knn_k=4, **kw)
    return model, data, split


def dense_norm_adj(data) -> torch.Tensor:
    """MMRec's get_adj_mat: D^-1/2 A D^-1/2 of the (U + I) graph, no epsilon."""
    U, I = data[USER].num_nodes, data[ITEM].num_nodes
    ei = data["user", "interacts", "item"].edge_index
    A = torch.zeros(U + I, U + I, dtype=torch.float64)
    A[ei[0], U + ei[1]] = 1.0
    A[U + ei[1], ei[0]] = 1.0
    d = A.sum(1).pow(-0.5)
    d[torch.isinf(d)] = 0.0
    return d.view(-1, 1) * A * d.view(1, -1)


def dense_knn(x: torch.Tensor, k: int) -> torch.Tensor:
    """MMRec's build_sim + build_knn_normalized_graph(is_sparse, norm_type='sym'), densely."""
    xn = x.double() / x.double().norm(dim=-1, keepdim=True)
    sim = xn @ xn.t()
    val, ind = sim.topk(k, dim=-1)
    W = torch.zeros_like(sim).scatter_(-1, ind, val)
    d = W.sum(1).pow(-0.5)  # row sums
    d[torch.isinf(d)] = 0.0
    return d.view(-1, 1) * W * d.view(1, -1)


def dense_mgcn(model: MGCN, data, k: int):
    """MMRec's MGCN.forward(adj, train=True) in float64 with dense matrices (any modalities)."""
    U = model.num_users
    dbl = lambda t: t.detach().double()  # noqa: E731
    adj = dense_norm_adj(data)
    R = adj[:U, U:]
    E_u, E_i = dbl(model.user_emb.weight), dbl(model.item_emb.weight)

    def lin(layer, x):
        return x @ dbl(layer.weight).t() + (dbl(layer.bias) if layer.bias is not None else 0)

    views = []
    for m in model.modalities:
        x = data[ITEM][f"x_{m}"].double()
        feats = lin(model.feat_proj[m], x)
        h = E_i * torch.sigmoid(lin(model.gate[m], feats))
        S = dense_knn(x, k)
        for _ in range(model.num_ii_layers):
            h = S @ h
        views.append(torch.cat([R @ h, h]))
    ego = torch.cat([E_u, E_i])
    layers = [ego]
    for _ in range(model.num_ui_layers):
        ego = adj @ ego
        layers.append(ego)
    content = torch.stack(layers, 1).mean(1)

    def query(v):
        q0, q2 = model.query[0], model.query[2]
        return torch.tanh(lin(q0, v)) @ dbl(q2.weight).t()

    w = torch.cat([query(v) for v in views], -1).softmax(-1)
    common = sum(w[:, k_ : k_ + 1] * v for k_, v in enumerate(views))
    seps = [torch.sigmoid(lin(model.gate_prefer[m], content)) * (v - common)
            for m, v in zip(model.modalities, views, strict=True)]
    side = (sum(seps) + common) / (len(views) + 1)
    return content + side, side, content


def test_graphs_are_the_per_modality_weighted_knn_and_no_fused_graph(tiny_data):
    model, data, _ = make(tiny_data)
    assert II not in data.edge_types
    for m in ("image", "text"):
        et = item_knn_type(m)
        assert et in model.required_edge_types
        expect = dense_knn(data[ITEM][f"x_{m}"], 4)
        torch.testing.assert_close(data[et].adj_t.to_dense().double(), expect, atol=1e-6, rtol=1e-5)


def test_forward_equals_dense_mmrec(tiny_data):
    model, data, _ = make(tiny_data)
    model.eval()
    with torch.no_grad():
        e, side, content = model.embeddings(data)
        out = model(data)
    e_ref, side_ref, content_ref = dense_mgcn(model, data, 4)
    torch.testing.assert_close(e.double(), e_ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(side.double(), side_ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(content.double(), content_ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(torch.cat([out["user"], out["item"]]), e)


def test_loss_terms_equal_mmrec_formulas(tiny_data):
    model, data, _ = make(tiny_data, reg_weight=0.3, cl_weight=0.7)
    users, pos, neg = torch.tensor([0, 3, 5, 3]), torch.tensor([1, 2, 7, 9]), torch.tensor([4, 0, 6, 8])
    losses = model.loss(data, BPRBatch(users, pos, neg))
    e, side, content = (t.detach().double() for t in model.embeddings(data))
    U = model.num_users
    u, i, j = e[users], e[U + pos], e[U + neg]
    bpr = -F.logsigmoid((u * i).sum(1) - (u * j).sum(1)).mean()
    reg = (0.5 * (u ** 2).sum() + 0.5 * (i ** 2).sum() + 0.5 * (j ** 2).sum()) / len(users)

    def mmrec_info_nce(v1, v2, t):
        v1, v2 = F.normalize(v1, dim=1), F.normalize(v2, dim=1)
        pos_s = torch.exp((v1 * v2).sum(-1) / t)
        ttl = torch.exp(v1 @ v2.t() / t).sum(1)
        return -torch.log(pos_s / ttl).mean()

    cl = mmrec_info_nce(side[U + pos], content[U + pos], 0.2) + mmrec_info_nce(side[users], content[users], 0.2)
    torch.testing.assert_close(losses["bpr"].double(), bpr, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(losses["reg"].double(), reg, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(losses["cl"].double(), cl, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(losses["loss"].double(), bpr + 0.3 * reg + 0.7 * cl, atol=1e-6, rtol=1e-5)


def test_raw_features_are_trained_and_required(tiny_data):
    model, data, _ = make(tiny_data)
    torch.testing.assert_close(model.raw_features["image"].detach(), data[ITEM].x_image)
    model.loss(data, BPRBatch(torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([4, 5])))["loss"].backward()
    assert model.raw_features["image"].grad is not None and model.raw_features["image"].grad.abs().sum() > 0
    data_, _ = tiny_data
    dims = {m: int(data_[ITEM][f"x_{m}"].size(1)) for m in data_.modalities}
    fresh = MGCN(data_[USER].num_nodes, data_[ITEM].num_nodes, modality_dims=dims, knn_k=4)
    with pytest.raises(RuntimeError, match="init_from_data"):
        fresh(data)
    frozen = MGCN(data_[USER].num_nodes, data_[ITEM].num_nodes, modality_dims=dims, knn_k=4,
                  train_raw_features=False)
    assert not any("raw_features" in n for n, _ in frozen.named_parameters())
    assert frozen(data)["user"].shape == (data_[USER].num_nodes, 64)


@pytest.mark.parametrize("mods", [["text"], ["image", "text"]])
def test_modality_subsets_and_divisor(tiny_data, mods):
    model, data, _ = make(tiny_data, modalities=mods)
    assert model.required_edge_types[2:] == tuple(item_knn_type(m) for m in mods)
    with torch.no_grad():
        e, side, content = model.embeddings(data)
    e_ref, side_ref, _ = dense_mgcn(model, data, 4)
    torch.testing.assert_close(side.double(), side_ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(e.double(), e_ref, atol=1e-5, rtol=1e-4)


def test_bad_arguments(tiny_data):
    data, _ = tiny_data
    dims = {m: int(data[ITEM][f"x_{m}"].size(1)) for m in data.modalities}
    with pytest.raises(ValueError, match="not in the dataset"):
        MGCN(3, 3, modality_dims=dims, modalities=["audio"])
    from mmgraph.graph import GraphSpec

    with pytest.raises(ValueError, match="item_knn_modalities"):
        MGCN(3, 3, modality_dims=dims, graph=GraphSpec(item_knn_k=10))
