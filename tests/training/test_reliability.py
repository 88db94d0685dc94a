"""Failure paths that used to lose or corrupt results silently (issue: nothing lost, nothing silently wrong)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mmgraph.evaluation.ranking import FullRankingEvaluator, NonFiniteScoresError
from mmgraph.training import ResumeError, run
from mmgraph.training.trainer import DivergenceError, load_checkpoint
from tests.training.test_train import _env, _train_cmd


def _mmrec_folder(root: Path, name: str = "mini", seed: int = 0) -> Path:
    """A small MMRec folder: 40 users x 30 items, every user with train, valid and test rows."""
    rng = np.random.default_rng(seed)
    folder = root / name
    folder.mkdir(parents=True)
    rows = []
    for u in range(40):
        items = rng.choice(30, size=8, replace=False)
        labels = [0] * 6 + [1, 2]
        rows += [f"{u}\t{i}\t1\t{lab}" for i, lab in zip(items, labels)]
    (folder / f"{name}.inter").write_text("userID\titemID\trating\tx_label\n" + "\n".join(rows) + "\n")
    np.save(folder / "image_feat.npy", rng.normal(size=(30, 8)).astype(np.float32))
    np.save(folder / "text_feat.npy", rng.normal(size=(30, 6)).astype(np.float32))
    return folder


def _cfg_real(cfg_tiny, root: Path, *extra: str):
    from hydra import compose, initialize_config_dir

    from tests.conftest import CONF

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=[
            "dataset=mmrec", f"data_root={root}", "dataset.name=mini", "dataset.folder=mini", "trainer=debug",
            f"cache_dir={root / 'cache'}", "model=bpr", *extra])


# 1. Ctrl-C mid-epoch, then resume, is the uninterrupted run
def test_sigint_then_resume_matches_uninterrupted_run(tmp_path, cache_dir):
    full_dir, stopped_dir = tmp_path / "full", tmp_path / "interrupted"
    subprocess.run(_train_cmd(full_dir, cache_dir), check=True, env=_env(), capture_output=True)
    reference = json.loads((full_dir / "metrics.json").read_text())
    proc = subprocess.Popen(_train_cmd(stopped_dir, cache_dir), env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, sent = time.time() + 120, False
    while time.time() < deadline and proc.poll() is None:
        ckpt = stopped_dir / "last.pt"
        if ckpt.is_file() and torch.load(ckpt, weights_only=True)["state"]["epoch"] >= 3:
            time.sleep(0.05)  # into the next epoch
            proc.send_signal(signal.SIGINT)
            sent = True
            break
        time.sleep(0.02)
    proc.wait()
    if not sent:
        pytest.fail("the run finished before it could be interrupted; make it longer")
    assert not (stopped_dir / "metrics.json").exists()
    ckpt = load_checkpoint(stopped_dir / "last.pt")
    # last.pt is an epoch boundary of the uninterrupted run: its history is a prefix of the reference's
    assert [h["valid"] for h in ckpt["state"]["history"]] == \
        [h["valid"] for h in reference["history"][: ckpt["state"]["epoch"]]]
    subprocess.run(_train_cmd(stopped_dir, cache_dir, "trainer.resume=true"), check=True, env=_env(),
                   capture_output=True)
    resumed = json.loads((stopped_dir / "metrics.json").read_text())
    assert resumed["test"] == reference["test"]
    assert [h["valid"] for h in resumed["history"]] == [h["valid"] for h in reference["history"]]


# 2. resume refuses changed data, and says what changed
def test_resume_refuses_changed_interactions(cfg_tiny, tmp_path):
    root = tmp_path / "data"
    folder = _mmrec_folder(root)
    out = tmp_path / "run"
    run(_cfg_real(cfg_tiny, root, "trainer.max_epochs=2"), output_dir=out)
    (out / "metrics.json").unlink()
    inter = folder / "mini.inter"
    lines = inter.read_text().splitlines()
    u, i, r, _ = lines[1].split("\t")
    lines[1] = "\t".join([u, i, r, "2"])  # one train row becomes a test row
    inter.write_text("\n".join(lines) + "\n")
    with pytest.raises(ResumeError, match=r"data changed.*test interactions.*train interactions"):
        run(_cfg_real(cfg_tiny, root, "trainer.max_epochs=3", "trainer.resume=true"), output_dir=out)


def test_resume_refuses_changed_sizes_and_features(cfg_tiny, tmp_path):
    root = tmp_path / "data"
    folder = _mmrec_folder(root)
    out = tmp_path / "run"
    run(_cfg_real(cfg_tiny, root, "trainer.max_epochs=2"), output_dir=out)
    (out / "metrics.json").unlink()
    np.save(folder / "text_feat.npy", np.ones((30, 6), np.float32))
    with pytest.raises(ResumeError, match=r"data changed since this checkpoint was written \(text features\)"):
        run(_cfg_real(cfg_tiny, root, "trainer.max_epochs=3", "trainer.resume=true"), output_dir=out)
    with open(folder / "mini.inter", "a") as f:
        f.write("40\t0\t1\t0\n40\t1\t1\t1\n40\t2\t1\t2\n")  # one more user
    with pytest.raises(ResumeError, match="40 users x 30 items -> 41 users x 30 items"):
        run(_cfg_real(cfg_tiny, root, "trainer.max_epochs=3", "trainer.resume=true"), output_dir=out)


# 3. the default (timestamped) output folder: resume continues in the interrupted run's folder
def test_resume_beside_continues_in_the_interrupted_folder(cfg_tiny, tmp_path):
    first, second, third = tmp_path / "2026-01-01_00-00-00", tmp_path / "2026-01-01_01-00-00", tmp_path / "z"
    run(cfg_tiny("model=bpr", "trainer.max_epochs=2", "trainer.patience=100"), output_dir=first)
    (first / "metrics.json").unlink()  # as if killed after epoch 2
    metrics = run(cfg_tiny("model=bpr", "trainer.max_epochs=3", "trainer.patience=100", "trainer.resume=true"),
                  output_dir=second)
    assert Path(metrics["resumed_from"]) == first / "last.pt"
    assert (first / "metrics.json").is_file() and not (second / "metrics.json").exists()
    assert not (second / "last.pt").exists()
    assert load_checkpoint(first / "last.pt")["state"]["epoch"] == 3
    # the next resume starts from the newest state, not the old one, and trains nothing twice
    (first / "metrics.json").unlink()
    again = run(cfg_tiny("model=bpr", "trainer.max_epochs=4", "trainer.patience=100", "trainer.resume=true"),
                output_dir=third)
    assert [h["epoch"] for h in again["history"]] == [1, 2, 3, 4]
    reference = run(cfg_tiny("model=bpr", "trainer.max_epochs=4", "trainer.patience=100"), output_dir=tmp_path / "ref")
    assert again["test"] == reference["test"]


# 4. resuming a finished run keeps its measurements
def test_resuming_a_finished_run_keeps_timing_and_rss(cfg_tiny, tmp_path):
    first = run(cfg_tiny("model=bpr", "trainer.max_epochs=2"), output_dir=tmp_path)
    again = run(cfg_tiny("model=bpr", "trainer.max_epochs=2", "trainer.resume=true"), output_dir=tmp_path)
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["timing"] == first["timing"] and on_disk["peak_rss_mb"] == first["peak_rss_mb"]
    assert again["test"] == first["test"]


# 5. divergence is an error, not a plausible result
@pytest.mark.parametrize("model", ["bpr", "lightgcn", "vbpr", "freedom"])
def test_exploding_loss_stops_with_a_clear_error(cfg_tiny, tmp_path, model):
    with pytest.raises(DivergenceError, match="diverged|loss is"):
        run(cfg_tiny(f"model={model}", "trainer.max_epochs=10", "trainer.patience=100", "trainer.optimizer.lr=1e6"), output_dir=tmp_path)
    assert not (tmp_path / "metrics.json").exists()


def test_divergence_check_can_be_turned_off(cfg_tiny, tmp_path):
    from mmgraph.training import Trainer

    with pytest.raises(ValueError, match="must be > 1"):
        Trainer(divergence_factor=0.5)
    trainer = Trainer(divergence_factor=None)
    assert trainer.divergence_factor is None


def test_evaluator_refuses_non_finite_scores(tiny_data):
    _, split = tiny_data
    ev = FullRankingEvaluator(ks=[20], metrics=["recall"])
    users = torch.randn(split.num_users, 4)
    items = torch.randn(split.num_items, 4)
    ev.evaluate_embeddings(None, users, items, split, "valid")  # finite: fine
    users[3] = float("nan")
    with pytest.raises(NonFiniteScoresError, match="MyModel produced non-finite scores .* valid split"):
        ev.evaluate_embeddings(None, users, items, split, "valid", name="MyModel")
    users = torch.full((split.num_users, 4), float("nan"))  # all NaN used to score recall@20 = 0.231
    with pytest.raises(NonFiniteScoresError):
        ev.evaluate_embeddings(None, users, items, split, "test")
    big = torch.full((split.num_users, 4), 1e30)
    with pytest.raises(NonFiniteScoresError):  # overflows to inf in the product
        ev.evaluate_embeddings(None, big, torch.full((split.num_items, 4), 1e30), split, "test")


# 6. damaged checkpoints and cache files
@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_damaged_last_pt_is_named(cfg_tiny, tmp_path, damage):
    run(cfg_tiny("model=bpr", "trainer.max_epochs=2"), output_dir=tmp_path)
    (tmp_path / "metrics.json").unlink()
    last = tmp_path / "last.pt"
    raw = last.read_bytes()
    last.write_bytes({"truncate": raw[: len(raw) // 2], "garbage": b"\x80\x04garbage" * 50, "empty": b""}[damage])
    with pytest.raises(ResumeError, match=r"last.pt is damaged"):
        load_checkpoint(last)
    with pytest.raises(ResumeError, match=r"last.pt is damaged"):
        run(cfg_tiny("model=bpr", "trainer.max_epochs=3", "trainer.resume=true"), output_dir=tmp_path)
