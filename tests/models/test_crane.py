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
from mmgraph.models.crane import CACHE_ATTR, CRANE, OPS_ATTR, VARIANTS
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
    no_drop = CRANE(model.num_users, model.num_items, modality_dims={"image": 8, "text": 6}, dropedge=False)
    assert torch.equal(no_drop.train_graph(data, 0)[UI].edge_index, data[UI].edge_index)


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


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("kernel", ["tanh", "linear"])
def test_variants_and_kernels_train(tiny_data, variant, kernel):
    model, data, batch = setup(tiny_data, variant=variant, rca_kernel=kernel)
    losses = model.loss(model.train_graph(data, 0), batch)
    assert torch.isfinite(losses["loss"])
    losses["loss"].backward()
    out = model(data)
    d = 16 if variant == "no_dual_fusion" else 8
    assert out["user"].shape == (model.num_users, d) and out["item"].shape == (model.num_items, d)
    if variant == "no_item_graph":
        assert "cl_user" not in losses and not hasattr(model, "rca")


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


def test_ops_and_iu_unchanged_without_item_graph(tiny_data):
    model, data, _ = setup(tiny_data, variant="no_item_graph")
    g = model.train_graph(data, 0)
    assert OPS_ATTR not in g and CACHE_ATTR not in g
    assert g[IU].edge_index.size(1) == g[UI].edge_index.size(1)
