"""``run(cfg)``: the whole pipeline behind ``experiments/train.py``."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from mmgraph.data.mmrec import DatasetError
from mmgraph.data.split import SplitError
from mmgraph.evaluation.ranking import NonFiniteScoresError
from mmgraph.graph.build import tensor_digest
from mmgraph.models.base import GraphRecommender, dataset_kwargs, prepare_data
from mmgraph.training.config_check import ConfigError, check_config
from mmgraph.training.loggers import LoggerError, NoLogger, flat_params
from mmgraph.training.trainer import DivergenceError, ResumeError, Trainer, load_checkpoint
from mmgraph.utils.io import atomic_save_npz, atomic_write_json
from mmgraph.utils.memory import peak_rss_mb
from mmgraph.utils.seed import seed_everything

log = logging.getLogger(__name__)

#: Errors caused by the user's input or run (bad config, data, checkpoint; divergence): the CLI prints
#: their message and exits 2, without a traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, DatasetError, SplitError, ResumeError,
                                                 DivergenceError, NonFiniteScoresError, LoggerError)

#: Trainer keys that may change between an interrupted run and its resumption: output and device
#: settings, and the stopping rule (max_epochs, patience), which decides where a run ends but not
#: what any epoch computes, so a capped run can be extended or cut short and tested.
_RESUMABLE_KEYS = ("resume", "progress", "log_every_s", "checkpoint_every", "device", "max_epochs", "patience",
                   "divergence_factor")


#: Keys added after runs existed, with the value that reproduces the behaviour from before they
#: existed: at that value a key is left out of the fingerprint, so a run started before it was
#: added still resumes (``model.fold_dct`` changes only the order of LIRDRec's arithmetic).
_LATER_KEYS = {("trainer", "precision"): "fp32", ("model", "fold_dct"): True}


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
    for (group, key), value in _LATER_KEYS.items():
        if isinstance(blob[group], dict) and key in blob[group] and blob[group][key] == value:
            del blob[group][key]
    return hashlib.sha1(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]


def data_digests(data, split) -> dict[str, str]:
    """Content hashes of what a run reads: each stage's interactions and each modality's features.

    Stored in every checkpoint, so resuming after the data changed is refused with what changed
    (paths alone would not notice an edited ``x_label`` or a regenerated feature file).
    """
    out = {f"{stage} interactions": tensor_digest(getattr(split, stage)) for stage in ("train", "valid", "test")}
    out["sizes"] = f"{split.num_users} users x {split.num_items} items"
    for key in sorted(k for k in data["item"].keys() if k.startswith("x_")):
        out[f"{key[2:]} features"] = tensor_digest(data["item"][key])
    return out


def check_same_data(ckpt_path: Path, digests: dict[str, str]) -> None:
    """Raise :class:`ResumeError` naming what changed when ``ckpt_path`` was written on other data."""
    stored = load_checkpoint(ckpt_path).get("data")
    if stored is None:
        return  # written before data fingerprints existed: nothing to compare
    changed = sorted(k for k in set(stored) | set(digests) if stored.get(k) != digests.get(k))
    if changed:
        detail = "; ".join(f"{k}: {stored[k]} -> {digests[k]}" if k == "sizes" and k in stored and k in digests
                           else k for k in changed)
        raise ResumeError(f"{ckpt_path}: the data changed since this checkpoint was written ({detail}); "
                          "resuming would mix two datasets. Start a new run (another hydra.run.dir), or "
                          "restore the original files")


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
            fp = load_checkpoint(ckpt).get("fingerprint")
        except ResumeError:  # an unreadable checkpoint is simply not a candidate
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
    check_config(cfg)  # wrong keys or types fail here, before any data is read
    tracker = _tracker(cfg)  # a selected but missing tracking backend too
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
    digests = data_digests(data, split)
    resume_from = _resume_point(trainer, out, fingerprint, digests)
    if resume_from is not None and resume_from.parent != out:
        log.info("continuing the interrupted run in %s (its checkpoints and metrics.json stay there)",
                 resume_from.parent)
        out = resume_from.parent
    previous = _read_metrics(out / "metrics.json") if resume_from is not None else None
    tracker.start(flat_params(OmegaConf.to_container(cfg, resolve=True)), out)
    trainer.epoch_callbacks.append(tracker.log_epoch)
    fit = trainer.fit(model, data, split, out, seed=int(cfg.seed), fingerprint=fingerprint,
                      resume_from=resume_from, meta={"data": digests})
    test, test_s, test_rows = trainer.test(model, data, split, fit.best_state, per_user=True)  # the only test
    write_per_user(out / "per_user.npz", test_rows,
                   trainer.evaluator.evaluate(model, data.to(trainer.device), split, "valid", per_user=True)[1])
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
    if previous is not None and fit.epochs_trained == 0:  # a finished run resumed: keep its measurements
        for key in ("timing", "peak_rss_mb", "device"):
            if key in previous:
                metrics[key] = previous[key]
    atomic_write_json(out / "metrics.json", metrics)
    log.info("wrote %s", out / "metrics.json")
    tracker.finish(metrics, out)
    return metrics


def _tracker(cfg: DictConfig):
    """The configured experiment tracker (``logger`` group), or :class:`NoLogger`."""
    if cfg.get("logger") is None:
        return NoLogger()
    try:
        return instantiate(cfg.logger, _convert_="all")
    except InstantiationException as e:
        if isinstance(e.__cause__, LoggerError):
            raise e.__cause__ from None
        raise


def write_per_user(path: Path, test_rows: dict, valid_rows: dict) -> None:
    """``per_user.npz``: ``users`` and one float32 array per metric for the test split (the best
    validation state's), ``valid_users`` and ``valid_``-prefixed arrays for the validation split.

    Cold-start arrays hold NaN for users without a held-out positive. Their means are the reported
    metrics (to float32 precision); ``experiments/summarize.py`` pairs runs over these users.
    """
    arrays = {"users": test_rows["users"].astype(np.int64)}
    arrays.update({k: v.astype(np.float32) for k, v in test_rows.items() if k != "users"})
    arrays["valid_users"] = valid_rows["users"].astype(np.int64)
    arrays.update({f"valid_{k}": v.astype(np.float32) for k, v in valid_rows.items() if k != "users"})
    atomic_save_npz(path, arrays)


def _resume_point(trainer: Trainer, out: Path, fingerprint: str, digests: dict[str, str]) -> Path | None:
    """The checkpoint to resume from, or ``None`` (no ``trainer.resume``, or nothing to resume: start fresh)."""
    if not trainer.resume:
        return None
    found = find_resumable(out, fingerprint)
    if found is None:
        log.warning("trainer.resume=true but no unfinished run with this configuration was found in %s or "
                    "beside it in %s: starting a fresh run", out, out.parent)
        return None
    check_same_data(found, digests)
    return found


def _read_metrics(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _fmt(m: dict[str, float]) -> str:
    return "  ".join(f"{k}: {v:.4f}" for k, v in m.items())
