"""LGMRec invariants: dense transcription of MMRec's forward and loss, deterministic evaluation,
stochastic training (Gumbel noise + dropout reproduced), InfoNCE over all rows, modality order."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmgraph.data.sampler import UniformNegativeSampler
from mmgraph.models.base import build_model
from mmgraph.models.lgmrec import LGMRec, info_nce_full
from mmgraph.typing import ITEM, UI, USER, BPRBatch


def make(tiny_data, **kw):
    data, split = tiny_data
    torch.manual_seed(0)
    model, data = build_model(LGMRec, data, **kw)
    return model, data, split


def dense_r(data):
    r = torch.zeros(data[USER].num_nodes, data[ITEM].num_nodes)
    ei = data[UI].edge_index
    r[ei[0], ei[1]] = 1.0
    return r


def dense_norm_adj(r):
    """MMRec's D^{-1/2} A D^{-1/2} on the (U + I) graph (without its 1e-7)."""
    U, I = r.shape
    a = torch.zeros(U + I, U + I)
    a[:U, U:], a[U:, :U] = r, r.t()
    d = a.sum(1)
    inv = torch.where(d > 0, d.pow(-0.5), torch.zeros_like(d))
    return inv[:, None] * a * inv[None, :]


def mmrec_forward(model, data, incidence):
    """MMRec's LGMRec.forward written with dense matrices; ``incidence(logits)`` replaces
    ``gumbel_softmax`` + dropout."""
    r = dense_r(data)
    U = r.size(0)
    adj = dense_norm_adj(r)
    ego = torch.cat([model.backbone.user_emb.weight, model.backbone.item_emb.weight])
    embs = [ego]
    for _ in range(model.backbone.num_layers):
        ego = adj @ ego
        embs.append(ego)
    cge = torch.stack(embs, 1).mean(1)
    num_inters = 1.0 / r.sum(1).clamp_min(1)
    local, glob, hyper = cge, 0.0, {}
    for m in model.modalities:
        x = data[ITEM][f"x_{m}"]
        item_feats = x @ model.feat_trs[m]
        user_feats = (r @ item_feats) * num_inters[:, None]
        mge = torch.cat([user_feats, item_feats])
        for _ in range(model.num_mm_layers):
            mge = adj @ mge
        local = local + F.normalize(mge)
        i_hyper = x @ model.hyper[m]
        u_hyper = r @ i_hyper
        i_h, u_h = incidence(i_hyper), incidence(u_hyper)
        i_ret = cge[U:]
        for _ in range(model.num_hyper_layers):
            lat = i_h.t() @ i_ret
            i_ret = i_h @ lat
            u_ret = u_h @ lat
        hyper[m] = (u_ret, i_ret)
        glob = glob + torch.cat([u_ret, i_ret])
    final = local + model.alpha * F.normalize(glob)
    return final[:U], final[U:], hyper


def mmrec_ssl(emb1, emb2, all_emb, tau):
    """MMRec's ssl_triple_loss, verbatim in math."""
    n1, n2, na = F.normalize(emb1), F.normalize(emb2), F.normalize(all_emb)
    pos = torch.exp((n1 * n2).sum(1) / tau)
    ttl = torch.exp(n1 @ na.t() / tau).sum(1)
    return -torch.log(pos / ttl).sum()


def some_batch(split, n=48):
    b = UniformNegativeSampler(split, torch.Generator().manual_seed(0)).epoch()
    return BPRBatch(*(t[:n] for t in b))


@pytest.mark.parametrize("kw", [{}, {"num_hyper_layers": 2, "num_hyperedges": 3, "num_mm_layers": 1},
                                {"cf_model": "mf"}, {"num_ui_layers": 1, "num_mm_layers": 0}])
def test_eval_forward_equals_dense_mmrec_transcription(tiny_data, kw):
    model, data, _ = make(tiny_data, **kw)
    model.eval()
    u, i, hyper = model.embed(data)
    ru, ri, rhyper = mmrec_forward(model, data, lambda z: torch.softmax(z / model.temperature, dim=1))
    torch.testing.assert_close(u, ru, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(i, ri, atol=1e-5, rtol=1e-4)
    for m in model.modalities:
        torch.testing.assert_close(hyper[m][0], rhyper[m][0], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(hyper[m][1], rhyper[m][1], atol=1e-5, rtol=1e-4)
    out = model(data)
    assert torch.equal(out["user"], u) and torch.equal(out["item"], i)


def test_training_forward_reproduces_gumbel_and_dropout_draws(tiny_data):
    model, data, _ = make(tiny_data, keep_rate=0.5)
    model.train()
    torch.manual_seed(11)
    u, i, _ = model.embed(data)
    tau, p = model.temperature, 1 - model.keep_rate
    # the same draws in the model's order: per modality, item incidence then user incidence
    torch.manual_seed(11)

    def incidence(z):
        return F.dropout(F.gumbel_softmax(z, tau=tau, hard=False, dim=1), p, training=True)

    ru, ri, _ = mmrec_forward(model, data, incidence)
    torch.testing.assert_close(u, ru, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(i, ri, atol=1e-5, rtol=1e-4)
    # training is stochastic, evaluation is not
    torch.manual_seed(12)
    u2, _, _ = model.embed(data)
    assert not torch.allclose(u, u2)
    model.eval()
    a, b = model(data), model(data)
    assert torch.equal(a["user"], b["user"]) and torch.equal(a["item"], b["item"])


def test_loss_equals_hand_computation(tiny_data):
    model, data, split = make(tiny_data, cl_weight=0.05, reg_weight=0.01)
    model.eval()
    batch = some_batch(split)
    ru, ri, rhyper = mmrec_forward(model, data, lambda z: torch.softmax(z / model.temperature, dim=1))
    u, i, j = ru[batch.users], ri[batch.pos_items], ri[batch.neg_items]
    bpr = -F.logsigmoid((u * i).sum(1) - (u * j).sum(1)).mean()
    (uv, iv), (ut, it) = rhyper["image"], rhyper["text"]  # tiny data order: image, text
    cl = (mmrec_ssl(uv[batch.users], ut[batch.users], ut, 0.2)
          + mmrec_ssl(iv[batch.pos_items], it[batch.pos_items], it, 0.2))
    reg = (u.norm(p=2) + i.norm(p=2) + j.norm(p=2)) / j.size(0)
    got = model.loss(data, batch)
    torch.testing.assert_close(got["bpr"], bpr, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got["cl"], cl, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got["reg"], reg, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got["loss"], bpr + 0.05 * cl + 0.01 * reg, atol=1e-4, rtol=1e-4)


def test_info_nce_full_equals_mmrec_ssl_triple_loss():
    g = torch.Generator().manual_seed(0)
    a, table = torch.randn(10, 6, generator=g), torch.randn(30, 6, generator=g)
    idx = torch.randint(0, 30, (10,), generator=g)
    anchor = table[idx] + 0.3 * a
    torch.testing.assert_close(info_nce_full(anchor, table, idx, 0.2), mmrec_ssl(anchor, table[idx], table, 0.2))


def test_modality_order_sets_the_contrastive_direction(tiny_data):
    m1, data, split = make(tiny_data, modalities=["image", "text"])
    m2, _, _ = make(tiny_data, modalities=["text", "image"])
    m1.eval(), m2.eval()
    batch = some_batch(split)
    l1, l2 = m1.loss(data, batch), m2.loss(data, batch)
    torch.testing.assert_close(l1["bpr"], l2["bpr"])  # same parameters (same seed), same embeddings
    assert not torch.allclose(l1["cl"], l2["cl"])  # anchors and candidates swapped
    single, _, _ = make(tiny_data, modalities=["text"])
    assert float(single.loss(data, batch)["cl"]) == 0.0


def test_bad_arguments(tiny_data):
    with pytest.raises(ValueError, match="feat_embed_dim"):
        make(tiny_data, feat_embed_dim=32)
    with pytest.raises(ValueError, match="cf_model"):
        make(tiny_data, cf_model="ngcf")
    with pytest.raises(ValueError, match="keep_rate"):
        make(tiny_data, keep_rate=0.0)
    with pytest.raises(ValueError, match="not in the dataset"):
        make(tiny_data, modalities=["audio"])
    from mmgraph.graph import GraphSpec
    with pytest.raises(ValueError, match="ui_norm"):
        make(tiny_data, graph=GraphSpec(ui_norm="rw_selfloop"))


def test_info_nce_factored_logits_equal_plain_values_and_grads():
    g = torch.Generator().manual_seed(1)
    left0 = torch.softmax(torch.randn(25, 4, generator=g, dtype=torch.float64), dim=1)
    right0 = torch.randn(4, 6, generator=g, dtype=torch.float64)
    anchor0 = torch.randn(9, 6, generator=g, dtype=torch.float64)
    idx = torch.randint(0, 25, (9,), generator=g)
    grads = []
    for factored in (False, True):
        left, right, anchor = (t.clone().requires_grad_() for t in (left0, right0, anchor0))
        cand = left @ right
        loss = info_nce_full(anchor, cand, idx, 0.2, (left, right) if factored else None)
        loss.backward()
        grads.append((loss.detach(), left.grad, right.grad, anchor.grad))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(grads[0][0], mmrec_ssl(anchor0, (left0 @ right0)[idx], left0 @ right0, 0.2))


def test_hypergraph_outputs_are_incidence_times_lambda(tiny_data):
    model, data, _ = make(tiny_data, num_hyper_layers=2)
    model.train()
    _, _, hyper = model.embed(data)
    for m in model.modalities:
        e_u, e_i, h_u, h_i, lam = hyper[m]
        assert h_u.shape == (data[USER].num_nodes, 4) and lam.shape == (4, model.embedding_dim)
        torch.testing.assert_close(e_u, h_u @ lam)
        torch.testing.assert_close(e_i, h_i @ lam)
