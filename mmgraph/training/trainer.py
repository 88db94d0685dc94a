"""Training loop: BPR batches, validation-only early stopping, one test on the best state."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch_geometric.data import HeteroData
from tqdm.auto import tqdm

from mmgraph.data.sampler import UniformNegativeSampler
from mmgraph.data.split import RecSplit
from mmgraph.evaluation.ranking import FullRankingEvaluator
from mmgraph.models.base import GraphRecommender
from mmgraph.typing import BPRBatch
from mmgraph.utils.io import atomic_save
from mmgraph.utils.memory import peak_rss_mb

log = logging.getLogger(__name__)

CKPT_VERSION = 1


class ResumeError(RuntimeError):
    """A checkpoint cannot be resumed."""


class DivergenceError(FloatingPointError):
    """The training loss is not finite or has exploded (see ``Trainer.divergence_factor``)."""


@dataclass
class _Run:
    """What the pieces of one :meth:`Trainer.fit` share."""

    model: GraphRecommender
    data: HeteroData
    split: RecSplit
    out: Path
    fingerprint: str
    gen: torch.Generator
    sampler: UniformNegativeSampler
    opt: torch.optim.Optimizer
    sched: Any
    state: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class FitResult:
    """What :meth:`Trainer.fit` returns."""

    best_epoch: int
    best_valid: dict[str, float]
    best_state: dict[str, torch.Tensor]
    history: list[dict[str, Any]]
    timing: dict[str, float]
    epochs_run: int
    stopped_early: bool
    extra: dict[str, Any] = field(default_factory=dict)
    epochs_trained: int = 0  #: epochs trained by this call (0 for a finished run resumed)


#: ``trainer.precision`` values.
PRECISIONS = ("fp32", "bf16")


def resolve_device(device: str) -> torch.device:
    """``'auto'`` → CUDA when available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class Trainer:
    """Trains a :class:`~mmgraph.models.base.GraphRecommender` with BPR batches.

    Each epoch: ``model.train_graph(data, epoch)`` gives the graph to train on; all
    train interactions are shuffled and paired with fresh uniform negatives
    (vectorised); batches of ``train_batch_size`` rows are optimised; the
    learning rate is multiplied by ``lr_decay ** (1 / lr_decay_every)`` per epoch
    (MMRec's ``learning_rate_scheduler``; ``lr_decay=1`` keeps it constant).
    Every ``eval_every`` epochs the validation split is evaluated; training stops
    when ``monitor`` has not strictly improved for more than ``patience``
    evaluations (MMRec's rule: with ``patience=20`` it stops at the 21st). The
    best state is kept; the test split is evaluated once, on it, by :meth:`test`.

    Checkpoints (``last.pt`` every ``checkpoint_every`` epochs, at epoch boundaries only,
    ``best.pt`` on improvement) are written atomically and hold everything
    needed to resume bit-for-bit on CPU: model, optimiser, scheduler, RNG states,
    early-stopping state, history and timings.

    Args:
        max_epochs: epoch limit. (default: ``1000``)
        patience: evaluations without strict improvement tolerated. (default: ``20``)
        eval_every: validate every this many epochs. (default: ``1``)
        monitor: validation metric for selection, e.g. ``'recall@20'`` (a
            ``'valid/'`` prefix is accepted; test metrics are refused).
        train_batch_size: positive rows per batch. (default: ``2048``)
        optimizer: partial optimiser constructor taking the parameters. (default: Adam, lr 1e-3)
        lr_decay: MMRec ``learning_rate_scheduler[0]``. (default: ``1.0``)
        lr_decay_every: MMRec ``learning_rate_scheduler[1]``. (default: ``50``)
        clip_grad_norm: max gradient norm, or ``None``. (default: ``None``)
        evaluator: the full-ranking evaluator.
        device: ``'auto'``, ``'cpu'``, ``'cuda'``, ``'cuda:1'``... (default: ``'auto'``)
        resume: continue from ``last.pt`` (see :meth:`fit`). (default: ``False``)
        checkpoint_every: write ``last.pt`` every this many epochs (0: never). (default: ``1``)
        progress: show a per-batch progress bar (``None``: only on a terminal).
        log_every_s: without a progress bar (logs, batch jobs), log a progress line (batch, loss,
            seconds per batch, epoch ETA) at most this often during an epoch; ``0`` turns it off.
            (default: ``60``)
        divergence_factor: stop with :class:`DivergenceError` when a batch loss exceeds this
            multiple of the magnitude of the run's first batch loss (a non-finite loss always
            stops); ``None`` turns the multiple off. (default: ``100``)
        precision: ``'fp32'`` or ``'bf16'``: the training forward and loss run under
            ``torch.autocast(dtype=torch.bfloat16)`` (dense matrix products in bf16 — AMX or
            AVX512-BF16 on CPU, tensor cores on CUDA), with fp32 master weights and optimiser
            state; sparse products, which have no bf16 kernel, and the loss reduction run in
            fp32 (:func:`mmgraph.utils.precision.dense_fp32`). Evaluation is always fp32.
            (default: ``'fp32'``)
    """

    def __init__(
        self,
        max_epochs: int = 1000,
        patience: int = 20,
        eval_every: int = 1,
        monitor: str = "recall@20",
        train_batch_size: int = 2048,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        lr_decay: float = 1.0,
        lr_decay_every: int = 50,
        clip_grad_norm: float | None = None,
        evaluator: FullRankingEvaluator | None = None,
        device: str = "auto",
        resume: bool = False,
        checkpoint_every: int = 1,
        progress: bool | None = None,
        log_every_s: float = 60.0,
        divergence_factor: float | None = 100.0,
        precision: str = "fp32",
    ) -> None:
        if monitor.startswith("test"):
            raise ValueError(f"monitor={monitor!r}: selection must use a validation metric")
        monitor = monitor.removeprefix("valid/")
        if max_epochs < 1 or eval_every < 1 or patience < 0 or train_batch_size < 1:
            raise ValueError("max_epochs, eval_every and train_batch_size must be >= 1, patience >= 0")
        if log_every_s < 0:
            raise ValueError(f"log_every_s={log_every_s}: must be >= 0 (0 turns progress lines off)")
        self.max_epochs = max_epochs
        self.patience = patience
        self.eval_every = eval_every
        self.monitor = monitor
        self.train_batch_size = train_batch_size
        self.optimizer_fn = optimizer or partial(torch.optim.Adam, lr=1e-3)
        self.lr_decay = lr_decay
        self.lr_decay_every = lr_decay_every
        self.clip_grad_norm = clip_grad_norm
        self.evaluator = evaluator or FullRankingEvaluator()
        #: Called with each epoch's history record after its validation (``run`` adds the logger's).
        self.epoch_callbacks: list = []
        self.device = resolve_device(device)
        self.resume = resume
        self.checkpoint_every = checkpoint_every
        self.progress = progress
        self.log_every_s = log_every_s
        if divergence_factor is not None and divergence_factor <= 1:
            raise ValueError(f"divergence_factor={divergence_factor}: must be > 1, or null to turn the check off")
        self.divergence_factor = divergence_factor
        if precision not in PRECISIONS:
            raise ValueError(f"precision={precision!r}: must be one of {list(PRECISIONS)}")
        self.precision = precision
        metric_names = [f"{m}@{k}" for m in self.evaluator.metrics for k in self.evaluator.ks]
        if monitor not in metric_names:
            raise ValueError(f"monitor={monitor!r} is not computed by the evaluator ({metric_names})")

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        model: GraphRecommender,
        data: HeteroData,
        split: RecSplit,
        output_dir: str | Path,
        seed: int = 0,
        fingerprint: str = "",
        resume_from: str | Path | None = None,
        meta: dict[str, Any] | None = None,
    ) -> FitResult:
        """Train with validation-only early stopping.

        Args:
            model: the model (moved to the trainer's device).
            data: the graph (with the model's ``GraphSpec`` built).
            split: the interactions of each stage.
            output_dir: where ``last.pt`` and ``best.pt`` are written.
            seed: seed of the trainer's RNG (shuffling, negatives).
            fingerprint: identifies the configuration; a checkpoint with another
                fingerprint is refused on resume.
            resume_from: checkpoint to resume (default with ``resume=True``:
                ``<output_dir>/last.pt``).
            meta: stored as is in every ``last.pt`` (``run`` puts the data's content hashes there).

        Ctrl-C leaves ``last.pt`` as written at the last epoch boundary (a mid-epoch model
        would not match the epoch it is labelled with), so resuming reproduces the
        uninterrupted run exactly.
        """
        run = self._start(model, data, split, output_dir, seed, fingerprint, resume_from)
        run.meta = dict(meta or {})
        state = run.state
        first_epoch = state["epoch"]
        stopped = state["bad_evals"] > self.patience
        try:
            for epoch in range(state["epoch"], state["epoch"] if stopped else self.max_epochs):
                terms, t_sample, t_train = self.train_epoch(run, epoch)
                state["epoch"] = epoch + 1
                msg = (f"epoch {epoch + 1:4d} | loss {terms['loss']:.5f} | train {t_train:.2f}s "
                       f"(sampling {t_sample:.3f}s)")
                if (epoch + 1) % self.eval_every == 0 or epoch + 1 == self.max_epochs:
                    msg += self.validate(run, epoch, terms, t_train)
                    stopped = state["bad_evals"] > self.patience
                log.info(msg + f" | ETA <= {_fmt_s(_epoch_s(state) * (self.max_epochs - epoch - 1))}")
                if self.checkpoint_every and ((epoch + 1) % self.checkpoint_every == 0 or stopped):
                    self.save_last(run)
                if stopped:
                    log.info("early stopping: no improvement of valid %s for %d evaluations; best %.4f at epoch %d",
                             self.monitor, state["bad_evals"], state["best_score"], state["best_epoch"])
                    break
        except KeyboardInterrupt:
            last = run.out / "last.pt"
            log.warning("interrupted: %s holds the last saved epoch boundary%s; resume with trainer.resume=true",
                        last, "" if last.is_file() else " (none yet)")
            raise
        result = self._result(model, state, stopped)
        result.epochs_trained = state["epoch"] - first_epoch
        return result

    # The pieces of ``fit``, each one path with its own test.
    def _start(self, model, data, split, output_dir, seed, fingerprint, resume_from) -> _Run:
        """Move model and data to the device; build sampler, optimiser, scheduler; load a checkpoint."""
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        model = model.to(self.device)
        data = data.to(self.device)
        gen = torch.Generator().manual_seed(seed)
        opt = self.optimizer_fn(model.parameters())
        decay = self.lr_decay ** (1.0 / self.lr_decay_every)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: decay**e)
        run = _Run(model, data, split, out, fingerprint, gen, UniformNegativeSampler(split, generator=gen),
                   opt, sched, _fresh_state())
        ckpt_path = Path(resume_from) if resume_from is not None else out / "last.pt" if self.resume else None
        if resume_from is None and ckpt_path is not None and not ckpt_path.exists():
            log.warning("trainer.resume=true but %s does not exist: starting a fresh run", ckpt_path)
            ckpt_path = None
        if ckpt_path is not None:
            run.state = {**_fresh_state(), **self._load(ckpt_path, fingerprint, model, opt, sched, gen)}
            log.info("resumed from %s at epoch %d", ckpt_path, run.state["epoch"])
            st = run.state
            if st["epoch"] and (st["bad_evals"] > self.patience or st["epoch"] >= self.max_epochs):
                log.info("resumed run is finished (epoch %d, max_epochs %d, %d/%d evaluations without "
                         "improvement): no more training", st["epoch"], self.max_epochs, st["bad_evals"],
                         self.patience)
        return run

    def train_epoch(self, run: _Run, epoch: int) -> tuple[dict[str, float], float, float]:
        """One epoch of BPR batches: ``(mean loss terms, sampling seconds, training seconds)``."""
        t0 = time.perf_counter()
        batch_all = run.sampler.epoch()
        t_sample = time.perf_counter() - t0
        graph = run.model.train_graph(run.data, epoch)
        run.model.train()
        t1 = time.perf_counter()
        n_batches = math.ceil(batch_all.users.numel() / self.train_batch_size)
        terms: dict[str, float] = {}
        bar = tqdm(range(n_batches), desc=f"epoch {epoch + 1}", leave=False,
                   disable=(not self.progress) if self.progress is not None else None)
        log_progress = bool(bar.disable) and self.log_every_s > 0
        last_log = time.perf_counter()
        for b in bar:
            sl = slice(b * self.train_batch_size, (b + 1) * self.train_batch_size)
            losses = self.step(run.model, graph, BPRBatch(*(t[sl] for t in batch_all)).to(self.device),
                               run.opt, where=f"epoch {epoch + 1}, batch {b + 1}", state=run.state)
            for k, v in losses.items():
                terms[k] = terms.get(k, 0.0) + v
            if b % 10 == 0:
                bar.set_postfix(loss=f"{terms['loss'] / (b + 1):.4f}")
            now = time.perf_counter()
            if log_progress and now - last_log >= self.log_every_s and b + 1 < n_batches:
                last_log = now
                per = (now - t1) / (b + 1)
                log.info("epoch %d | batch %d/%d | loss %.5f | %.2fs/batch | epoch ETA %s", epoch + 1, b + 1,
                         n_batches, terms["loss"] / (b + 1), per, _fmt_s(per * (n_batches - b - 1)))
        bar.close()
        run.sched.step()
        t_train = time.perf_counter() - t1
        run.state["times"]["sample"].append(t_sample)
        run.state["times"]["train"].append(t_train)
        return {k: v / n_batches for k, v in terms.items()}, t_sample, t_train

    def step(self, model: GraphRecommender, graph: HeteroData, batch: BPRBatch, opt: torch.optim.Optimizer,
             where: str = "", state: dict[str, Any] | None = None) -> dict[str, float]:
        """One optimisation step (``zero_grad`` → ``loss`` → checks → ``backward`` → clip → ``step``).

        Raises :class:`DivergenceError` when the loss is not finite, or (``divergence_factor``)
        larger than ``divergence_factor`` times the magnitude of the run's first batch loss
        (kept in ``state['first_loss']``, floored at 1e-3). Returns the loss terms as floats.
        """
        opt.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            losses = model.loss(graph, batch)
        loss = losses["loss"].float()
        value = float(loss.detach())
        name = type(model).__name__
        if not math.isfinite(value):
            raise DivergenceError(f"{name}: loss is {value} at {where or 'this step'}; "
                                  "lower trainer.optimizer.lr or check the inputs")
        if state is not None and self.divergence_factor:
            first = state.setdefault("first_loss", value)
            limit = self.divergence_factor * max(abs(first), 1e-3)
            if abs(value) > limit:
                raise DivergenceError(
                    f"{name}: loss {value:.4g} at {where or 'this step'} exceeds {self.divergence_factor:g}x the "
                    f"first batch's {first:.4g}: training has diverged; lower trainer.optimizer.lr (or set "
                    "trainer.divergence_factor=null to turn this check off)")
        loss.backward()
        if self.clip_grad_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), self.clip_grad_norm)
        opt.step()
        return {k: float(v.detach()) for k, v in losses.items()}

    def validate(self, run: _Run, epoch: int, terms: dict[str, float], t_train: float) -> str:
        """Evaluate the validation split, update the early-stopping state, save ``best.pt``; a log fragment."""
        state = run.state
        t2 = time.perf_counter()
        valid = self.evaluator.evaluate(run.model, run.data, run.split, "valid")
        t_eval = time.perf_counter() - t2
        state["times"]["eval"].append(t_eval)
        score = valid[self.monitor]
        state["history"].append({"epoch": epoch + 1, "loss": terms["loss"], "losses": terms,
                                 "valid": valid, "train_s": t_train, "eval_s": t_eval})
        for callback in self.epoch_callbacks:  # experiment trackers (mmgraph.training.loggers)
            callback(state["history"][-1])
        improved = score > state["best_score"]
        if improved:
            state.update(best_score=score, best_epoch=epoch + 1, best_valid=valid, bad_evals=0,
                         best_state=_cpu_state(run.model))
            atomic_save({"model": state["best_state"], "epoch": epoch + 1, "valid": valid,
                         "fingerprint": run.fingerprint}, run.out / "best.pt")
        else:
            state["bad_evals"] += 1
        return (f" | valid {self.monitor} {score:.4f}"
                + (f" ndcg@20 {valid['ndcg@20']:.4f}" if "ndcg@20" in valid else "")
                + f" | eval {t_eval:.2f}s"
                + (" | best, saved" if improved else
                   f" | best {state['best_score']:.4f} @ {state['best_epoch']} "
                   f"({state['bad_evals']}/{self.patience})"))

    def save_last(self, run: _Run) -> None:
        """Write ``last.pt``: everything needed to resume at the current epoch boundary."""
        self._save(run.out / "last.pt", run.fingerprint, run.model, run.opt, run.sched, run.gen, run.state, run.meta)

    @staticmethod
    def _result(model: GraphRecommender, state: dict[str, Any], stopped: bool) -> FitResult:
        if state["best_state"] is None:
            state["best_state"] = _cpu_state(model)
            state["best_epoch"] = state["epoch"]
        t = state["times"]
        timing = {"sample_s": _mean(t["sample"]), "train_epoch_s": _mean(t["train"]), "eval_s": _mean(t["eval"]),
                  "peak_rss_mb": peak_rss_mb()}
        return FitResult(best_epoch=state["best_epoch"], best_valid=state["best_valid"],
                         best_state=state["best_state"], history=state["history"], timing=timing,
                         epochs_run=state["epoch"], stopped_early=stopped)

    # ----------------------------------------------------------------- test
    def test(self, model: GraphRecommender, data: HeteroData, split: RecSplit,
             state: dict[str, torch.Tensor] | None = None, per_user: bool = False):
        """Evaluate the test split once (on ``state`` if given).

        Returns:
            ``(metrics, seconds)``; with ``per_user=True`` ``(metrics, seconds, rows)``, ``rows`` the
            per-user arrays of :meth:`FullRankingEvaluator.evaluate_embeddings`.
        """
        model = model.to(self.device)
        if state is not None:
            model.load_state_dict(state)
        t = time.perf_counter()
        out = self.evaluator.evaluate(model, data.to(self.device), split, "test", per_user=per_user)
        if per_user:
            return out[0], time.perf_counter() - t, out[1]
        return out, time.perf_counter() - t

    # ---------------------------------------------------------- checkpoints
    def _save(self, path: Path, fingerprint: str, model, opt, sched, gen, state: dict,
              meta: dict[str, Any] | None = None) -> None:
        atomic_save({
            **(meta or {}),
            "version": CKPT_VERSION,
            "fingerprint": fingerprint,
            "model": _cpu_state(model),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "rng_torch": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "rng_trainer": gen.get_state(),
            "state": state,
        }, path)

    def _load(self, path: Path, fingerprint: str, model, opt, sched, gen) -> dict:
        if not path.is_file():
            raise ResumeError(f"trainer.resume: no checkpoint at {path}")
        ckpt = load_checkpoint(path)
        if ckpt.get("version") != CKPT_VERSION:
            raise ResumeError(f"{path}: checkpoint version {ckpt.get('version')}, expected {CKPT_VERSION}")
        if fingerprint and ckpt.get("fingerprint") != fingerprint:
            raise ResumeError(
                f"{path}: written by a run with another configuration (fingerprint "
                f"{ckpt.get('fingerprint')} != {fingerprint}); resume with the same model, dataset, "
                "trainer and seed settings"
            )
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        torch.set_rng_state(ckpt["rng_torch"])
        if ckpt["rng_cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(ckpt["rng_cuda"])
        gen.set_state(ckpt["rng_trainer"])
        return ckpt["state"]


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """``torch.load`` of a checkpoint written by this project; a damaged file raises :class:`ResumeError`."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated, garbage or foreign pickles all land here
        raise ResumeError(
            f"{path} is damaged or not a checkpoint of this project ({type(e).__name__}); delete it to "
            "start the run again, or resume from another copy") from None
    if not isinstance(ckpt, dict):
        raise ResumeError(f"{path} is not a checkpoint of this project (it holds a {type(ckpt).__name__})")
    return ckpt


def _fresh_state() -> dict[str, Any]:
    return {"epoch": 0, "best_score": -math.inf, "best_epoch": 0, "best_valid": {}, "best_state": None,
            "bad_evals": 0, "history": [], "times": {"sample": [], "train": [], "eval": []}}


def _epoch_s(state: dict[str, Any]) -> float:
    t = state["times"]
    return (sum(t["train"]) + sum(t["sample"]) + sum(t["eval"])) / max(1, len(t["train"]))


def _cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _mean(xs: list[float]) -> float:
    return float(sum(xs) / len(xs)) if xs else 0.0


def _fmt_s(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


__all__ = ["Trainer", "FitResult", "ResumeError", "DivergenceError", "load_checkpoint", "resolve_device"]
