"""CRANE's own invariants (the generic smoke tests come from conf/model/crane.yaml)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from mmgraph.data.mmrec import DatasetError
from mmgraph.data.sampler import UniformNegativeSampler
from mmgraph.graph import build_graph
from mmgraph.models.crane import CACHE_ATTR, CRANE, OPS_ATTR, SETTING_ABLATIONS
from mmgraph.nn.user_profile import user_profiles
from mmgraph.training.run import load_dataset
from mmgraph.typing import ITEM, IU, UI

CONF = Path(__file__).resolve().parents[2] / "conf"


def setup(tiny_data, **kwargs):
    data, split = tiny_data
    torch.manual_seed(0)
    dims = {m: int(data[ITEM][f"x_{m}"].size(1)) for m in data.modalities}
    model = CRANE(split.num_users, split.num_items, modality_dims=dims, embedding_dim=8, joint_dim=8,
                  hidden_dim=8, knn_k=5, rca_block_size=16, dropedge_seed=0, **kwargs)
    data = build_graph(data, model.graph_spec)
    batch = UniformNegativeSampler(split, torch.Generator().manual_seed(0)).epoch()
    return model, data, type(batch)(*(t[:64] for t in batch))


def test_train_graph_pure_seeded_and_dropped(tiny_data):
    model, data, _ = setup(tiny_data)
    before = {et: (data[et].edge_index.clone(), data[et].adj_t.to_dense().clone()) for et in (UI, IU)}
    g0, g0b, g1 = model.train_graph(data, 0), model.train_graph(data, 0), model.train_graph(data, 1)
    for et in (UI, IU):  # input untouched
        assert torch.equal(data[et].edge_index, before[et][0])
        assert torch.equal(data[et].adj_t.to_dense(), before[et][1])
    assert CACHE_ATTR not in data and OPS_ATTR not in data
    assert torch.equal(g0[UI].edge_index, g0b[UI].edge_index)  # same epoch, same sample
    assert not torch.equal(g0[UI].edge_index, g1[UI].edge_index)  # resampled per epoch
    assert g0[UI].edge_index.size(1) < data[UI].edge_index.size(1)
    torch.testing.assert_close(g0[IU].adj_t.to_dense(), g0[UI].adj_t.to_dense().t())
    # the user operators describe the FULL training graph
    assert torch.equal(getattr(g0, OPS_ATTR).edge_index, data[UI].edge_index)
    no_drop = CRANE(model.num_users, model.num_items, modality_dims={"image": 8, "text": 6}, dropedge="none")
    assert torch.equal(no_drop.train_graph(data, 0)[UI].edge_index, data[UI].edge_index)
    with pytest.raises(ValueError, match="ambiguous"):
        CRANE(model.num_users, model.num_items, modality_dims={"image": 8}, dropedge=False)


def test_fixed_dropedge_keeps_the_ratio_and_prefers_low_degree_edges(tiny_data):
    model, data, _ = setup(tiny_data, dropedge="fixed", dropedge_keep=0.25)
    ei = data[UI].edge_index
    g0, g0b = model.train_graph(data, 0), model.train_graph(data, 0)
    assert g0[UI].edge_index.size(1) == int(ei.size(1) * 0.25)
    assert torch.equal(g0[UI].edge_index, g0b[UI].edge_index)
    kept = {tuple(e) for e in g0[UI].edge_index.t().tolist()}
    assert kept <= {tuple(e) for e in ei.t().tolist()}  # a subset, no duplicates
    assert len(kept) == g0[UI].edge_index.size(1)
    # renormalised on the kept degrees: 1/sqrt(d~_u d~_i)
    du = torch.bincount(g0[UI].edge_index[0], minlength=model.num_users).float()
    di = torch.bincount(g0[UI].edge_index[1], minlength=model.num_items).float()
    want = torch.rsqrt(du[g0[UI].edge_index[0]] * di[g0[UI].edge_index[1]])
    torch.testing.assert_close(g0[UI].edge_weight, want)
    # over many epochs, the kept frequency of an edge grows with 1/sqrt(d_u d_i)
    counts = torch.zeros(ei.size(1))
    index = {e: n for n, e in enumerate(map(tuple, ei.t().tolist()))}
    for epoch in range(300):
        for e in model.train_graph(data, epoch)[UI].edge_index.t().tolist():
            counts[index[tuple(e)]] += 1
    deg_u = torch.bincount(ei[0]).float()[ei[0]]
    deg_i = torch.bincount(ei[1]).float()[ei[1]]
    p = torch.rsqrt(deg_u * deg_i)
    lo, hi = p <= p.quantile(0.25), p >= p.quantile(0.75)
    assert counts[hi].mean() > counts[lo].mean()


def test_item_graph_rows_and_gradient_schedule(tiny_data):
    model, data, batch = setup(tiny_data)
    g = model.train_graph(data, 0)
    ops = getattr(g, OPS_ATTR)
    ei, w = model.item_graph(g, ops)
    n = model.num_items
    assert ei.size(1) == n * 5 and w.requires_grad
    assert torch.equal(torch.bincount(ei[1], minlength=n), torch.full((n,), 5))  # k per item
    assert bool((ei[0] == ei[1]).view(n, 5).any(1).all())  # the item itself is one of them
    assert (w >= 0).all()
    torch.testing.assert_close(torch.zeros(n).index_add_(0, ei[1], w.detach()), torch.ones(n))

    rca_params = [p for name, p in model.named_parameters() if name.startswith(("rca.", "in_proj."))]
    model.loss(g, batch)["loss"].backward()  # first batch: graph built with gradient
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in rca_params)
    assert getattr(g, CACHE_ATTR).builds == 1
    model.zero_grad(set_to_none=True)
    model.loss(g, batch)["loss"].backward()  # later batches: the cached detached graph
    assert all(p.grad is None for p in rca_params)
    assert getattr(g, CACHE_ATTR).builds == 1
    assert model.user_emb.weight.grad is not None


def test_projected_profiles_equal_profile_then_project(tiny_data):
    model, data, _ = setup(tiny_data)
    ops = model.user_ops(data[UI].edge_index)
    x0 = model.entity_features(data, ops)
    for m in model.modalities:
        x = data[ITEM][f"x_{m}"]
        want_u = model.in_proj[m](user_profiles(data[UI].edge_index, x, model.num_users, "sum"))
        torch.testing.assert_close(x0[m][:model.num_users], want_u, atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(x0[m][model.num_users:], model.in_proj[m](x))
    for reduce in ("mean", "max"):
        model2, _, _ = setup(tiny_data, user_profile=reduce)
        x0 = model2.entity_features(data, model2.user_ops(data[UI].edge_index))
        m = model2.modalities[0]
        want = model2.in_proj[m](user_profiles(data[UI].edge_index, data[ITEM][f"x_{m}"], model2.num_users, reduce))
        torch.testing.assert_close(x0[m][:model2.num_users], want, atol=1e-5, rtol=1e-5)


def test_evaluation_uses_full_graph(tiny_data):
    model, data, _ = setup(tiny_data)
    model.eval()
    with torch.no_grad():
        a = model(data)
        b = model(copy.copy(data))
    assert torch.equal(a["user"], b["user"])
    with torch.no_grad():
        c = model(model.train_graph(data, 0))  # the dropped graph changes the embeddings
    assert not torch.allclose(a["user"], c["user"])


#: Table 5 as model arguments (what experiment=crane_table5 sets), on top of the reference settings.
TABLE5 = {
    "crane": {},
    "no_item_graph": {"num_ii_layers": 0},
    "no_rca": {"rca_rounds": 1},
    "no_attention": {"rca_rounds": 0},
    "no_gcn": {"num_ui_layers": 0, "num_ii_layers": 0},
    "no_cl": {"cl_weight": 0.0},
    "no_dual_fusion": {"variant": "no_dual_fusion"},
}
REF = {"ui_conv": "lightgcn", "dropedge": "none", "semantic_input": "id_features", "cl_weight": 0.01,
       "rca_kernel": "linear", "rca_qk_norm": True}


@pytest.mark.parametrize("name", list(TABLE5))
@pytest.mark.parametrize("kernel", ["tanh", "linear"])
def test_table5_variants_train_and_keep_both_views(tiny_data, name, kernel):
    model, data, batch = setup(tiny_data, **{**REF, "rca_kernel": kernel, **TABLE5[name]})
    losses = model.loss(model.train_graph(data, 0), batch)
    assert torch.isfinite(losses["loss"])
    assert "cl_user" in losses and "cl_item" in losses  # the contrastive term stays (w/o item graph too)
    losses["loss"].backward()
    assert model.feat_proj.weight.grad.abs().sum() > 0  # the semantic path reaches the loss in every variant
    out = model(data)
    d = 16 if name == "no_dual_fusion" else 8
    assert out["user"].shape == (model.num_users, d) and out["item"].shape == (model.num_items, d)


def test_table5_variants_change_the_forward(tiny_data):
    scores = {}
    for name, kw in TABLE5.items():
        model, data, _ = setup(tiny_data, **{**REF, **kw})  # same seed: the same initial weights
        with torch.no_grad():
            for p in model.parameters():  # non-trivial weights so that every part matters
                p.add_(0.1 * torch.randn_like(p))
            out = model(data)
        scores[name] = out["user"][:, :8] @ out["item"][:, :8].t() if name != "no_dual_fusion" else \
            out["user"] @ out["item"].t()
    names = list(scores)
    for a_i, a in enumerate(names):
        for b in names[a_i + 1:]:
            if {a, b} == {"crane", "no_cl"}:  # the loss differs, not the forward
                torch.testing.assert_close(scores[a], scores[b])
                continue
            assert not torch.allclose(scores[a], scores[b], atol=1e-6), (a, b)


def test_no_cl_changes_the_loss_only(tiny_data):
    full, data, batch = setup(tiny_data, **REF)
    no_cl, _, _ = setup(tiny_data, **{**REF, "cl_weight": 0.0})
    g = full.train_graph(data, 0)
    a, b = full.loss(g, batch), no_cl.loss(full.train_graph(data, 0), batch)
    torch.testing.assert_close(a["bpr"], b["bpr"])
    torch.testing.assert_close(a["loss"] - b["loss"], 0.01 * (a["cl_user"] + a["cl_item"]))


@pytest.mark.parametrize("name", sorted(SETTING_ABLATIONS))
def test_setting_ablations_are_refused_as_variants(tiny_data, name):
    with pytest.raises(ValueError, match="is a setting, not a variant"):
        setup(tiny_data, variant=name)


def test_variants_never_overwrite_settings(tiny_data):
    model, _, _ = setup(tiny_data, variant="no_dual_fusion", rca_rounds=2, num_ui_layers=1, cl_weight=0.3)
    assert model.rca.rounds == 2 and len(model.convs) == 1 and model.cl_weight == 0.3


def test_semantic_features_give_rca_a_gradient_on_every_batch(tiny_data):
    model, data, batch = setup(tiny_data, **REF)
    g = model.train_graph(data, 0)
    rca_params = [p for name, p in model.named_parameters() if name.startswith(("rca.", "in_proj."))]
    for _ in range(2):  # the first batch builds S, the second reuses it detached
        model.zero_grad(set_to_none=True)
        model.loss(g, batch)["loss"].backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in rca_params)
    assert getattr(g, CACHE_ATTR).builds == 1


def test_semantic_input_equals_its_formula(tiny_data):
    model, data, _ = setup(tiny_data, **{**REF, "num_ii_layers": 0})
    with torch.no_grad():
        v = model.views(data)
        ops = model.user_ops(data[UI].edge_index)
        xs = model.rca(model.entity_features(data, ops))
        e = torch.cat([xs[m][model.num_users:] for m in model.modalities], 1)
        f = model.feat_proj(e)
        f = model.feat_scale * f / f.norm(dim=1, keepdim=True)
        torch.testing.assert_close(v["ii_item"], v["ui_item"] + f)
        ei = data[UI].edge_index
        deg = torch.bincount(ei[0], minlength=model.num_users).clamp_min(1).float()
        want_u = torch.zeros(model.num_users, 8).index_add_(0, ei[0], v["ii_item"][ei[1]]) / deg[:, None]
        torch.testing.assert_close(v["ii_user"], want_u)


def test_lightgcn_ui_conv_equals_lightgcn(tiny_data):
    from mmgraph.models.lightgcn import LightGCN

    model, data, _ = setup(tiny_data, **REF)
    lgn = LightGCN(model.num_users, model.num_items, embedding_dim=8, num_layers=2)
    with torch.no_grad():
        lgn.user_emb.weight.copy_(model.user_emb.weight)
        lgn.item_emb.weight.copy_(model.item_emb.weight)
        want = lgn(data)
        got = model.collaborative(data)
    torch.testing.assert_close(got[0], want["user"])
    torch.testing.assert_close(got[1], want["item"])


@pytest.mark.parametrize("fusion", ["concat", "sum", "graph_avg"])
def test_item_graph_fusions(tiny_data, fusion):
    model, data, _ = setup(tiny_data, item_graph_fusion=fusion, item_graph_modalities=None)
    ei, w = model.item_graph(data, model.user_ops(data[UI].edge_index))
    n = model.num_items
    torch.testing.assert_close(torch.zeros(n).index_add_(0, ei[1], w.detach()), torch.ones(n))
    single, _, _ = setup(tiny_data, item_graph_modalities=["image"])
    assert single.graph_modalities == ["image"]
    with pytest.raises(ValueError, match="not in the modalities"):
        setup(tiny_data, item_graph_modalities=["audio"])


def test_example_command_fails_only_for_the_missing_folder(tmp_path):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for overrides in (["model=crane", "dataset=sports"], ["experiment=crane_sports"]):
            cfg = compose(config_name="config", overrides=[*overrides, f"data_root={tmp_path}"])
            assert cfg.model._target_ == "mmgraph.models.crane.CRANE" and cfg.dataset.name == "sports"
            with pytest.raises(DatasetError, match="dataset folder .*sports not found"):
                load_dataset(cfg.dataset)
        cfg = compose(config_name="config", overrides=["experiment=crane_clothing", "dataset=lfm2k"])
        assert cfg.dataset.name == "lfm2k" and cfg.model.knn_k == 10 and cfg.trainer.optimizer.lr == 1e-4


def test_no_item_graph_builds_no_item_graph(tiny_data):
    model, data, batch = setup(tiny_data, **{**REF, "num_ii_layers": 0})
    g = model.train_graph(data, 0)
    model.loss(g, batch)
    assert getattr(g, CACHE_ATTR).builds == 0
    id_only, _, _ = setup(tiny_data, num_ii_layers=0)
    assert not hasattr(id_only, "rca")  # neither S nor features: no semantic parameters
