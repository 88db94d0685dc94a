"""VBPR invariants: score = dot of [ID; projected features], loss by hand, init, batch projection."""

from __future__ import annotations

import math

import pytest
import torch

from mmgraph.data.sampler import UniformNegativeSampler
from mmgraph.models.base import build_model
from mmgraph.models.vbpr import VBPR
from mmgraph.nn.losses import bpr_loss
from mmgraph.typing import ITEM, USER


def make(tiny_data, **kw):
    data, split = tiny_data
    torch.manual_seed(0)
    model, data = build_model(VBPR, data, **kw)
    return model, data, split


def test_score_is_dot_of_id_and_projected_concatenated_features(tiny_data):
    model, data, _ = make(tiny_data)
    with torch.no_grad():
        model.bias.normal_()  # a non-zero bias must enter the projection
        out = model(data)
    # one Linear on the concatenation [x_image; x_text] (the blocks are its column slices)
    x = torch.cat([data[ITEM].x_image, data[ITEM].x_text], dim=1)
    w = torch.cat([model.projections["image"].weight, model.projections["text"].weight], dim=1)
    item = torch.cat([model.item_emb, x @ w.t() + model.bias], dim=1)
    assert out["item"].shape == (data[ITEM].num_nodes, 2 * model.embedding_dim)
    assert out["user"].shape == (data[USER].num_nodes, 2 * model.embedding_dim)
    torch.testing.assert_close(out["item"], item)
    torch.testing.assert_close(model.score(out["user"][:3], out["item"]), out["user"][:3] @ item.t())
    # the first d columns are the ID embedding untouched
    assert torch.equal(out["item"][:, :model.embedding_dim], model.item_emb)


def test_loss_matches_hand_computation_and_forward(tiny_data):
    model, data, split = make(tiny_data, reg_weight=0.3)
    batch = UniformNegativeSampler(split, torch.Generator().manual_seed(0)).epoch()
    batch = type(batch)(*(t[:50] for t in batch))
    out = model(data)
    u, i, j = out["user"][batch.users], out["item"][batch.pos_items], out["item"][batch.neg_items]
    pos, neg = (u * i).sum(1), (u * j).sum(1)
    bpr = -torch.log(1e-10 + torch.sigmoid(pos - neg)).mean()
    reg = (u.norm() + i.norm() + j.norm()) / 50  # EmbLoss: Frobenius norms / batch size
    losses = model.loss(data, batch)
    torch.testing.assert_close(losses["bpr"], bpr)
    torch.testing.assert_close(losses["reg"], reg)
    torch.testing.assert_close(losses["loss"], bpr + 0.3 * reg)
    torch.testing.assert_close(losses["bpr"], bpr_loss(pos, neg))


def test_features_are_frozen_and_only_projection_trains(tiny_data):
    model, data, split = make(tiny_data)
    names = {n for n, _ in model.named_parameters()}
    assert names == {"user_emb", "item_emb", "bias", "projections.image.weight", "projections.text.weight"}
    batch = UniformNegativeSampler(split, torch.Generator().manual_seed(0)).epoch()
    model.loss(data, type(batch)(*(t[:32] for t in batch)))["loss"].backward()
    assert data[ITEM].x_image.grad is None and not data[ITEM].x_image.requires_grad


def test_init_matches_mmrec_xavier_normal_of_the_concatenation():
    dims = {"image": 4096, "text": 384}
    torch.manual_seed(0)
    model = VBPR(500, 300, modality_dims=dims, embedding_dim=64)
    w = torch.cat([model.projections[m].weight.detach() for m in dims], dim=1)  # [64, 4480]
    expected = math.sqrt(2.0 / (4480 + 64))
    assert abs(float(w.std()) - expected) / expected < 0.02
    assert torch.equal(model.bias, torch.zeros(64))
    # xavier_uniform on [U, 2d] / [I, d]: bound sqrt(6 / (fan_in + fan_out))
    assert float(model.user_emb.detach().abs().max()) <= math.sqrt(6.0 / (500 + 128))
    assert float(model.item_emb.detach().abs().max()) <= math.sqrt(6.0 / (300 + 64))


def test_modality_subset_and_errors(tiny_data):
    model, data, _ = make(tiny_data, modalities=["text"])
    assert list(model.projections) == ["text"] and model.required_modalities == ("text",)
    out = model(data)
    expected = data[ITEM].x_text @ model.projections["text"].weight.t()
    torch.testing.assert_close(out["item"][:, model.embedding_dim:], expected)
    with pytest.raises(ValueError, match="not in the dataset"):
        make(tiny_data, modalities=["audio"])
    with pytest.raises(ValueError, match="at least one modality"):
        make(tiny_data, modalities=[])


def test_eval_is_a_fresh_forward(tiny_data):
    """Evaluation reads the current parameters, not the last training batch."""
    model, data, split = make(tiny_data)
    batch = UniformNegativeSampler(split, torch.Generator().manual_seed(0)).epoch()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    before = model(data)["item"].detach().clone()
    opt.zero_grad()
    model.loss(data, type(batch)(*(t[:64] for t in batch)))["loss"].backward()
    opt.step()
    after = model(data)["item"]
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after[:, model.embedding_dim:], model.project(data))
