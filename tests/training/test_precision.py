"""trainer.precision=bf16: every model trains under bf16 autocast, close to its fp32 step."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from mmgraph.data.sampler import UniformNegativeSampler
from mmgraph.models.base import prepare_data
from mmgraph.training.run import _model_kwargs
from mmgraph.training.trainer import Trainer
from mmgraph.utils.precision import dense_fp32

MODEL_CONFIGS = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "conf" / "model").glob("*.yaml"))


def test_dense_fp32_casts_only_low_precision_dense_tensors():
    a, b = torch.ones(2, dtype=torch.bfloat16), torch.ones(2, dtype=torch.float64)
    sp = torch.eye(2).to_sparse_csr()
    out = dense_fp32((a, None, b, sp))
    assert out[0].dtype == torch.float32 and out[1] is None and out[2] is b and out[3] is sp


def test_precision_is_checked():
    with pytest.raises(ValueError, match="precision='fp16'"):
        Trainer(precision="fp16")


def _setup(cfg_tiny, name):
    cfg = cfg_tiny(f"model={name}")
    data, split = instantiate(cfg.dataset, _convert_="all")
    torch.manual_seed(0)
    model = instantiate(cfg.model, **_model_kwargs(cfg, data), _convert_="all")
    data = prepare_data(model, data, cfg.cache_dir)
    batch = UniformNegativeSampler(split, torch.Generator().manual_seed(0)).epoch()
    return model, data, type(batch)(*(t[:64] for t in batch))


@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_bf16_step_matches_fp32(cfg_tiny, name):
    """Same state, one batch: the bf16 loss is within 3 % of the fp32 one and the gradients point
    the same way (cosine > 0.97); master weights stay fp32 after the step."""
    grads, losses = {}, {}
    for precision in ("fp32", "bf16"):
        model, data, batch = _setup(cfg_tiny, name)  # a fresh model: graphs built in training start over
        graph = model.train_graph(data, 0)
        model.train()
        torch.manual_seed(1)  # the same dropout / sampling inside the loss
        trainer = Trainer(precision=precision, device="cpu")
        opt = torch.optim.SGD(model.parameters(), lr=0.0)
        losses[precision] = trainer.step(model, graph, batch, opt)["loss"]
        grads[precision] = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        assert all(p.dtype == torch.float32 for p in model.parameters() if p.is_floating_point())
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=3e-2, abs=1e-3)
    g32, g16 = grads["fp32"].double(), grads["bf16"].double()
    assert g32.shape == g16.shape
    if g32.norm() > 0:
        assert torch.nn.functional.cosine_similarity(g32, g16, dim=0) > 0.97


def test_crane_tanh_kernel_under_bf16(cfg_tiny):
    """The hand-written tanh-correlation backward runs in fp32 inside the autocast region."""
    cfg = cfg_tiny("model=crane", "model.rca_kernel=tanh")
    data, split = instantiate(cfg.dataset, _convert_="all")
    model = instantiate(cfg.model, **_model_kwargs(cfg, data), _convert_="all")
    data = prepare_data(model, data, cfg.cache_dir)
    batch = UniformNegativeSampler(split, torch.Generator().manual_seed(0)).epoch()
    batch = type(batch)(*(t[:64] for t in batch))
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    out = Trainer(precision="bf16", device="cpu").step(model, model.train_graph(data, 0), batch, opt)
    assert out["loss"] > 0 and all(p.grad is None or p.grad.dtype == torch.float32 for p in model.parameters())
