"""SLMRec invariants: MMRec's compute() re-implemented densely, hand-computed InfoNCE and FAC losses."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmgraph.models.base import build_model
from mmgraph.models.slmrec import SLMRec, default_fac_chain
from mmgraph.typing import ITEM, UI, USER, BPRBatch


def make(tiny_data, **kw):
    data, split = tiny_data
    torch.manual_seed(0)
    model, data = build_model(SLMRec, data, **kw)
    return model, data, split


def dense_pre_adj(data) -> torch.Tensor:
    """MMRec's create_adj_mat(adj_type='pre'): D^-1/2 A D^-1/2 with rowsum + 1e-8."""
    U, I = data[USER].num_nodes, data[ITEM].num_nodes
    ei = data[UI].edge_index
    A = torch.zeros(U + I, U + I, dtype=torch.float64)
    A[ei[0], U + ei[1]] = 1.0
    A[U + ei[1], ei[0]] = 1.0
    d = (A.sum(1) + 1e-8).pow(-0.5)
    return d.view(-1, 1) * A * d.view(1, -1)


def dense_compute(model: SLMRec, data):
    """MMRec's SLMRec.compute(): three LightGCN passes (ID, v, t), concat, the two fusion layers."""
    U = model.num_users
    dbl = lambda t: t.detach().double()  # noqa: E731
    adj = dense_pre_adj(data)

    def lin(layer, x):
        return x @ dbl(layer.weight).t() + dbl(layer.bias)

    def compute_graph(u_emb, i_emb):
        all_emb = torch.cat([u_emb, i_emb])
        embs = [all_emb]
        for _ in range(model.num_layers):
            all_emb = adj @ all_emb
            embs.append(all_emb)
        out = torch.stack(embs, 1).mean(1)
        return out[:U], out[U:]

    users_emb = dbl(model.user_emb.weight)
    chans = [compute_graph(users_emb, dbl(model.item_emb.weight))]
    for m in model.modalities:
        feat = F.normalize(data[ITEM][f"x_{m}"].double(), dim=1)
        chans.append(compute_graph(users_emb, lin(model.dense[m], feat)))
    user = lin(model.user_fuse, torch.cat([c[0] for c in chans], 1))
    item = lin(model.item_fuse, torch.cat([c[1] for c in chans], 1))
    return user, item, [c[1] for c in chans]


def ce_by_hand(logits: torch.Tensor) -> torch.Tensor:
    """mean_b [ logsumexp_c logits[b, c] - logits[b, b] ] without F.cross_entropy."""
    return (logits.exp().sum(1).log() - logits.diagonal()).mean()


def test_default_fac_chain():
    assert default_fac_chain(["image"]) == ["image"]
    assert default_fac_chain(["image", "text"]) == ["image", None, "text"]
    assert default_fac_chain(["image", "audio", "text"]) == ["image", "audio", "text"]


def test_layout_matches_mmrec(tiny_data):
    model, _, _ = make(tiny_data)
    assert model.modalities == ["image", "text"] and model.fac_chain == ["image", None, "text"]
    assert model.fac_widths == [64, 64, 32]
    # g_i_iv, g_iv_iva, g_iva_ivat / g_v_iv, g_t_ivat
    assert [(lin.in_features, lin.out_features) for lin in model.fac_anchor] == [(64, 64), (64, 64), (64, 32)]
    assert model.fac_positive["image"].out_features == 64 and model.fac_positive["text"].out_features == 32
    assert model.user_fuse.in_features == 192 and model.item_fuse.out_features == 64
    assert not any("raw" in n for n, _ in model.named_parameters())  # features are fixed


def test_forward_equals_dense_mmrec(tiny_data):
    model, data, _ = make(tiny_data)
    with torch.no_grad():
        out = model(data)
    user, item, _ = dense_compute(model, data)
    torch.testing.assert_close(out["user"].double(), user, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out["item"].double(), item, atol=1e-5, rtol=1e-4)


def test_contrastive_losses_equal_hand_computation(tiny_data):
    model, data, _ = make(tiny_data, ssl_weight=0.5, temperature=0.3, ssl_temperature=0.7)
    users, pos = torch.tensor([0, 3, 5, 7]), torch.tensor([1, 2, 7, 9])
    losses = model.loss(data, BPRBatch(users, pos, torch.tensor([4, 0, 6, 8])))
    user, item, item_chans = dense_compute(model, data)
    dbl = lambda t: t.detach().double()  # noqa: E731

    def lin(layer, x):
        return x @ dbl(layer.weight).t() + dbl(layer.bias)

    # main: infonce(users, pos) of MMRec
    un = user[users] / user[users].norm(dim=1, keepdim=True)
    pn = item[pos] / item[pos].norm(dim=1, keepdim=True)
    main = ce_by_hand(un @ pn.t() / 0.3)
    # FAC: MMRec's fac(idx) with its layer names
    g_i_iv, g_iv_iva, g_iva_ivat = model.fac_anchor
    g_v_iv, g_t_ivat = model.fac_positive["image"], model.fac_positive["text"]
    i_emb_i, v_emb_i, t_emb_i = item_chans
    x_i_iv = lin(g_i_iv, i_emb_i[pos])
    x_v_iv = lin(g_v_iv, v_emb_i[pos])
    v_loss = ce_by_hand(x_i_iv @ x_v_iv.t() / 0.7)
    x_iva_ivat = lin(g_iva_ivat, lin(g_iv_iva, x_i_iv))
    x_t_ivat = lin(g_t_ivat, t_emb_i[pos])
    t_loss = ce_by_hand(x_iva_ivat @ x_t_ivat.t() / 0.7)
    torch.testing.assert_close(losses["main"].double(), main, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(losses["fac"].double(), v_loss + t_loss, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(losses["loss"].double(), main + 0.5 * (v_loss + t_loss), atol=1e-6, rtol=1e-5)


def test_sampled_negatives_are_unused(tiny_data):
    model, data, _ = make(tiny_data)
    users, pos = torch.tensor([0, 3, 5]), torch.tensor([1, 2, 7])
    a = model.loss(data, BPRBatch(users, pos, torch.tensor([4, 0, 6])))["loss"]
    b = model.loss(data, BPRBatch(users, pos, torch.tensor([9, 9, 9])))["loss"]
    assert torch.equal(a, b)


def test_one_and_custom_chains_and_mean_fusion(tiny_data):
    model, data, _ = make(tiny_data, modalities=["text"])
    assert model.fac_chain == ["text"] and model.fac_widths == [64]
    losses = model.loss(data, BPRBatch(torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([4, 5])))
    assert torch.isfinite(losses["fac"])
    model, data, _ = make(tiny_data, fac_chain=["text", "image"], fusion="mean")
    assert model.fac_widths == [64, 32] and model.user_fuse.in_features == 64
    assert model(data)["user"].shape == (model.num_users, 64)
    dims = {"image": 8, "text": 6}
    with pytest.raises(ValueError, match="fac_chain"):
        SLMRec(3, 3, modality_dims=dims, fac_chain=[None, "text"])
    with pytest.raises(ValueError, match="fac_chain"):
        SLMRec(3, 3, modality_dims=dims, fac_chain=["audio"])
    with pytest.raises(ValueError, match="fusion"):
        SLMRec(3, 3, modality_dims=dims, fusion="sum")
