"""DRAGON against MMRec's forward and loss re-implemented densely (item graph from the raw features)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmgraph.graph import GraphSpec
from mmgraph.models.base import build_model
from mmgraph.models.dragon import DRAGON
from mmgraph.typing import II, ITEM, UI, UU, BPRBatch


def make(tiny_data, **kw):
    data, split = tiny_data
    torch.manual_seed(0)
    model, data = build_model(DRAGON, data, **kw)
    return model, data, split


def dense_mm_adj(feats: dict[str, torch.Tensor], k: int, image_weight: float) -> torch.Tensor:
    """MMRec's get_knn_adj_mat per modality (top-k cosine incl. self, binary, D^-1/2 A D^-1/2 by row sums),
    then mm_image_weight * image + (1 - mm_image_weight) * text."""
    adjs = {}
    for m, x in feats.items():
        xn = x.double() / x.double().norm(dim=1, keepdim=True)
        sim = xn @ xn.t()
        idx = sim.topk(k, dim=1).indices
        A = torch.zeros_like(sim)
        A.scatter_(1, idx, 1.0)
        d = (1e-7 + A.sum(1)).pow(-0.5)
        adjs[m] = d.view(-1, 1) * A * d.view(1, -1)
    return image_weight * adjs["image"] + (1.0 - image_weight) * adjs["text"]


def dense_dragon(model: DRAGON, data, S_user: torch.Tensor, S_item: torch.Tensor):
    """MMRec's DRAGON.forward ('cat') with dense matrices."""
    U, I = model.num_users, model.num_items
    ei = data[UI].edge_index
    A = torch.zeros(U + I, U + I, dtype=torch.float64)
    A[ei[0], U + ei[1]] = 1.0
    A[U + ei[1], ei[0]] = 1.0
    d = A.sum(1).pow(-0.5)
    d[torch.isinf(d)] = 0.0
    A = d.view(-1, 1) * A * d.view(1, -1)
    dbl = lambda t: t.detach().double()  # noqa: E731

    def lin(layer, x):
        return x @ dbl(layer.weight).t() + dbl(layer.bias)

    reps = []
    for m in ("image", "text"):  # MMRec: v then t
        temp = lin(model.mlp_1[m], F.leaky_relu(lin(model.mlp[m], data[ITEM][f"x_{m}"].double())))
        x = F.normalize(torch.cat([dbl(model.preference[m]), temp]))
        h = A @ x
        reps.append(h + x + A @ h)
    representation = torch.cat(reps, dim=1)
    user_rep = torch.stack([r[:U] for r in reps], dim=2) * dbl(model.weight_u).unsqueeze(1)  # [U, d, 2]
    user_rep = torch.cat([user_rep[:, :, 0], user_rep[:, :, 1]], dim=1)
    item_rep = representation[U:]
    h = item_rep
    for _ in range(model.num_ii_layers):
        h = S_item @ h
    return user_rep + S_user @ user_rep, item_rep + h


def test_item_graph_is_mmrecs_weighted_knn(tiny_data):
    _, data, _ = make(tiny_data, item_knn_k=4)
    feats = {m: data[ITEM][f"x_{m}"] for m in ("image", "text")}
    S = data[II].adj_t.to_dense().double()
    torch.testing.assert_close(S, dense_mm_adj(feats, 4, 0.1), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("num_ii_layers", [1, 2, 0])
def test_forward_equals_dense_mmrec(tiny_data, num_ii_layers):
    model, data, _ = make(tiny_data, user_knn_k=5, num_ii_layers=num_ii_layers)
    with torch.no_grad():
        model.weight_u.uniform_(0.1, 0.9)  # distinct weights per user and modality
        out = model(data)
    feats = {m: data[ITEM][f"x_{m}"] for m in ("image", "text")}
    user, item = dense_dragon(model, data, data[UU].adj_t.to_dense().double(), dense_mm_adj(feats, 10, 0.1))
    assert out["user"].shape == (model.num_users, 128) and out["item"].shape == (model.num_items, 128)
    torch.testing.assert_close(out["user"].double(), user, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out["item"].double(), item, atol=1e-5, rtol=1e-4)


def test_one_modality_has_no_fusion_weight(tiny_data):
    model, data, _ = make(tiny_data, modalities=["text"], mmrec_padding=False)
    with torch.no_grad():
        base = model(data)["user"]
        model.weight_u.mul_(3.0)  # unused with one modality (MMRec: user_rep = t_rep[:U])
        torch.testing.assert_close(model(data)["user"], base)


def test_loss_equals_mmrec_formula(tiny_data):
    model, data, _ = make(tiny_data, reg_weight=0.2, mmrec_padding=False)
    users, pos, neg = torch.tensor([0, 3, 5, 3]), torch.tensor([1, 2, 7, 9]), torch.tensor([4, 0, 6, 8])
    losses = model.loss(data, BPRBatch(users, pos, neg))
    feats = {m: data[ITEM][f"x_{m}"] for m in ("image", "text")}
    user, item = dense_dragon(model, data, data[UU].adj_t.to_dense().double(), dense_mm_adj(feats, 10, 0.1))
    ps = (user[users] * item[pos]).sum(1)
    ns = (user[users] * item[neg]).sum(1)
    bpr = -torch.mean(torch.log2(torch.sigmoid(ps - ns)))
    reg = sum((model.preference[m].detach().double()[users] ** 2).mean() for m in ("image", "text"))
    reg = reg + (model.weight_u.detach().double() ** 2).mean()  # 'cat': no weight_i term
    torch.testing.assert_close(losses["bpr"].double(), bpr, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(losses["reg"].double(), reg, atol=1e-7, rtol=1e-5)
    torch.testing.assert_close(losses["loss"].double(), bpr + 0.2 * reg, atol=1e-6, rtol=1e-5)


def test_training_pads_the_user_graph_only(tiny_data):
    model, data, _ = make(tiny_data, user_knn_k=40)
    out = model.train_graph(data, 0)
    assert out is not data and torch.equal(out[II].adj_t.to_dense(), data[II].adj_t.to_dense())
    model.mmrec_padding = False
    assert model.train_graph(data, 0) is data


def test_arguments(tiny_data):
    model, _, _ = make(tiny_data)
    torch.testing.assert_close(model.weight_u.detach().sum(1), torch.ones(model.num_users))
    spec = model.graph_spec
    assert (spec.item_knn_k, spec.user_knn_k, spec.user_knn_norm, spec.reference_image_weight) == (10, 40, "softmax", 0.1)
    with pytest.raises(ValueError, match="DRAGON needs"):
        DRAGON(3, 3, modality_dims={"text": 4}, graph=GraphSpec(user_knn_k=40))
    with pytest.raises(ValueError, match=">= 0"):
        DRAGON(3, 3, modality_dims={"text": 4}, num_ii_layers=-1)
