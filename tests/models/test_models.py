"""Smoke tests generated from ``conf/model/*.yaml``: every model config gets the same checks."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from mmgraph.data.sampler import UniformNegativeSampler
from mmgraph.models.base import GraphRecommender, prepare_data
from mmgraph.training.run import _model_kwargs

MODEL_CONFIGS = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "conf" / "model").glob("*.yaml"))

#: Parameters a model leaves unused on purpose (no gradient expected).
UNUSED_PARAMS: dict[str, set[str]] = {}


def _setup(cfg_tiny, name):
    cfg = cfg_tiny(f"model={name}")
    data, split = instantiate(cfg.dataset, _convert_="all")
    torch.manual_seed(0)
    model = instantiate(cfg.model, **_model_kwargs(cfg, data), _convert_="all")
    data = prepare_data(model, data, cfg.cache_dir)
    batch = UniformNegativeSampler(split, torch.Generator().manual_seed(0)).epoch()
    batch = type(batch)(*(t[:64] for t in batch))
    return model, data, split, batch


def test_model_configs_found():
    assert {"bpr", "lightgcn"} <= set(MODEL_CONFIGS)


@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_forward_shapes(cfg_tiny, name):
    model, data, split, _ = _setup(cfg_tiny, name)
    assert isinstance(model, GraphRecommender)
    out = model(data)
    assert set(out) == {"user", "item"}
    assert out["user"].shape[0] == split.num_users and out["item"].shape[0] == split.num_items
    assert out["user"].shape[1] == out["item"].shape[1]
    scores = model.score(out["user"][:5], out["item"])
    assert scores.shape == (5, split.num_items)


@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_loss_and_gradients(cfg_tiny, name):
    model, data, _, batch = _setup(cfg_tiny, name)
    model.train()
    losses = model.loss(model.train_graph(data, 0), batch)
    assert losses["loss"].dim() == 0 and torch.isfinite(losses["loss"])
    losses["loss"].backward()
    allowed = UNUSED_PARAMS.get(name, set())
    for pname, p in model.named_parameters():
        if not p.requires_grad or pname in allowed:
            continue
        assert p.grad is not None, f"{name}: parameter {pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name}: parameter {pname} has a non-finite gradient"


@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_eval_deterministic_and_train_graph_pure(cfg_tiny, name):
    model, data, _, _ = _setup(cfg_tiny, name)
    model.eval()
    with torch.no_grad():
        a, b = model(data), model(data)
    assert torch.equal(a["user"], b["user"]) and torch.equal(a["item"], b["item"])
    before = {et: data[et].edge_index.clone() for et in data.edge_types}
    snapshot = copy.copy(data)
    model.train_graph(data, 0)
    for et in data.edge_types:
        assert torch.equal(data[et].edge_index, before[et]), f"train_graph modified {et} in place"
    assert set(snapshot.edge_types) == set(data.edge_types)


@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_unknown_config_key_raises(cfg_tiny, name):
    cfg = cfg_tiny(f"model={name}", "+model.not_a_parameter=1")
    data, _ = instantiate(cfg.dataset, _convert_="all")
    with pytest.raises(Exception, match="not_a_parameter"):
        instantiate(cfg.model, **_model_kwargs(cfg, data), _convert_="all")


@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_steps_lower_the_loss(cfg_tiny, name):
    model, data, _, batch = _setup(cfg_tiny, name)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    first = None
    for _ in range(20):
        opt.zero_grad()
        loss = model.loss(model.train_graph(data, 0), batch)["loss"]
        first = first if first is not None else float(loss.detach())
        loss.backward()
        opt.step()
    assert float(loss.detach()) < first


def test_resolve_modalities_one_check_for_every_model():
    from mmgraph.models.base import resolve_modalities

    dims = {"text": 384, "audio": 128}
    assert resolve_modalities("M", dims, None) == ["text", "audio"]  # dataset order
    assert resolve_modalities("M", dims, None, default=["audio", "text"]) == ["audio", "text"]
    assert resolve_modalities("M", dims, ["audio"]) == ["audio"]
    with pytest.raises(ValueError, match="M modalities \\['image'\\] are not in the dataset's"):
        resolve_modalities("M", dims, ["image"])
    with pytest.raises(ValueError, match="repeat"):
        resolve_modalities("M", dims, ["text", "text"])
    with pytest.raises(ValueError, match="M needs at least one modality"):
        resolve_modalities("M", dims, [])
    assert resolve_modalities("M", dims, [], allow_empty=True) == []
