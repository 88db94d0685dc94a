"""BM3 invariants: dense hand computation of the loss (eval and with dropout masks), no negatives,
stop-gradient targets, predictor scores, trainable raw features."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmgraph.data.sampler import UniformNegativeSampler
from mmgraph.models.base import build_model
from mmgraph.models.bm3 import BM3
from mmgraph.typing import ITEM, UI, USER, BPRBatch


def make(tiny_data, **kw):
    data, split = tiny_data
    torch.manual_seed(0)
    model, data = build_model(BM3, data, **kw)
    return model, data, split


def a_hat(data):
    U, I = data[USER].num_nodes, data[ITEM].num_nodes
    r = torch.zeros(U, I)
    ei = data[UI].edge_index
    r[ei[0], ei[1]] = 1.0
    du, di = r.sum(1), r.sum(0)
    inv_u = torch.where(du > 0, du.pow(-0.5), torch.zeros_like(du))
    inv_i = torch.where(di > 0, di.pow(-0.5), torch.zeros_like(di))
    return inv_u[:, None] * r * inv_i[None, :]


def dense_online(model, data):
    """LightGCN layer mean on the dense Â, item ID embedding added."""
    a = a_hat(data)
    eu, ei = model.backbone.user_emb.weight, model.backbone.item_emb.weight
    su, si, u, i = eu, ei, eu, ei
    for _ in range(model.backbone.num_layers):
        u, i = a @ i, a.t() @ u
        su, si = su + u, si + i
    n = model.backbone.num_layers + 1
    return su / n, si / n + ei


def hand_loss(model, data, batch, masks=None):
    """The loss of the spec written out; ``masks`` (scaled dropout masks) perturb the targets."""
    u_all, i_all = dense_online(model, data)
    users, items = batch.users, batch.pos_items
    P = model.predictor
    ut, it = u_all.detach(), i_all.detach()
    if masks is not None:
        ut, it = ut * masks["user"], it * masks["item"]

    def ncos(a, b):
        return 1 - F.cosine_similarity(a, b, dim=-1).mean()

    loss = ncos(P(u_all[users]), it[items]) + ncos(P(i_all[items]), ut[users])
    loss = loss + model.reg_weight * (u_all.norm() + i_all.norm()) / i_all.size(0)
    cl = 0.0
    for m in model.modalities:
        f = model.projections[m](model.raw_features[m])  # all items, as MMRec
        ft = f.detach() * masks[m] if masks is not None else f.detach()
        cl = cl + ncos(P(f[items]), it[items]) + ncos(P(f[items]), ft[items])
    return loss + model.cl_weight * cl


def some_batch(split, n=40):
    b = UniformNegativeSampler(split, torch.Generator().manual_seed(0)).epoch()
    return BPRBatch(*(t[:n] for t in b))


@pytest.mark.parametrize("num_layers", [1, 2])
def test_loss_equals_hand_computation_without_dropout(tiny_data, num_layers):
    model, data, split = make(tiny_data, num_layers=num_layers, reg_weight=0.1, cl_weight=2.0)
    model.eval()  # no target dropout
    batch = some_batch(split)
    torch.testing.assert_close(model.loss(data, batch)["loss"], hand_loss(model, data, batch))


def test_loss_equals_hand_computation_with_dropout_masks(tiny_data):
    model, data, split = make(tiny_data, dropout=0.5)
    model.train()
    batch = some_batch(split)
    U, I, d = data[USER].num_nodes, data[ITEM].num_nodes, model.embedding_dim
    uniq = batch.pos_items.unique()
    torch.manual_seed(7)
    got = model.loss(data, batch)["loss"]
    # the same draws in the same order: user table, item table, then per modality the distinct items
    torch.manual_seed(7)
    masks = {"user": F.dropout(torch.ones(U, d), 0.5), "item": F.dropout(torch.ones(I, d), 0.5)}
    for m in model.modalities:
        mm = torch.zeros(I, d)
        mm[uniq] = F.dropout(torch.ones(uniq.numel(), d), 0.5)
        masks[m] = mm
    assert (masks["user"] == 0).any()
    torch.testing.assert_close(got, hand_loss(model, data, batch, masks))
    # the dropout really perturbs the targets: the eval-mode loss differs
    model.eval()
    assert not torch.allclose(model.loss(data, batch)["loss"], got)


def test_negatives_are_ignored(tiny_data):
    model, data, split = make(tiny_data)
    batch = some_batch(split)
    other = BPRBatch(batch.users, batch.pos_items, torch.randperm(data[ITEM].num_nodes)[:batch.users.numel()])
    torch.manual_seed(3)
    a = model.loss(data, batch)["loss"]
    torch.manual_seed(3)
    b = model.loss(data, other)["loss"]
    assert torch.equal(a, b)


def test_targets_are_stop_gradient(tiny_data):
    """Only the online branch carries gradient: the ui term's gradient w.r.t. the item table comes
    from EmbLoss and the other terms only, never through the target of loss_ui."""
    model, data, split = make(tiny_data, reg_weight=0.0, cl_weight=0.0)
    model.eval()
    batch = some_batch(split, 1)  # one pair (u, i)
    out = model.loss(data, batch)
    emb = model.backbone.user_emb.weight
    g_ui = torch.autograd.grad(out["loss_ui"], emb, retain_graph=True)[0]
    # loss_ui = 1 - cos(P e_u, sg(e_i)): its gradient reaches E_u only through e_u = (Â-mean)[u]
    u_all, i_all = dense_online(model, data)
    ref = 1 - F.cosine_similarity(model.predictor(u_all[batch.users]), i_all[batch.pos_items].detach()).mean()
    torch.testing.assert_close(g_ui, torch.autograd.grad(ref, emb)[0])
    g_iu = torch.autograd.grad(out["loss_iu"], model.predictor.weight)[0]
    assert g_iu.abs().sum() > 0


def test_forward_is_predictor_of_online_and_eval_is_fresh(tiny_data):
    model, data, split = make(tiny_data)
    model.eval()
    out = model(data)
    u, i = dense_online(model, data)
    torch.testing.assert_close(out["user"], model.predictor(u))
    torch.testing.assert_close(out["item"], model.predictor(i))
    torch.testing.assert_close(model.score(out["user"][:4], out["item"]),
                               model.predictor(u[:4]) @ model.predictor(i).t())
    # after an optimiser step, forward reflects the new parameters (no cached embeddings)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    model.loss(data, some_batch(split))["loss"].backward()
    opt.step()
    model.eval()
    u2, i2 = dense_online(model, data)
    torch.testing.assert_close(model(data)["item"], model.predictor(i2))


def test_raw_features_trainable_and_loaded(tiny_data):
    model, data, split = make(tiny_data)
    for m in model.modalities:
        assert torch.equal(model.raw_features[m].detach(), data[ITEM][f"x_{m}"])
    model.loss(data, some_batch(split))["loss"].backward()
    assert model.raw_features["image"].grad.abs().sum() > 0
    # frozen variant reads the data's features and has no raw-feature parameters
    frozen, data2, _ = make(tiny_data, train_raw_features=False)
    assert not any("raw_features" in n for n, _ in frozen.named_parameters())
    frozen.eval()
    assert torch.isfinite(frozen.loss(data2, some_batch(split))["loss"])
    fresh = BM3(5, 4, modality_dims={"image": 3})
    with pytest.raises(RuntimeError, match="init_from_data"):
        fresh.features(data, "image", torch.tensor([0]))


def test_bad_arguments(tiny_data):
    with pytest.raises(ValueError, match="dropout"):
        make(tiny_data, dropout=1.0)
    with pytest.raises(ValueError, match="not in the dataset"):
        make(tiny_data, modalities=["audio"])
    model, data, split = make(tiny_data, modalities=[])
    assert "cl" not in model.loss(data, some_batch(split))
