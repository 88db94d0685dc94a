"""experiments/summarize.py on fake run folders: swept-parameter detection, CSV, Markdown, plots."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "summarize.py"


@pytest.fixture(scope="module")
def summarize():
    spec = importlib.util.spec_from_file_location("summarize_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_run(folder: Path, *, dataset="lfm2k", model="ULF", k_user=30, beta=0.7, valid=0.3, test=0.28,
             best_epoch=10, overrides=None) -> None:
    folder.mkdir(parents=True)
    config = {
        "seed": 999, "data_root": "/data", "cache_dir": str(folder),
        "dataset": {"name": dataset, "folder": dataset, "modalities": ["text", "audio"]},
        "model": {"_target_": f"mmgraph.models.{model.lower()}.{model}", "k_item": 20, "k_user": k_user,
                  "beta": beta, "modalities": None},
        "trainer": {"max_epochs": 1000, "progress": False, "optimizer": {"lr": 0.001}},
    }
    metrics = {
        "model": model, "dataset": dataset, "monitor": "recall@20", "best_epoch": best_epoch, "epochs_run": 30,
        "valid": {"recall@10": valid / 2, "recall@20": valid, "ndcg@10": valid / 4, "ndcg@20": valid / 3},
        "test": {"recall@10": test / 2, "recall@20": test, "ndcg@10": test / 4, "ndcg@20": test / 3},
        "history": [], "timing": {"total_s": 12.5}, "peak_rss_mb": 512.0, "config": config,
    }
    (folder / "metrics.json").write_text(json.dumps(metrics))
    if overrides is not None:
        (folder / ".hydra").mkdir()
        (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))


def grid(root: Path) -> dict[tuple[int, float], float]:
    vals = {}
    n = 0
    for k in (10, 30, 50):
        for beta in (0.3, 0.7, 0.9):
            v = 0.25 + k / 1000 + beta / 100
            vals[(k, beta)] = v
            fake_run(root / f"{n}_ulf-lfm2k", k_user=k, beta=beta, valid=v, test=v - 0.01, best_epoch=n + 1,
                     overrides=["model=ulf", f"model.k_user={k}", f"model.beta={beta}", "dataset=lfm2k"])
            n += 1
    (root / "9_ulf-lfm2k").mkdir()  # an unfinished run: no metrics.json, ignored
    return vals


def test_grid_sweep_csv_markdown_and_plot(summarize, tmp_path):
    vals = grid(tmp_path / "sweep")
    res = summarize.summarize(tmp_path / "sweep", out=tmp_path / "out")
    assert res["runs"] == 9
    assert res["params"] == ["model.k_user", "model.beta"]  # override order; seed, cache_dir... are not swept
    with (tmp_path / "out" / "summary.csv").open() as f:
        table = list(csv.DictReader(f))
    assert len(table) == 9
    assert [r["run"] for r in table] == [f"{i}_ulf-lfm2k" for i in range(9)]
    for r in table:
        v = vals[(int(r["model.k_user"]), float(r["model.beta"]))]
        assert float(r["valid/recall@20"]) == pytest.approx(v)
        assert float(r["test/recall@20"]) == pytest.approx(v - 0.01)
        assert float(r["valid/ndcg@10"]) == pytest.approx(v / 4)
        assert r["model"] == "ULF" and r["monitor"] == "recall@20" and r["epochs_run"] == "30"
    md = (tmp_path / "out" / "summary.md").read_text().splitlines()
    assert md[0] == ("| run | model.k_user | model.beta | best epoch | valid/recall@10 | valid/recall@20 | "
                     "valid/ndcg@10 | valid/ndcg@20 | test/recall@10 | test/recall@20 | test/ndcg@10 | "
                     "test/ndcg@20 |")
    assert len(md) == 2 + 9
    best = max(vals, key=vals.get)
    best_row = next(line for line in md if f"| {best[0]} | {best[1]} |" in line)
    assert f"**{vals[best]:.4f}**" in best_row and sum("**" in line for line in md) == 1
    assert "| 4_ulf-lfm2k | 30 | 0.7 | 5 | " in md[2 + 4]
    png = tmp_path / "out" / "sweep_recall_20.png"
    assert res["plots"] == [png] and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_datasets_and_models_are_one_parameter_each_and_no_overrides_needed(summarize, tmp_path):
    root = tmp_path / "runs"
    fake_run(root / "a", dataset="lfm2k", model="ULF", valid=0.3)
    fake_run(root / "b", dataset="tiktok", model="ULF", valid=0.1)
    fake_run(root / "c", dataset="tiktok", model="LATTICE", valid=0.12)
    res = summarize.summarize(root, plots=True)
    assert res["params"] == ["dataset", "model"]  # not dataset.name / dataset.folder / model._target_
    md = (root / "summary.md").read_text()
    assert "| a | lfm2k | ULF |" in md and "| c | tiktok | LATTICE |" in md
    assert (root / "sweep_recall_20.png").is_file()


def test_cli_no_plots_without_matplotlib_and_clear_error_with_plots(summarize, tmp_path, monkeypatch, capsys):
    grid(tmp_path / "sweep")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    assert summarize.main([str(tmp_path / "sweep"), "--no-plots", "--metric", "ndcg@20"]) == 0
    out = capsys.readouterr()
    assert "| run | model.k_user | model.beta |" in out.out and "wrote" in out.err
    assert not list((tmp_path / "sweep").glob("*.png"))
    assert summarize.main([str(tmp_path / "sweep")]) == 1
    err = capsys.readouterr().err
    assert "plots need matplotlib" in err and "--no-plots" in err


def test_empty_folder_is_an_error(summarize, tmp_path, capsys):
    assert summarize.main([str(tmp_path)]) == 1
    assert "no metrics.json" in capsys.readouterr().err
