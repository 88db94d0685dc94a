"""``run(cfg)``: the whole pipeline behind ``experiments/train.py``."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from mmgraph.data.mmrec import DatasetError
from mmgraph.data.split import SplitError
from mmgraph.models.base import GraphRecommender, dataset_kwargs, prepare_data
from mmgraph.training.trainer import ResumeError, Trainer
from mmgraph.utils.io import atomic_write_json
from mmgraph.utils.memory import peak_rss_mb
from mmgraph.utils.seed import seed_everything

log = logging.getLogger(__name__)

#: Trainer keys that may change between an interrupted run and its resumption: output and device
#: settings, and the stopping rule (max_epochs, patience), which decides where a run ends but not
#: what any epoch computes, so a capped run can be extended or cut short and tested.
_RESUMABLE_KEYS = ("resume", "progress", "log_every_s", "checkpoint_every", "device", "max_epochs", "patience")


def config_fingerprint(cfg: DictConfig) -> str:
    """Hash of everything that determines a run's results (seed, dataset, model, trainer)."""
    trainer = OmegaConf.to_container(cfg.trainer, resolve=True)
    assert isinstance(trainer, dict)
    for k in _RESUMABLE_KEYS:
        trainer.pop(k, None)
    blob = {
        "seed": cfg.seed,
        "dataset": OmegaConf.to_container(cfg.dataset, resolve=True),
        "model": OmegaConf.to_container(cfg.model, resolve=True),
        "trainer": trainer,
    }
    return hashlib.sha1(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _output_dir(cfg: DictConfig, output_dir: str | Path | None) -> Path:
    if output_dir is not None:
        return Path(output_dir)
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:  # not running under @hydra.main
        return Path(cfg.get("output_dir") or "outputs/run")


def find_resumable(out: Path, fingerprint: str) -> Path | None:
    """``last.pt`` to resume: in ``out``, else the newest unfinished run with the same fingerprint beside it."""
    if (out / "last.pt").is_file():
        return out / "last.pt"
    candidates = []
    for ckpt in out.parent.glob("*/last.pt"):
        if ckpt.parent == out or (ckpt.parent / "metrics.json").is_file():
            continue
        try:
            fp = torch.load(ckpt, map_location="cpu", weights_only=True).get("fingerprint")
        except Exception:  # noqa: BLE001 - an unreadable checkpoint is simply not a candidate
            continue
        if fp == fingerprint:
            candidates.append(ckpt)
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None


def _model_kwargs(cfg: DictConfig, data) -> dict[str, Any]:
    return dataset_kwargs(get_class(cfg.model._target_), data)


def load_dataset(dataset_cfg: DictConfig):
    """Instantiate a dataset config; a bad input raises the loader's own error, not Hydra's wrapper."""
    try:
        return instantiate(dataset_cfg, _convert_="all")
    except InstantiationException as e:
        if isinstance(e.__cause__, (DatasetError, SplitError)):
            raise e.__cause__ from None
        raise


def run(cfg: DictConfig, output_dir: str | Path | None = None) -> dict[str, Any]:
    """Load data, build graphs, train with early stopping, test once, write ``metrics.json``.

    Returns:
        The ``metrics.json`` content.
    """
    t_start = time.perf_counter()
    out = _output_dir(cfg, output_dir)
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(int(cfg.seed))
    data, split = load_dataset(cfg.dataset)
    model: GraphRecommender = instantiate(cfg.model, **_model_kwargs(cfg, data), _convert_="all")
    data = prepare_data(model, data, cfg.get("cache_dir"))
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("model %s with %s trainable parameters", model, f"{n_params:,}")

    trainer: Trainer = instantiate(cfg.trainer, _convert_="all")
    fingerprint = config_fingerprint(cfg)
    resume_from = None
    if trainer.resume:
        resume_from = find_resumable(out, fingerprint)
        if resume_from is None:
            raise ResumeError(
                f"trainer.resume=true but no unfinished run with this configuration was found in "
                f"{out} or beside it in {out.parent}; pass hydra.run.dir=<the interrupted run's folder>"
            )
    fit = trainer.fit(model, data, split, out, seed=int(cfg.seed), fingerprint=fingerprint,
                      resume_from=resume_from)
    test, test_s = trainer.test(model, data, split, fit.best_state)  # the only test evaluation
    monitor = trainer.monitor
    log.info("best valid (epoch %d): %s", fit.best_epoch, _fmt(fit.best_valid))
    log.info("test at the best validation epoch: %s", _fmt(test))
    dataset_name = data.dataset_name if "dataset_name" in data else cfg.dataset.get("name")
    metrics = {
        "model": type(model).__name__,
        "dataset": dataset_name,
        "seed": int(cfg.seed),
        "monitor": monitor,
        "best_epoch": fit.best_epoch,
        "epochs_run": fit.epochs_run,
        "stopped_early": fit.stopped_early,
        "valid": fit.best_valid,
        "test": test,
        "history": fit.history,
        "timing": {**{k: v for k, v in fit.timing.items() if k != "peak_rss_mb"}, "test_s": test_s,
                   "total_s": time.perf_counter() - t_start},
        "peak_rss_mb": peak_rss_mb(),
        "num_parameters": n_params,
        "device": str(trainer.device),
        "dataset_summary": split.summary,
        "fingerprint": fingerprint,
        "resumed_from": str(resume_from) if resume_from else None,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    atomic_write_json(out / "metrics.json", metrics)
    log.info("wrote %s", out / "metrics.json")
    return metrics


def _fmt(m: dict[str, float]) -> str:
    return "  ".join(f"{k}: {v:.4f}" for k, v in m.items())
