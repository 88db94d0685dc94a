"""Experiment tracking: the Hydra group ``logger`` (``none``, ``tensorboard``, ``mlflow``).

A logger sees three moments of a run (:func:`mmgraph.training.run.run` calls them):

* ``start(params, out)``: the flattened resolved config (``model.k_user``: 30, ...) and the run folder;
* ``log_epoch(record)``: after each validation, the epoch's history record (loss terms under
  ``train/``, validation metrics under ``valid/``, seconds under ``time/``), step = epoch;
* ``finish(metrics, out)``: the test metrics (``test/``), then the artefacts (``metrics.json``, the
  config) where the backend keeps files.

Every backend is optional: selecting one that is not installed stops the run before any data is
read, with the ``pip install`` line to run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class LoggerError(ValueError):
    """A tracking backend is selected but not installed, or misconfigured."""


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        out.update(_flatten(v, key) if isinstance(v, dict) and v else {key: v})
    return out


def epoch_scalars(record: dict[str, Any]) -> dict[str, float]:
    """``{'train/loss': …, 'train/bpr': …, 'valid/recall@20': …, 'time/train_s': …}`` of a history record."""
    out = {f"train/{k}": float(v) for k, v in (record.get("losses") or {"loss": record.get("loss")}).items()
           if isinstance(v, (int, float))}
    out.update({f"valid/{k}": float(v) for k, v in (record.get("valid") or {}).items()})
    for k in ("train_s", "eval_s"):
        if isinstance(record.get(k), (int, float)):
            out[f"time/{k}"] = float(record[k])
    return out


class NoLogger:
    """Tracking off (the default): ``metrics.json`` and ``train.log`` only."""

    def start(self, params: dict[str, Any], out: Path) -> None:
        pass

    def log_epoch(self, record: dict[str, Any]) -> None:
        pass

    def finish(self, metrics: dict[str, Any], out: Path) -> None:
        pass


class TensorBoardLogger(NoLogger):
    """TensorBoard event files in ``<run folder>/<subdir>`` (``pip install tensorboard``).

    Args:
        subdir: folder of the event files inside the run folder. (default: ``'tensorboard'``)
    """

    def __init__(self, subdir: str = "tensorboard") -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter  # noqa: F401
        except ImportError as e:
            raise LoggerError("logger=tensorboard needs TensorBoard: pip install tensorboard "
                              "(or pip install -e '.[tensorboard]'); logger=none turns tracking off") from e
        self.subdir = subdir
        self.writer = None

    def start(self, params: dict[str, Any], out: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(Path(out) / self.subdir))
        self.writer.add_text("config", "\n".join(f"    {k}: {v}" for k, v in params.items()), 0)

    def log_epoch(self, record: dict[str, Any]) -> None:
        for k, v in epoch_scalars(record).items():
            self.writer.add_scalar(k, v, int(record["epoch"]))
        self.writer.flush()

    def finish(self, metrics: dict[str, Any], out: Path) -> None:
        step = int(metrics.get("best_epoch") or 0)
        for k, v in (metrics.get("test") or {}).items():
            self.writer.add_scalar(f"test/{k}", float(v), step)
        self.writer.close()


class MLflowLogger(NoLogger):
    """One MLflow run per job (``pip install mlflow-skinny``; ``sqlite:///`` stores need ``sqlalchemy``).

    Args:
        tracking_uri: the store: a folder (default ``mlruns`` in the working directory), ``file:…``,
            ``sqlite:///mlflow.db`` or an ``http(s)://`` server.
        experiment_name: MLflow experiment (default: ``mmgraph``).
        run_name: MLflow run name (default: the run folder's name).
        artifact_location: where a new experiment stores artifacts (default: MLflow's, except for a
            ``sqlite:///`` store, whose default would be ``./mlruns`` of whatever the working
            directory is: there, ``mlartifacts/`` beside the database file).
    """

    def __init__(self, tracking_uri: str = "mlruns", experiment_name: str = "mmgraph",
                 run_name: str | None = None, artifact_location: str | None = None) -> None:
        try:
            import mlflow  # noqa: F401
        except ImportError as e:
            raise LoggerError("logger=mlflow needs MLflow: pip install mlflow-skinny (or pip install -e '.[mlflow]'); "
                              "logger=none turns tracking off") from e
        if tracking_uri.startswith("sqlite:"):
            try:
                import sqlalchemy  # noqa: F401
            except ImportError as e:
                raise LoggerError(f"logger.tracking_uri={tracking_uri} needs SQLAlchemy: pip install sqlalchemy "
                                  "alembic (or use a folder store, the default)") from e
        self.tracking_uri, self.experiment_name, self.run_name = tracking_uri, experiment_name, run_name
        self.artifact_location = artifact_location
        self.client = self.run_id = None

    def _artifact_location(self) -> str | None:
        if self.artifact_location is not None:
            return self.artifact_location
        prefix = "sqlite:///"
        if self.tracking_uri.startswith(prefix) and self.tracking_uri[len(prefix):] not in ("", ":memory:"):
            db = Path(self.tracking_uri[len(prefix):]).expanduser().resolve()
            return (db.parent / "mlartifacts").as_uri()
        return None

    def start(self, params: dict[str, Any], out: Path) -> None:
        import os

        from mlflow.tracking import MlflowClient

        uri = self.tracking_uri
        if "://" not in uri and not uri.startswith(("file:", "sqlite:")):
            uri = Path(uri).expanduser().resolve().as_uri()
        if uri.startswith("file:"):  # MLflow >= 3.x refuses folder stores unless asked; the user's value wins
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=uri)
        exp = self.client.get_experiment_by_name(self.experiment_name)
        exp_id = exp.experiment_id if exp else self.client.create_experiment(
            self.experiment_name, artifact_location=self._artifact_location())
        run = self.client.create_run(exp_id, run_name=self.run_name or Path(out).name)
        self.run_id = run.info.run_id
        from mlflow.entities import Param

        items = [Param(k[:250], str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def log_epoch(self, record: dict[str, Any]) -> None:
        import time

        from mlflow.entities import Metric

        now, step = int(time.time() * 1000), int(record["epoch"])
        metrics = [Metric(k.replace("@", "_at_"), v, now, step) for k, v in epoch_scalars(record).items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def finish(self, metrics: dict[str, Any], out: Path) -> None:
        import time

        from mlflow.entities import Metric

        now, step = int(time.time() * 1000), int(metrics.get("best_epoch") or 0)
        self.client.log_batch(self.run_id, metrics=[Metric(f"test/{k}".replace("@", "_at_"), float(v), now, step)
                                                    for k, v in (metrics.get("test") or {}).items()])
        for name in ("metrics.json", ".hydra/config.yaml"):
            path = Path(out) / name
            if path.is_file():
                self.client.log_artifact(self.run_id, str(path))
        self.client.set_terminated(self.run_id)


def flat_params(cfg_container: dict[str, Any]) -> dict[str, Any]:
    """The resolved config as ``{dotted.key: value}`` (lists as JSON), without Hydra's own keys."""
    return {k: (json.dumps(v) if isinstance(v, (list, dict)) else v)
            for k, v in _flatten(cfg_container).items() if not k.startswith("hydra.")}
