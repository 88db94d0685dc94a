"""Experiment tracking: TensorBoard and MLflow records read back with their own readers."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from mmgraph.training import run
from mmgraph.training.loggers import LoggerError


def test_tensorboard_events_hold_epochs_and_test(cfg_tiny, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    metrics = run(cfg_tiny("model=lightgcn", "trainer.max_epochs=3", "logger=tensorboard"), output_dir=tmp_path)
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "valid/recall@20", "test/recall@20", "time/train_s"} <= tags
    curve = [(e.step, e.value) for e in acc.Scalars("valid/recall@20")]
    assert curve == [(h["epoch"], pytest.approx(h["valid"]["recall@20"], rel=1e-6)) for h in metrics["history"]]
    assert acc.Scalars("test/recall@20")[0].value == pytest.approx(metrics["test"]["recall@20"], rel=1e-6)


def test_mlflow_run_per_job_with_params_metrics_and_artifacts(cfg_tiny, tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    store = tmp_path / "mlruns"
    results = [run(cfg_tiny("model=bpr", "trainer.max_epochs=2", "logger=mlflow", f"logger.tracking_uri={store}",
                            f"seed={s}"), output_dir=tmp_path / f"job{s}") for s in (1, 2)]
    client = MlflowClient(tracking_uri=store.resolve().as_uri())
    exp = client.get_experiment_by_name("mmgraph")
    runs = client.search_runs([exp.experiment_id], order_by=["params.seed ASC"])
    assert [r.info.run_name for r in runs] == ["job1", "job2"] and all(r.info.status == "FINISHED" for r in runs)
    r, m = runs[0], results[0]
    assert r.data.params["model.embedding_dim"] == "64" and r.data.params["seed"] == "1"
    hist = client.get_metric_history(r.info.run_id, "valid/recall_at_20")
    assert [(h.step, h.value) for h in hist] == [(e["epoch"], pytest.approx(e["valid"]["recall@20"])) for e in m["history"]]
    assert r.data.metrics["test/recall_at_20"] == pytest.approx(m["test"]["recall@20"])
    assert "metrics.json" in {a.path for a in client.list_artifacts(r.info.run_id)}


def test_missing_backend_is_a_clear_error_before_data(cfg_tiny, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(LoggerError, match="pip install mlflow-skinny"):
        run(cfg_tiny("logger=mlflow"), output_dir=tmp_path)
    assert not (tmp_path / "metrics.json").exists()


def test_mlflow_sqlite_store(cfg_tiny, tmp_path):
    pytest.importorskip("mlflow")
    pytest.importorskip("sqlalchemy")
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    before = set((Path.cwd() / "mlruns").rglob("*"))
    metrics = run(cfg_tiny("model=bpr", "trainer.max_epochs=2", "logger=mlflow", f"logger.tracking_uri={uri}"),
                  output_dir=tmp_path / "job")
    client = MlflowClient(tracking_uri=uri)
    (r,) = client.search_runs([client.get_experiment_by_name("mmgraph").experiment_id])
    assert r.data.metrics["test/recall_at_20"] == pytest.approx(metrics["test"]["recall@20"])
    # artifacts beside the database, not in ./mlruns of the working directory
    assert list((tmp_path / "mlartifacts").rglob("metrics.json"))
    assert set((Path.cwd() / "mlruns").rglob("*")) == before
