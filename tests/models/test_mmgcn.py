"""MMGCN invariants: MMRec's homogeneous GCN re-implemented densely, the loss, frozen-parameter parity."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mmgraph.graph import build_graph
from mmgraph.models.base import build_model
from mmgraph.models.mmgcn import MMGCN, mmrec_modality_order, visual_slot
from mmgraph.typing import ITEM, UI, USER, BPRBatch


def make(tiny_data, **kw):
    data, split = tiny_data
    torch.manual_seed(0)
    model, data = build_model(MMGCN, data, **kw)
    return model, data, split


def dense_mean_adj(data) -> torch.Tensor:
    """PyG aggr='mean' over MMRec's edge_index (both directions) as a dense D^-1 A."""
    U, I = data[USER].num_nodes, data[ITEM].num_nodes
    ei = data[UI].edge_index
    A = torch.zeros(U + I, U + I, dtype=torch.float64)
    A[ei[0], U + ei[1]] = 1.0
    A[U + ei[1], ei[0]] = 1.0
    return A / A.sum(1, keepdim=True).clamp_min(1.0)


def dense_mmgcn(model: MMGCN, data) -> torch.Tensor:
    """MMRec's MMGCN.forward (GCN per modality, concat branch, has_id) in float64, densely."""
    A = dense_mean_adj(data)
    dbl = lambda t: t.detach().double()  # noqa: E731

    def lin(layer, x):
        return x @ dbl(layer.weight).t() + dbl(layer.bias)

    rep = 0
    id_emb = dbl(model.id_embedding)
    for m in model.modalities:
        feats = data[ITEM][f"x_{m}"].double()
        if m in model.mlp:
            feats = lin(model.mlp[m], feats)
        x = F.normalize(torch.cat([dbl(model.preference(m)), feats]))
        for conv in model.convs[m]:
            h = F.leaky_relu(A @ (x @ dbl(conv.weight)))
            x_hat = F.leaky_relu(lin(conv.lin, x)) + id_emb
            x = F.leaky_relu(lin(conv.lin_g, torch.cat([h, x_hat], 1)))
        rep = rep + x
    return rep / len(model.modalities)


def test_modality_order_follows_mmrec_slots():
    assert mmrec_modality_order(["image", "text"]) == ["image", "text"]
    assert mmrec_modality_order(["text", "image"]) == ["image", "text"]
    assert mmrec_modality_order(["text", "audio"]) == ["audio", "text"]  # lfm2k
    assert mmrec_modality_order(["image", "audio"]) == ["image", "audio"]  # tiktok
    assert mmrec_modality_order(["text", "audio", "image"]) == ["image", "audio", "text"]  # v, a, t
    assert mmrec_modality_order(["text"]) == ["text"]
    assert visual_slot(["audio", "text"]) == "audio" and visual_slot(["text"]) is None


def test_defaults_reproduce_mmrec_layout(tiny_data):
    model, _, _ = make(tiny_data)
    assert model.modalities == ["image", "text"] and model.num_layers == 3
    assert list(model.mlp) == ["image"] and model.mlp["image"].out_features == 256
    assert model.in_dims == {"image": 256, "text": 6}  # text: raw features
    assert model.preference("image").shape == (model.num_users, 256)
    assert model.preference("text").shape == (model.num_users, 6)
    assert model.preference_reg_modalities == ["image"]
    assert model.convs["image"][0].weight.shape == (256, 256)
    assert model.convs["image"][0].lin_g.in_features == 256 + 64
    assert model.convs["text"][1].lin_g.in_features == 128
    assert model.graph_spec.ui_norm == "none"


def test_forward_equals_dense_mmrec(tiny_data):
    model, data, _ = make(tiny_data)
    with torch.no_grad():
        out = model(data)
    ref = dense_mmgcn(model, data)
    torch.testing.assert_close(torch.cat([out["user"], out["item"]]).double(), ref, atol=1e-5, rtol=1e-4)


def test_loss_equals_mmrec_formula(tiny_data):
    model, data, _ = make(tiny_data, reg_weight=0.1)
    users, pos, neg = torch.tensor([0, 3, 5, 3]), torch.tensor([1, 2, 7, 9]), torch.tensor([4, 0, 6, 8])
    losses = model.loss(data, BPRBatch(users, pos, neg))
    # MMRec's calculate_loss, verbatim in spirit
    U = model.num_users
    out = dense_mmgcn(model, data)
    user_tensor = users.repeat_interleave(2)
    item_tensor = torch.stack((pos + U, neg + U)).t().contiguous().view(-1)
    score = (out[user_tensor] * out[item_tensor]).sum(1).view(-1, 2)
    bpr = -torch.mean(torch.log(torch.sigmoid(score @ torch.tensor([[1.0], [-1.0]], dtype=torch.float64))))
    idw = model.id_embedding.detach().double()
    reg = (idw[user_tensor] ** 2 + idw[item_tensor] ** 2).mean()
    reg = reg + (model.preference("image").detach().double() ** 2).mean()
    torch.testing.assert_close(losses["bpr"].double(), bpr, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(losses["reg"].double(), reg, atol=1e-7, rtol=1e-5)
    torch.testing.assert_close(losses["loss"].double(), bpr + 0.1 * reg, atol=1e-6, rtol=1e-5)


def test_id_and_preferences_are_trained_by_default(tiny_data):
    model, data, _ = make(tiny_data)
    names = dict(model.named_parameters())
    assert {"id_embedding", "preference_image", "preference_text"} <= set(names)
    model.loss(data, BPRBatch(torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([4, 5])))["loss"].backward()
    assert names["id_embedding"].grad.abs().sum() > 0 and names["preference_text"].grad.abs().sum() > 0


def test_mmrec_frozen_params_are_buffers_with_mmrec_init(tiny_data):
    model, data, _ = make(tiny_data, mmrec_frozen_params=True)
    names = dict(model.named_parameters())
    assert not any(n in names for n in ("id_embedding", "preference_image", "preference_text"))
    buffers = dict(model.named_buffers())
    assert {"id_embedding", "preference_image", "preference_text"} <= set(buffers)
    assert {"id_embedding", "preference_image"} <= set(model.state_dict())  # saved with the best state
    before = buffers["id_embedding"].clone()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    loss = model.loss(data, BPRBatch(torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([4, 5])))["loss"]
    loss.backward()
    opt.step()
    assert torch.equal(model.id_embedding, before)  # never trained (MMRec)


def test_init_scales_match_xavier_normal_of_mmrec_shapes():
    torch.manual_seed(0)
    U, I, d = 3000, 2000, 64
    model = MMGCN(U, I, modality_dims={"image": 10, "text": 6})
    assert math.isclose(float(model.id_embedding.detach().std()), math.sqrt(2 / (U + I + d)), rel_tol=0.02)
    assert math.isclose(float(model.preference("image").detach().std()), math.sqrt(2 / (U + 256)), rel_tol=0.02)


def test_arguments(tiny_data):
    model, data, _ = make(tiny_data, modalities=["text"], num_layers=2, concat=False)
    assert model.latent_dims == {} and model.preference_reg_modalities == []
    assert len(model.convs["text"]) == 2 and model.convs["text"][0].lin_g.in_features == 6
    assert model(data)["item"].shape == (model.num_items, 64)
    dims = {"image": 8, "text": 6}
    with pytest.raises(ValueError, match="latent_dims"):
        MMGCN(3, 3, modality_dims=dims, latent_dims={"audio": 4})
    with pytest.raises(ValueError, match="not in the dataset"):
        MMGCN(3, 3, modality_dims=dims, modalities=["audio"])
    from mmgraph.graph import GraphSpec

    with pytest.raises(ValueError, match="ui_norm"):
        MMGCN(3, 3, modality_dims=dims, graph=GraphSpec(ui_norm="sym"))
    sym = build_graph(tiny_data[0], GraphSpec(ui_norm="sym"))
    with pytest.raises(ValueError, match="unit edge weights"):
        model(sym)
