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


def test_damaged_graph_cache_is_rebuilt(tiny_data, tmp_path, caplog):
    from mmgraph.graph import GraphSpec, build_graph
    from mmgraph.typing import II

    data, _ = tiny_data
    spec = GraphSpec(item_knn_k=3, modality_weights={"image": 1.0})
    want = build_graph(data, spec, tmp_path)[II].edge_index
    (entry,) = (tmp_path / "graphs").glob("*.pt")
    raw = entry.read_bytes()
    for damaged in (raw[: len(raw) // 3], b"not a pickle"):
        entry.write_bytes(damaged)
        with caplog.at_level("WARNING"):
            got = build_graph(data, spec, tmp_path)[II].edge_index
        assert torch.equal(got, want) and "damaged" in caplog.text
        caplog.clear()
    # a valid file holding another graph under this name (e.g. a copied cache) is not trusted
    obj = torch.load(entry, weights_only=True)
    obj["key"] = "something else"
    torch.save(obj, entry)
    with caplog.at_level("WARNING"):
        assert torch.equal(build_graph(data, spec, tmp_path)[II].edge_index, want)
    assert "does not hold the expected graph" in caplog.text


def test_stale_temporary_files_are_cleaned_and_live_ones_kept(tmp_path):
    import os

    from mmgraph.utils.io import atomic_write_text

    proc = subprocess.Popen(["true"])
    proc.wait()
    stale = tmp_path / f".metrics.json.{proc.pid}.abc123.tmp"
    live = tmp_path / f".metrics.json.{os.getpid()}.def456.tmp"
    stale.write_text("half")
    live.write_text("writing")
    atomic_write_text(tmp_path / "metrics.json", "{}")
    assert not stale.exists() and live.exists()


def test_atomic_files_respect_the_umask(tmp_path):
    import os

    from mmgraph.utils.io import atomic_save, atomic_write_text

    old = os.umask(0o002)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
        atomic_save({"x": 1}, tmp_path / "b.pt")
    finally:
        os.umask(old)
    for name in ("a.json", "b.pt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o664, name


# 8. config types are checked before any data is read, naming the key
@pytest.mark.parametrize("override, key, expected", [
    ("trainer.max_epochs=abc", "trainer.max_epochs", "expected int"),
    ("trainer.max_epochs=2.5", "trainer.max_epochs", "expected int"),
    ("model.num_ui_layers=two", "model.num_ui_layers", "expected int"),
    ("model.dropedge_keep=[1]", "model.dropedge_keep", "expected float"),
    ("trainer.optimizer.lr=abc", "trainer.optimizer.lr", "expected float"),
])
def test_wrong_config_types_fail_before_loading(cfg_tiny, tmp_path, monkeypatch, override, key, expected):
    import importlib

    run_module = importlib.import_module("mmgraph.training.run")
    from mmgraph.training.config_check import ConfigError

    def never(*_a, **_k):
        raise AssertionError("data was loaded before the config was checked")

    monkeypatch.setattr(run_module, "load_dataset", never)
    with pytest.raises(ConfigError, match=rf"^{key}=.*{expected}"):
        run_module.run(cfg_tiny("model=crane", override), output_dir=tmp_path)


def test_every_shipped_config_passes_the_check():
    import glob
    import os

    from hydra import compose, initialize_config_dir

    from mmgraph.training.config_check import check_config
    from tests.conftest import CONF

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for f in sorted(glob.glob(str(CONF / "model" / "*.yaml"))):
            check_config(compose(config_name="config", overrides=[f"model={os.path.basename(f)[:-5]}"]))
        for f in sorted(glob.glob(str(CONF / "experiment" / "*.yaml"))):
            for ds in ("lfm2k", "tiktok"):
                check_config(compose(config_name="config", overrides=[f"experiment={os.path.basename(f)[:-5]}",
                                                                       f"dataset={ds}"]))


def test_cli_prints_user_errors_without_a_traceback(tmp_path):
    import sys

    from tests.training.test_train import REPO

    proc = subprocess.run([sys.executable, str(REPO / "experiments" / "train.py"), "dataset=synthetic",
                           "trainer.max_epochs=abc", f"hydra.run.dir={tmp_path}"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: trainer.max_epochs='abc': expected int")
    assert "Traceback" not in proc.stderr + proc.stdout


# 10. every reference experiment runs on an MMRec folder with other modality names
def test_reference_slot_rule_reproduces_the_known_mappings():
    from mmgraph.graph.build import reference_modality_weights, reference_slot_order

    assert reference_modality_weights(["text", "audio"], 0.1) == {"audio": 0.1, "text": 0.9}  # lfm2k
    assert reference_modality_weights(["image", "audio"], 0.1) == {"image": 0.1, "audio": 0.9}  # tiktok
    assert reference_modality_weights(["image", "text"], 0.1) == {"image": 0.1, "text": 0.9}  # Amazon
    assert reference_modality_weights(["genre", "text"], 0.1) == {"genre": 0.1, "text": 0.9}
    # the dataset's order does not matter (dataset=mmrec lists tiktok's modalities by name: audio, image)
    assert reference_modality_weights(["audio", "image"], 0.1) == {"image": 0.1, "audio": 0.9}
    assert reference_modality_weights(["text", "image"], 0.1) == {"image": 0.1, "text": 0.9}
    assert reference_slot_order(["audio", "image"]) == ["image", "audio"]
    assert reference_modality_weights(["a", "b", "c"], 0.1) == {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}
    assert reference_slot_order(["text", "audio"]) == ["audio", "text"]
    assert reference_slot_order(["image", "audio"]) == ["image", "audio"]


def _reference_experiments() -> list[str]:
    from tests.conftest import CONF

    return sorted(p.stem for p in (CONF / "experiment").glob("ref_*.yaml"))


@pytest.mark.parametrize("experiment", _reference_experiments())
def test_reference_experiments_run_on_other_modality_names(tmp_path, experiment):
    from hydra import compose, initialize_config_dir

    from tests.conftest import CONF

    root = tmp_path / "data"
    folder = _mmrec_folder(root)
    (folder / "image_feat.npy").rename(folder / "genre_feat.npy")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            f"experiment={experiment}", "dataset=mmrec", f"data_root={root}", "dataset.name=mini",
            "trainer.max_epochs=1", "trainer.device=cpu", "trainer.progress=false", f"cache_dir={root / 'cache'}",
            *(["model.user_knn_k=5"] if experiment in ("ref_dualgnn", "ref_dragon", "ref_cohesion") else [])])
    # (40 users: the reference's k=40 user neighbours are too many)
    metrics = run(cfg, output_dir=tmp_path / "run")
    assert metrics["epochs_run"] == 1 and metrics["dataset_summary"]
