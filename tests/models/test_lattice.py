"""LATTICE invariants: gradient flow, the refresh schedule, D^{-1}(A + I), evaluation, variants."""

from __future__ import annotations

import math

import pytest
import torch
from hydra.utils import instantiate

from mmgraph.data.sampler import UniformNegativeSampler
from mmgraph.evaluation import FullRankingEvaluator
from mmgraph.graph import GraphSpec, build_graph
from mmgraph.models import LATTICE, LightGCN
from mmgraph.models.base import check_requirements
from mmgraph.nn.latent_graph import LatentGraph
from mmgraph.training import run
from mmgraph.training.run import _model_kwargs
from mmgraph.typing import ITEM, IU, UI, USER, item_knn_type


def setup(cfg_tiny, *overrides):
    cfg = cfg_tiny("model=lattice", *overrides)
    data, split = instantiate(cfg.dataset, _convert_="all")
    torch.manual_seed(0)
    model = instantiate(cfg.model, **_model_kwargs(cfg, data), _convert_="all")
    data = build_graph(data, model.graph_spec, cache_dir=cfg.cache_dir)
    check_requirements(model, data)
    model.init_from_data(data)
    batches = UniformNegativeSampler(split, torch.Generator().manual_seed(0)).epoch()
    batches = [type(batches)(*(t[s:s + 32] for t in batches)) for s in (0, 32, 64)]
    return model, data, split, batches


def graph_params(model: LATTICE) -> dict[str, torch.nn.Parameter]:
    out = {f"latent.{n}": p for n, p in model.latent.named_parameters()}
    out.update({f"raw_features.{n}": p for n, p in model.raw_features.named_parameters()})
    return out


def step_grads(model, graph, batch) -> dict[str, bool]:
    model.zero_grad(set_to_none=True)
    model.loss(graph, batch)["loss"].backward()
    return {n: p.grad is not None and bool(p.grad.abs().sum() > 0) for n, p in model.named_parameters()}


def test_gradients_reach_transforms_alpha_and_raw_features(cfg_tiny):
    model, data, _, batches = setup(cfg_tiny)
    assert model.latent.modalities == ["image", "text"]
    grads = step_grads(model, model.train_graph(data, 0), batches[0])
    for name in ("latent.transforms.image.weight", "latent.transforms.image.bias",
                 "latent.transforms.text.weight", "latent.transforms.text.bias",
                 "latent.modality_logits", "raw_features.image", "raw_features.text",
                 "backbone.user_emb.weight", "backbone.item_emb.weight"):
        assert grads[name], f"{name} got no gradient"


def test_epoch_refresh_learns_the_graph_on_the_first_batch_only(cfg_tiny):
    model, data, _, batches = setup(cfg_tiny)
    for epoch in (0, 1):
        graph = model.train_graph(data, epoch)
        seen = [step_grads(model, graph, b) for b in batches]
        for name in graph_params(model):
            assert seen[0][name], f"epoch {epoch}: {name} has no gradient on the first batch"
            assert not seen[1][name] and not seen[2][name], f"{name} has a gradient after the first batch"
        assert all(s["backbone.item_emb.weight"] and s["backbone.user_emb.weight"] for s in seen)
        assert graph.latent_graphs.builds == 1


def test_batch_and_never_refresh(cfg_tiny):
    model, data, _, batches = setup(cfg_tiny, "model.graph_refresh=batch")
    graph = model.train_graph(data, 0)
    for b in batches:
        assert step_grads(model, graph, b)["latent.transforms.text.weight"]
    assert graph.latent_graphs.builds == len(batches)

    model, data, _, batches = setup(cfg_tiny, "model.graph_refresh=never")
    graph = model.train_graph(data, 0)
    assert graph is data  # nothing to cache
    grads = step_grads(model, graph, batches[0])
    assert not grads["latent.transforms.image.weight"] and not grads["raw_features.image"]
    assert grads["latent.modality_logits"]  # α still weighs the initial graphs


def test_cached_graph_equals_a_fresh_build(cfg_tiny):
    model, data, _, _ = setup(cfg_tiny)
    graph = model.train_graph(data, 0)
    first = model(graph)  # builds, with grad
    again = model(graph)  # the cached detached CSR copy
    with torch.no_grad():
        fresh = model(data)  # no cache: a rebuild
    torch.testing.assert_close(again["item"], first["item"].detach(), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(fresh["item"], first["item"].detach(), atol=1e-6, rtol=1e-5)
    assert "latent_graphs" not in data  # train_graph did not touch its input


def test_evaluation_rebuilds_once(cfg_tiny, monkeypatch):
    model, data, split, _ = setup(cfg_tiny)
    calls = []
    original = LatentGraph.forward

    def counting(self, *args, **kwargs):
        calls.append(torch.is_grad_enabled())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(LatentGraph, "forward", counting)
    model.eval()
    metrics = FullRankingEvaluator(ks=(20,), batch_size=7).evaluate(model, data, split, "valid")
    assert calls == [False] and math.isfinite(metrics["recall@20"])


def test_rw_selfloop_rows_sum_to_one(tiny_data):
    data, _ = tiny_data
    g = build_graph(data, GraphSpec(ui_norm="rw_selfloop"))
    U, I = g[USER].num_nodes, g[ITEM].num_nodes
    for et, nt, n in ((IU, USER, U), (UI, ITEM, I)):
        rows = torch.zeros(n).index_add_(0, g[et].edge_index[1], g[et].edge_weight) + g[nt].self_weight
        torch.testing.assert_close(rows, torch.ones(n))
    assert "self_weight" not in build_graph(g, GraphSpec(ui_norm="sym"))[USER]


def test_lightgcn_with_rw_selfloop_equals_dense(tiny_data):
    data, _ = tiny_data
    g = build_graph(data, GraphSpec(ui_norm="rw_selfloop"))
    U, I = g[USER].num_nodes, g[ITEM].num_nodes
    torch.manual_seed(0)
    model = LightGCN(U, I, num_layers=2)
    ei = g[UI].edge_index
    A = torch.zeros(U + I, U + I)
    A[ei[0], U + ei[1]] = 1.0
    A[U + ei[1], ei[0]] = 1.0
    A = A + torch.eye(U + I)
    P = A / A.sum(1, keepdim=True)  # D^{-1}(A + I)
    E0 = torch.cat([model.user_emb.weight, model.item_emb.weight]).detach()
    expect = (E0 + P @ E0 + P @ P @ E0) / 3
    out = model(g)
    torch.testing.assert_close(torch.cat([out["user"], out["item"]]).detach(), expect, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("backbone", ["mf", "ngcf", "lightgcn"])
@pytest.mark.parametrize("variant", ["cf", "cf_feats", "feats_cf", "lattice"])
def test_backbones_and_variants(cfg_tiny, backbone, variant):
    model, data, split, batches = setup(cfg_tiny, f"model.backbone={backbone}", f"model.variant={variant}")
    assert model.required_edge_types[:2] == (UI, IU)
    assert (item_knn_type("image") in model.required_edge_types) == (variant in ("lattice", "feats_cf"))
    grads = step_grads(model, model.train_graph(data, 0), batches[0])
    assert all(grads.values()), [n for n, g in grads.items() if not g]
    model.eval()
    with torch.no_grad():
        out = model(data)
    assert out["item"].shape == (split.num_items, 64) and torch.isfinite(out["item"]).all()


def test_init_from_data_is_required_and_frozen_features_read_data(cfg_tiny):
    cfg = cfg_tiny("model=lattice")
    data, _ = instantiate(cfg.dataset, _convert_="all")
    model = instantiate(cfg.model, **_model_kwargs(cfg, data), _convert_="all")
    data = build_graph(data, model.graph_spec, cache_dir=cfg.cache_dir)
    with pytest.raises(RuntimeError, match="init_from_data"):
        model(data)
    model.init_from_data(data)
    assert torch.equal(model.raw_features["image"], data[ITEM].x_image)
    frozen = instantiate(cfg.model, **_model_kwargs(cfg, data), train_raw_features=False, _convert_="all")
    assert not hasattr(frozen, "raw_features")
    frozen.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("raw_")})
    with torch.no_grad():  # same parameters, raw features not yet trained: same output
        torch.testing.assert_close(frozen(data)["item"], model(data)["item"])


def test_invalid_options(tiny_data):
    with pytest.raises(ValueError, match="backbone"):
        LATTICE(5, 5, modality_dims={"image": 3}, backbone="gcn")
    with pytest.raises(ValueError, match="feat_embed_dim"):
        LATTICE(5, 5, modality_dims={"image": 3}, variant="cf_feats", feat_embed_dim=32)
    with pytest.raises(ValueError, match="graph_refresh"):
        LATTICE(5, 5, modality_dims={"image": 3}, graph_refresh="sometimes")


def test_cold_split_runs(cfg_tiny, tmp_path):
    cfg = cfg_tiny("model=lattice", "dataset.split=cold", "trainer.max_epochs=2")
    metrics = run(cfg, output_dir=tmp_path)
    assert metrics["model"] == "LATTICE" and math.isfinite(metrics["test"]["recall@20"])
