"""End-to-end: run(cfg), metrics.json contract, one test evaluation, resume after SIGKILL, CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mmgraph.evaluation.ranking import FullRankingEvaluator
from mmgraph.training import ResumeError, Trainer, run

REPO = Path(__file__).resolve().parents[2]


def test_run_writes_metrics_contract(cfg_tiny, tmp_path):
    cfg = cfg_tiny("model=lightgcn", "trainer.max_epochs=3", "trainer.patience=5")
    metrics = run(cfg, output_dir=tmp_path)
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["test"] == metrics["test"]
    for key in ("model", "dataset", "best_epoch", "valid", "test", "history", "timing", "peak_rss_mb"):
        assert key in on_disk, key
    assert on_disk["model"] == "LightGCN" and on_disk["dataset"] == "tiny"
    assert {"recall@20", "ndcg@10", "precision@5", "map@50", "hit@10"} <= set(on_disk["valid"])
    assert {"recall@20", "ndcg@10"} <= set(on_disk["test"])
    assert [h["epoch"] for h in on_disk["history"]] == [1, 2, 3]
    assert all({"epoch", "loss", "valid"} <= set(h) for h in on_disk["history"])
    assert {"sample_s", "train_epoch_s", "eval_s"} <= set(on_disk["timing"])
    assert on_disk["peak_rss_mb"] > 0
    best = max(on_disk["history"], key=lambda h: h["valid"]["recall@20"])
    assert on_disk["best_epoch"] == best["epoch"]
    assert on_disk["valid"] == best["valid"]
    assert (tmp_path / "best.pt").is_file() and (tmp_path / "last.pt").is_file()
    ckpt = torch.load(tmp_path / "best.pt", weights_only=True)
    assert ckpt["epoch"] == on_disk["best_epoch"]
    assert not list(tmp_path.glob("*.tmp")), "temporary files left behind"


def test_per_user_arrays_average_to_metrics_json(cfg_tiny, tmp_path):
    import numpy as np

    cfg = cfg_tiny("model=lightgcn", "trainer.max_epochs=3", "trainer.patience=5")
    metrics = run(cfg, output_dir=tmp_path)
    rows = np.load(tmp_path / "per_user.npz")
    assert {"users", "valid_users", "recall@20", "ndcg@20", "mrr@20", "avg_pop@20", "valid_recall@20"} <= set(rows)
    assert "coverage@20" not in rows and "gini@20" not in rows  # catalogue metrics have no per-user value
    for key in metrics["test"]:
        if key.startswith(("coverage", "gini")):
            continue
        assert rows[key].shape == rows["users"].shape
        assert float(rows[key].astype(np.float64).mean()) == pytest.approx(metrics["test"][key], rel=1e-6, abs=1e-7)
        # the best state's validation, evaluated again, is the one that was picked
        valid = rows[f"valid_{key}"].astype(np.float64).mean()
        assert float(valid) == pytest.approx(metrics["valid"][key], rel=1e-6, abs=1e-7), key


def test_test_split_evaluated_once_on_best_state(cfg_tiny, tmp_path, monkeypatch):
    stages = []
    original = FullRankingEvaluator.evaluate

    def spy(self, model, data, split, stage, per_user=False):
        stages.append(stage)
        return original(self, model, data, split, stage, per_user=per_user)

    monkeypatch.setattr(FullRankingEvaluator, "evaluate", spy)
    cfg = cfg_tiny("model=bpr", "trainer.max_epochs=4", "trainer.patience=10")
    metrics = run(cfg, output_dir=tmp_path)
    # 4 validations during training, the one test, then the per-user validation of the best state
    assert stages == ["valid"] * 4 + ["test", "valid"]
    # the test numbers are those of the best state, not of the last epoch
    ckpt = torch.load(tmp_path / "best.pt", weights_only=True)
    assert ckpt["epoch"] == metrics["best_epoch"]


def test_early_stopping_rule_is_mmrecs(cfg_tiny, tmp_path):
    # patience=0: stop at the first evaluation that does not strictly improve
    cfg = cfg_tiny("model=bpr", "trainer.max_epochs=50", "trainer.patience=0",
                   "trainer.optimizer.lr=0.0")  # lr 0: validation never improves after epoch 1
    metrics = run(cfg, output_dir=tmp_path)
    assert metrics["best_epoch"] == 1 and metrics["epochs_run"] == 2 and metrics["stopped_early"]


def test_monitor_must_be_validation():
    with pytest.raises(ValueError, match="validation"):
        Trainer(monitor="test/recall@20")
    with pytest.raises(ValueError, match="not computed"):
        Trainer(monitor="recall@7")


def test_resume_with_nothing_to_resume_starts_fresh(cfg_tiny, tmp_path, caplog):
    # a sweep resubmitted with trainer.resume=true: the jobs that never started must start, not abort
    cfg = cfg_tiny("model=bpr", "trainer.resume=true", "trainer.max_epochs=2")
    with caplog.at_level("WARNING"):
        metrics = run(cfg, output_dir=tmp_path / "fresh")
    assert "starting a fresh run" in caplog.text
    assert metrics["resumed_from"] is None and metrics["epochs_run"] == 2
    reference = run(cfg_tiny("model=bpr", "trainer.max_epochs=2"), output_dir=tmp_path / "plain")
    assert metrics["test"] == reference["test"]


def test_resume_refuses_other_config(cfg_tiny, tmp_path):
    run(cfg_tiny("model=bpr", "trainer.max_epochs=2"), output_dir=tmp_path)
    (tmp_path / "metrics.json").unlink()
    with pytest.raises(ResumeError, match="another configuration"):
        run(cfg_tiny("model=bpr", "trainer.max_epochs=2", "trainer.resume=true", "model.reg_weight=0.5"),
            output_dir=tmp_path)


def _train_cmd(run_dir: Path, cache: Path, *extra: str) -> list[str]:
    return [sys.executable, str(REPO / "experiments" / "train.py"), f"hydra.run.dir={run_dir}",
            f"cache_dir={cache}", "model=lightgcn", "trainer.max_epochs=7", "trainer.patience=100",
            "trainer.device=cpu", "dataset.num_users=600", "dataset.num_items=300",
            "dataset.num_interactions=12000", "trainer.train_batch_size=256", *extra]


def _env() -> dict:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"  # identical thread counts in all three processes
    return env


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path, cache_dir):
    full_dir, killed_dir = tmp_path / "full", tmp_path / "killed"
    subprocess.run(_train_cmd(full_dir, cache_dir), check=True, env=_env(), capture_output=True)
    reference = json.loads((full_dir / "metrics.json").read_text())

    proc = subprocess.Popen(_train_cmd(killed_dir, cache_dir), env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    killed_at = None
    while time.time() < deadline and proc.poll() is None:
        ckpt = killed_dir / "last.pt"
        if ckpt.is_file():
            epoch = torch.load(ckpt, weights_only=True)["state"]["epoch"]
            if epoch >= 3:
                proc.send_signal(signal.SIGKILL)
                killed_at = epoch
                break
        time.sleep(0.02)
    proc.wait()
    if killed_at is None:
        pytest.fail("the run finished before it could be killed; make it longer")
    assert not (killed_dir / "metrics.json").exists()
    subprocess.run(_train_cmd(killed_dir, cache_dir, "trainer.resume=true"), check=True, env=_env(),
                   capture_output=True)
    resumed = json.loads((killed_dir / "metrics.json").read_text())
    assert resumed["resumed_from"] is not None
    assert resumed["test"] == reference["test"]
    assert resumed["best_epoch"] == reference["best_epoch"]
    assert [h["valid"] for h in resumed["history"]] == [h["valid"] for h in reference["history"]]


def test_cli_multirun_bpr_lightgcn(tmp_path, cache_dir):
    cmd = [sys.executable, str(REPO / "experiments" / "train.py"), "-m", "model=bpr,lightgcn",
           "trainer=debug", "trainer.max_epochs=2", f"cache_dir={cache_dir}", "dataset.num_users=200",
           "dataset.num_items=100", "dataset.num_interactions=3000",
           f"hydra.sweep.dir={tmp_path}"]
    subprocess.run(cmd, check=True, capture_output=True, env=_env())
    found = sorted(p.parent.name for p in tmp_path.glob("*/metrics.json"))
    assert found == ["0_bpr-synthetic", "1_lightgcn-synthetic"]


def test_bad_dataset_fails_clearly_and_writes_nothing(tmp_path):
    from hydra import compose, initialize_config_dir

    from mmgraph.data import DatasetError

    folder = tmp_path / "data" / "broken"
    folder.mkdir(parents=True)
    (folder / "broken.inter").write_text("userID\titemID\tx_label\n0\t0\t0\n0\tx\t1\n")
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            "dataset=mmrec", "dataset.name=broken", f"data_root={tmp_path / 'data'}", "trainer=debug",
            f"cache_dir={tmp_path / 'cache'}"])
    out = tmp_path / "run"
    with pytest.raises(DatasetError, match=r"broken\.inter:3: column 'itemID'"):
        run(cfg, output_dir=out)
    assert not [p for p in out.rglob("*") if p.is_file()]
    assert not (tmp_path / "cache").exists()


def test_progress_lines_in_logs_without_a_bar(cfg_tiny, tmp_path, caplog):
    """Batch jobs have no progress bar: the trainer logs batch, loss, s/batch and the epoch ETA."""
    cfg = cfg_tiny("model=lightgcn", "trainer.max_epochs=1", "trainer.progress=false",
                   "trainer.train_batch_size=32", "trainer.log_every_s=1e-9")
    with caplog.at_level("INFO", logger="mmgraph.training.trainer"):
        run(cfg, output_dir=tmp_path / "on")
    lines = [r.getMessage() for r in caplog.records if "| batch " in r.getMessage()]
    assert len(lines) >= 2, lines
    assert lines[0].startswith("epoch 1 | batch 1/") and "s/batch" in lines[0] and "epoch ETA" in lines[0]
    total = int(lines[0].split("/")[1].split()[0])
    assert all(int(line.split("batch ")[1].split("/")[0]) < total for line in lines)  # never the last

    caplog.clear()
    cfg = cfg_tiny("model=lightgcn", "trainer.max_epochs=1", "trainer.progress=false",
                   "trainer.train_batch_size=32", "trainer.log_every_s=0")
    with caplog.at_level("INFO", logger="mmgraph.training.trainer"):
        run(cfg, output_dir=tmp_path / "off")
    assert not [r for r in caplog.records if "| batch " in r.getMessage()]
    with pytest.raises(ValueError, match="log_every_s"):
        Trainer(log_every_s=-1)


def test_fingerprint_ignores_output_only_trainer_keys(cfg_tiny):
    """Resuming with another progress setting is allowed; another learning rate is not."""
    from mmgraph.training.run import config_fingerprint

    base = config_fingerprint(cfg_tiny("model=lightgcn"))
    assert config_fingerprint(cfg_tiny("model=lightgcn", "trainer.log_every_s=5", "trainer.progress=false",
                                       "trainer.device=cpu", "trainer.resume=true")) == base
    assert config_fingerprint(cfg_tiny("model=lightgcn", "trainer.optimizer.lr=0.01")) != base


def test_resume_extends_or_ends_a_run_by_max_epochs(cfg_tiny, tmp_path):
    """The stopping rule is not in the fingerprint: a capped run extended to 6 epochs equals a 6-epoch
    run; resumed with a cap below its last epoch it trains nothing and is tested from its best state."""
    args = ("model=lightgcn", "trainer.patience=50")
    reference = run(cfg_tiny(*args, "trainer.max_epochs=6"), output_dir=tmp_path / "six")
    run(cfg_tiny(*args, "trainer.max_epochs=4"), output_dir=tmp_path / "ext")
    extended = run(cfg_tiny(*args, "trainer.max_epochs=6", "trainer.resume=true"), output_dir=tmp_path / "ext")
    assert extended["resumed_from"] is not None
    assert [h["valid"] for h in extended["history"]] == [h["valid"] for h in reference["history"]]
    assert extended["test"] == reference["test"] and extended["best_epoch"] == reference["best_epoch"]

    cut = run(cfg_tiny(*args, "trainer.max_epochs=3", "trainer.resume=true"), output_dir=tmp_path / "ext")
    assert len(cut["history"]) == 6 and cut["test"] == reference["test"]


def test_resuming_an_early_stopped_run_trains_nothing(cfg_tiny, tmp_path):
    args = ("model=lightgcn", "trainer.patience=0", "trainer.max_epochs=200")
    first = run(cfg_tiny(*args), output_dir=tmp_path)
    assert first["stopped_early"] and len(first["history"]) < 200
    again = run(cfg_tiny(*args, "trainer.resume=true"), output_dir=tmp_path)
    assert len(again["history"]) == len(first["history"]) and again["test"] == first["test"]
    more = run(cfg_tiny("model=lightgcn", "trainer.patience=2", "trainer.max_epochs=200", "trainer.resume=true"),
               output_dir=tmp_path)
    assert len(more["history"]) > len(first["history"])  # a larger patience goes on


def test_keys_added_later_at_their_old_behaviour_keep_the_fingerprint(cfg_tiny):
    """A run started before trainer.precision / model.fold_dct existed still resumes at their defaults."""
    from omegaconf import OmegaConf, open_dict

    from mmgraph.training.run import config_fingerprint

    for model, group, key, other in (("lightgcn", "trainer", "precision", "bf16"),
                                     ("lirdrec", "model", "fold_dct", False)):
        cfg = cfg_tiny(f"model={model}")
        old = OmegaConf.create(OmegaConf.to_container(cfg))
        with open_dict(old):
            del old[group][key]  # the config as written before the key existed
        assert config_fingerprint(cfg) == config_fingerprint(old)
        assert config_fingerprint(cfg_tiny(f"model={model}", f"{group}.{key}={other}")) != config_fingerprint(old)
