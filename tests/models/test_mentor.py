"""MENTOR against the authors' forward and calculate_loss re-implemented densely in float64."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmgraph.graph import GraphSpec
from mmgraph.models.base import build_model
from mmgraph.models.mentor import MENTOR, all_pairs_info_nce
from mmgraph.typing import II, ITEM, UI, BPRBatch

MODS = ("image", "text")  # the reference's v, t slots (mmrec_modality_order of the tiny dataset)


def make(tiny_data, **kw):
    data, split = tiny_data
    torch.manual_seed(0)
    model, data = build_model(MENTOR, data, **kw)
    with torch.no_grad():
        model.weight_u.uniform_(0.1, 0.9)  # distinct weights per user and modality
    return model, data, split


def dense_mm_adj(feats: dict[str, torch.Tensor], k: int, image_weight: float) -> torch.Tensor:
    """The reference's get_knn_adj_mat per modality (top-k cosine incl. self, binary, D^-1/2 A D^-1/2 by
    row sums), then mm_image_weight * image_adj + (1 - mm_image_weight) * text_adj."""
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


def dense_ui(model, data) -> torch.Tensor:
    """Base_gcn's D^-1/2 A D^-1/2 on the U + I graph (edge_index with both directions)."""
    U, I = model.num_users, model.num_items
    ei = data[UI].edge_index
    A = torch.zeros(U + I, U + I, dtype=torch.float64)
    A[ei[0], U + ei[1]] = 1.0
    A[U + ei[1], ei[0]] = 1.0
    d = A.sum(1).pow(-0.5)
    d[torch.isinf(d)] = 0.0
    return d.view(-1, 1) * A * d.view(1, -1)


dbl = lambda t: t.detach().double()  # noqa: E731


def ref_gcn(gcn, A, features, noise=None):
    """The reference's GCN.forward (noise: the two [U + I, d] uniform draws when perturbed=True)."""
    def lin(layer, x):
        return x @ dbl(layer.weight).t() + dbl(layer.bias)

    temp_features = lin(gcn.mlp_1, F.leaky_relu(lin(gcn.mlp, features)))
    x = torch.cat((dbl(gcn.preference), temp_features), dim=0)
    x = F.normalize(x)
    h = A @ x
    if noise is not None:
        h = h + torch.sign(h) * F.normalize(noise[0], dim=-1) * 0.1
    h_1 = A @ h
    if noise is not None:
        h_1 = h_1 + torch.sign(h_1) * F.normalize(noise[1], dim=-1) * 0.1
    return x + h + h_1, dbl(gcn.preference)


def ref_info_nce(view1, view2, temp):
    view1, view2 = F.normalize(view1, dim=1), F.normalize(view2, dim=1)
    pos_score = (view1 * view2).sum(dim=-1)
    pos_score = torch.exp(pos_score / temp)
    ttl_score = torch.matmul(view1, view2.transpose(0, 1))
    ttl_score = torch.exp(ttl_score / temp).sum(dim=1)
    return torch.mean(-torch.log(pos_score / ttl_score))


def ref_mentor(model, data, users, pos, neg, *, noise=None, dropped=None, reg_weight=1e-3, align_weight=0.1,
               mask_weight_f=1.5, mask_weight_g=1e-4, temp=0.2, dropout=0.5):
    """MENTOR.forward + calculate_loss of the reference, line by line (two modalities, n_mm_layers=1).

    ``noise[l]``: our layer-``l`` draw [U + I, 4, d] (blocks v_n1, t_n1, v_n2, t_n2); ``dropped``: our two
    dropout outputs (their zero pattern is the reference's mask).
    """
    U = model.num_users
    A = dense_ui(model, data)
    mm_adj = dense_mm_adj({m: data[ITEM][f"x_{m}"] for m in MODS}, 10, 0.1)
    v_feat, t_feat = (data[ITEM][f"x_{m}"].double() for m in MODS)
    nz = (lambda k: (noise[0][:, k].double(), noise[1][:, k].double())) if noise is not None else (lambda k: None)

    v_rep, v_preference = ref_gcn(model.gcn["image"], A, v_feat)
    t_rep, t_preference = ref_gcn(model.gcn["text"], A, t_feat)
    id_rep, _ = ref_gcn(model.gcn_id, A, dbl(model.id_feat))
    v_rep_n1, _ = ref_gcn(model.gcn_n1["image"], A, v_feat, nz(0))
    t_rep_n1, _ = ref_gcn(model.gcn_n1["text"], A, t_feat, nz(1))
    v_rep_n2, _ = ref_gcn(model.gcn_n2["image"], A, v_feat, nz(2))
    t_rep_n2, _ = ref_gcn(model.gcn_n2["text"], A, t_feat, nz(3))

    representation = torch.cat((v_rep, t_rep), dim=1)
    guide_representation = torch.cat((id_rep, id_rep), dim=1)
    v_representation = torch.cat((v_rep, v_rep), dim=1)
    t_representation = torch.cat((t_rep, t_rep), dim=1)
    representation_n1 = torch.cat((v_rep_n1, t_rep_n1), dim=1)
    representation_n2 = torch.cat((v_rep_n2, t_rep_n2), dim=1)

    weight_u = dbl(model.weight_u).unsqueeze(2)  # (U, 2, 1), as the reference's parameter

    def weighted(a, b):
        r = torch.cat((a[:U].unsqueeze(2), b[:U].unsqueeze(2)), dim=2)
        r = weight_u.transpose(1, 2) * r
        return torch.cat((r[:, :, 0], r[:, :, 1]), dim=1)

    user_rep = weighted(v_rep, t_rep)
    guide_user_rep = torch.cat((id_rep[:U], id_rep[:U]), dim=1)
    v_user_rep = torch.cat((v_rep[:U], v_rep[:U]), dim=1)
    t_user_rep = torch.cat((t_rep[:U], t_rep[:U]), dim=1)
    user_rep_n1 = weighted(v_rep_n1, t_rep_n1)
    user_rep_n2 = weighted(v_rep_n2, t_rep_n2)

    def item(rep):
        h = rep[U:]
        return h + mm_adj @ h  # buildItemGraph with n_layers = 1

    item_rep = item(representation)
    item_rep_n1, item_rep_n2 = item(representation_n1), item(representation_n2)
    guide_item_rep, v_item_rep, t_item_rep = item(guide_representation), item(v_representation), item(t_representation)

    result_embed = torch.cat((user_rep, item_rep), dim=0)
    result_embed_guide = torch.cat((guide_user_rep, guide_item_rep), dim=0)
    result_embed_v = torch.cat((v_user_rep, v_item_rep), dim=0)
    result_embed_t = torch.cat((t_user_rep, t_item_rep), dim=0)
    result_embed_n1 = torch.cat((user_rep_n1, item_rep_n1), dim=0)
    result_embed_n2 = torch.cat((user_rep_n2, item_rep_n2), dim=0)
    out = {"user": user_rep, "item": item_rep}
    if users is None:
        return out

    user_tensor = result_embed[users]
    pos_scores = torch.sum(user_tensor * result_embed[U + pos], dim=1)
    neg_scores = torch.sum(user_tensor * result_embed[U + neg], dim=1)
    loss_value = -torch.mean(torch.log2(torch.sigmoid(pos_scores - neg_scores)))

    reg = (v_preference[users] ** 2).mean() + (t_preference[users] ** 2).mean() + (weight_u ** 2).mean()

    def lin(layer, x):
        return x @ dbl(layer.weight).t() + dbl(layer.bias)

    u_temp2, i_temp2 = lin(model.mask_mlp, user_rep), lin(model.mask_mlp, item_rep)
    keep = 1.0 / (1.0 - dropout)
    u_temp = user_rep * (dropped[0] != 0) * keep if dropped is not None else user_rep
    i_temp = item_rep * (dropped[1] != 0) * keep if dropped is not None else item_rep
    mask_f = (1 - F.cosine_similarity(u_temp, u_temp2).mean()) + (1 - F.cosine_similarity(i_temp, i_temp2).mean())

    r_var, r_mean = torch.var(result_embed), torch.mean(result_embed)
    g_var, g_mean = torch.var(result_embed_guide), torch.mean(result_embed_guide)
    v_var, v_mean = torch.var(result_embed_v), torch.mean(result_embed_v)
    t_var, t_mean = torch.var(result_embed_t), torch.mean(result_embed_t)
    align = ((torch.abs(g_var - r_var) + torch.abs(g_mean - r_mean)).mean()
             + (torch.abs(g_var - v_var) + torch.abs(g_mean - v_mean)).mean()
             + (torch.abs(g_var - t_var) + torch.abs(g_mean - t_mean)).mean()
             + (torch.abs(r_var - v_var) + torch.abs(r_mean - v_mean)).mean()
             + (torch.abs(r_var - t_var) + torch.abs(r_mean - t_mean)).mean()
             + (torch.abs(v_var - t_var) + torch.abs(v_mean - t_mean)).mean())

    mask_g = (ref_info_nce(result_embed_n1[:U], result_embed_n2[:U], temp)
              + ref_info_nce(result_embed_n1[U:], result_embed_n2[U:], temp))
    total = (loss_value + reg_weight * reg + align_weight * align + mask_weight_f * mask_f
             + mask_weight_g * mask_g)
    out.update(loss=total, bpr=loss_value, reg=reg, align=align, mask_f=mask_f, mask_g=mask_g)
    return out


class Recorder:
    """Wraps a torch function and keeps its outputs (the random draws the oracle must reuse)."""

    def __init__(self, fn):
        self.fn, self.outputs = fn, []

    def __call__(self, *args, **kwargs):
        out = self.fn(*args, **kwargs)
        self.outputs.append(out.detach().clone())
        return out


def test_item_graph_is_the_references_weighted_knn(tiny_data):
    _, data, _ = make(tiny_data, item_knn_k=4)
    S = data[II].adj_t.to_dense().double()
    torch.testing.assert_close(S, dense_mm_adj({m: data[ITEM][f"x_{m}"] for m in MODS}, 4, 0.1),
                               atol=1e-6, rtol=1e-5)


def test_forward_equals_dense_reference(tiny_data):
    model, data, _ = make(tiny_data)
    with torch.no_grad():
        out = model(data)
    ref = ref_mentor(model, data, None, None, None)
    assert out["user"].shape == (model.num_users, 128) and out["item"].shape == (model.num_items, 128)
    torch.testing.assert_close(out["user"].double(), ref["user"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out["item"].double(), ref["item"], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("weights", [dict(), dict(reg_weight=0.3, align_weight=0.7, mask_weight_f=2.0,
                                                   mask_weight_g=0.05, temperature=0.4, feature_dropout=0.3)])
def test_loss_equals_dense_reference(tiny_data, monkeypatch, weights):
    model, data, _ = make(tiny_data, **weights)
    rand, dropout = Recorder(torch.rand), Recorder(F.dropout)
    monkeypatch.setattr(torch, "rand", rand)
    monkeypatch.setattr(F, "dropout", dropout)
    users, pos, neg = torch.tensor([0, 3, 5, 3, 59]), torch.tensor([1, 2, 7, 9, 39]), torch.tensor([4, 0, 6, 8, 0])
    losses = model.loss(data, BPRBatch(users, pos, neg))
    monkeypatch.undo()
    assert len(rand.outputs) == 2 and rand.outputs[0].shape == (model.num_users + model.num_items, 4, 64)
    assert len(dropout.outputs) == 2
    kw = dict(reg_weight=model.reg_weight, align_weight=model.align_weight, mask_weight_f=model.mask_weight_f,
              mask_weight_g=model.mask_weight_g, temp=model.temperature, dropout=model.feature_dropout)
    ref = ref_mentor(model, data, users, pos, neg, noise=rand.outputs, dropped=dropout.outputs, **kw)
    assert set(losses) == {"loss", "bpr", "reg", "align", "mask_f", "mask_g"}
    for k in ("bpr", "reg", "align", "mask_f", "mask_g", "loss"):
        torch.testing.assert_close(losses[k].double(), ref[k], atol=1e-6, rtol=1e-5, msg=k)
    # the noise is what distinguishes the two noisy views: without it they differ only by their parameters
    ref_clean = ref_mentor(model, data, users, pos, neg, dropped=dropout.outputs, **kw)
    assert not torch.allclose(ref_clean["mask_g"], ref["mask_g"], atol=1e-4)


def test_feature_mask_is_a_constant_as_in_the_reference(tiny_data):
    model, data, _ = make(tiny_data)
    batch = BPRBatch(torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([4, 5]))
    assert not any(p.requires_grad for p in model.mask_mlp.parameters())
    losses = model.loss(data, batch)
    assert not losses["mask_f"].requires_grad and float(losses["mask_f"]) > 0.1
    model.mask_weight_f = 0.0  # the gradient of the total equals that of the total minus the mask term
    torch.manual_seed(1)
    g0 = torch.autograd.grad(model.loss(data, batch)["loss"], model.weight_u)[0]
    model.mask_weight_f = 1.5
    torch.manual_seed(1)
    g1 = torch.autograd.grad(model.loss(data, batch)["loss"], model.weight_u)[0]
    torch.testing.assert_close(g0, g1)
    grad_model, data, _ = make(tiny_data, feature_mask_grad=True)
    out = grad_model.loss(data, batch)
    assert out["mask_f"].requires_grad
    out["loss"].backward()
    assert grad_model.mask_mlp.weight.grad is not None and grad_model.mask_mlp.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("block_size", [1, 3, 7, None])
def test_all_pairs_info_nce_blockwise_equals_dense(block_size):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(11, 5, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(11, 5, dtype=torch.float64, generator=g, requires_grad=True)
    got = all_pairs_info_nce(a, b, 0.3, block_size)
    want = ref_info_nce(a, b, 0.3)
    torch.testing.assert_close(got, want)
    ga, gb = torch.autograd.grad(got, (a, b))
    wa, wb = torch.autograd.grad(want, (a, b))
    torch.testing.assert_close(ga, wa)
    torch.testing.assert_close(gb, wb)
    assert torch.autograd.gradcheck(lambda x, y: all_pairs_info_nce(x, y, 0.3, block_size), (a, b))


def test_skipped_branches_only_when_their_weight_is_zero(tiny_data, monkeypatch):
    model, data, _ = make(tiny_data, align_weight=0.0, mask_weight_g=0.0)
    rand = Recorder(torch.rand)
    monkeypatch.setattr(torch, "rand", rand)
    users, pos, neg = torch.tensor([0, 3]), torch.tensor([1, 2]), torch.tensor([4, 0])
    losses = model.loss(data, BPRBatch(users, pos, neg))
    monkeypatch.undo()
    assert rand.outputs == [] and float(losses["align"]) == 0.0 and float(losses["mask_g"]) == 0.0
    ref = ref_mentor(model, data, users, pos, neg, dropped=None, align_weight=0.0, mask_weight_g=0.0)
    torch.testing.assert_close(losses["bpr"].double(), ref["bpr"], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(losses["reg"].double(), ref["reg"], atol=1e-7, rtol=1e-5)


def test_one_and_three_modalities(tiny_data):
    model, data, _ = make(tiny_data, modalities=["text"])
    with torch.no_grad():
        base = model(data)["user"]
        model.weight_u.mul_(3.0)  # unused with one modality
        torch.testing.assert_close(model(data)["user"], base)
    batch = BPRBatch(torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([4, 5]))
    losses = model.loss(data, batch)
    # one modality: the fused view equals the modality view, so only the guide pairs remain
    assert torch.isfinite(losses["loss"]) and float(losses["align"].detach()) > 0
    data3, split = tiny_data
    data3 = data3.clone()
    data3[ITEM]["x_audio"] = torch.randn(model.num_items, 5)
    data3.modalities = [*data3.modalities, "audio"]
    torch.manual_seed(0)
    model3, data3 = build_model(MENTOR, data3, reference_image_weight=None)
    assert model3.modalities == ["image", "audio", "text"]
    assert model3(data3)["item"].shape == (model3.num_items, 3 * 64)
    model3.loss(data3, batch)["loss"].backward()


def test_arguments(tiny_data):
    model, _, _ = make(tiny_data)
    spec = model.graph_spec
    assert (spec.item_knn_k, spec.reference_image_weight, spec.user_knn_k, spec.ui_norm) == (10, 0.1, None, "sym")
    torch.manual_seed(0)
    fresh = MENTOR(4, 3, modality_dims={"image": 2, "text": 3})
    torch.testing.assert_close(fresh.weight_u.detach().sum(1), torch.ones(4))
    with pytest.raises(ValueError, match="MENTOR needs"):
        MENTOR(3, 3, modality_dims={"text": 4}, graph=GraphSpec(item_knn_k=5))
    with pytest.raises(ValueError, match=">= 0"):
        MENTOR(3, 3, modality_dims={"text": 4}, num_layers=-1)
    with pytest.raises(ValueError, match="feature_dropout"):
        MENTOR(3, 3, modality_dims={"text": 4}, feature_dropout=1.0)
    with pytest.raises(ValueError, match="temperature"):
        MENTOR(3, 3, modality_dims={"text": 4}, temperature=0.0)
    with pytest.raises(ValueError, match="must be >= 0"):
        MENTOR(3, 3, modality_dims={"text": 4}, mask_weight_g=-1.0)
    with pytest.raises(ValueError, match="nce_block_size"):
        MENTOR(3, 3, modality_dims={"text": 4}, nce_block_size=0)
    with pytest.raises(ValueError, match="not in the dataset"):
        MENTOR(3, 3, modality_dims={"text": 4}, modalities=["image"])
    with pytest.raises(ValueError, match="same shape"):
        all_pairs_info_nce(torch.randn(3, 2), torch.randn(4, 2), 0.2)
