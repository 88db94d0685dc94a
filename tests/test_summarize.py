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
        assert float(r["valid_recall@20_mean"]) == pytest.approx(v)
        assert float(r["test_recall@20_mean"]) == pytest.approx(v - 0.01)
        assert float(r["valid_ndcg@10_mean"]) == pytest.approx(v / 4)
        assert r["valid_recall@20_std"] == "" and r["n_seeds"] == "1" and r["seeds"] == "999"
        assert r["model"] == "ULF" and r["monitor"] == "recall@20" and float(r["epochs_run"]) == 30
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


# ------------------------------------------------------------------------------------------------
# results pages (--page)


def page_run(folder: Path, *, model="LightGCN", dataset="lfm2k", split="label", curve=(0.1, 0.2, 0.3, 0.25),
             timing=None, overrides=("model=lightgcn", "dataset=lfm2k", "trainer.progress=false"),
             device="cpu") -> dict:
    """A finished run with a per-epoch validation history (as mmgraph.training.run writes it)."""
    folder.mkdir(parents=True)
    history = [{"epoch": e + 1, "loss": 0.5, "valid": {"recall@10": v / 2, "recall@20": v, "ndcg@10": v / 4,
                                                       "ndcg@20": v / 3}, "train_s": 1.0, "eval_s": 0.5}
               for e, v in enumerate(curve)]
    best = max(history, key=lambda h: h["valid"]["recall@20"])
    metrics = {
        "model": model, "dataset": dataset, "seed": 999, "monitor": "recall@20", "best_epoch": best["epoch"],
        "epochs_run": len(curve), "stopped_early": True, "valid": best["valid"],
        "test": {k: v * 0.9 for k, v in best["valid"].items()}, "history": history,
        "timing": timing or {"sample_s": 0.1, "train_epoch_s": 1.0, "eval_s": 0.5, "test_s": 0.2, "total_s": 90.0},
        "peak_rss_mb": 400.0, "num_parameters": 1234, "device": device,
        "dataset_summary": {"num_users": 10, "num_items": 8, "rows": {"train": 50, "valid": 5, "test": 6},
                            "modalities": {"text": 384}},
        "config": {"seed": 999, "dataset": {"name": dataset, "split": split, "modalities": ["text"]},
                   "model": {"_target_": f"mmgraph.models.x.{model}", "embedding_dim": 64, "dropout": None},
                   "trainer": {"max_epochs": 1000, "patience": 20, "train_batch_size": 2048,
                               "optimizer": {"_target_": "torch.optim.Adam", "lr": 0.001}}},
    }
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / ".hydra").mkdir()
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    return metrics


def test_results_page_tables_curves_and_command(summarize, tmp_path, capsys):
    runs = tmp_path / "runs"
    page_run(runs / "lgn", curve=(0.1, 0.3, 0.2))
    page_run(runs / "sweep" / "0_freedom", model="FREEDOM", curve=(0.2, 0.35, 0.4, 0.38),
             overrides=("experiment=ref_freedom", "dataset=lfm2k", "trainer.device=cpu"))
    page_run(runs / "cold_bpr", model="BPR", split="cold", curve=(0.05, 0.01))
    page_run(runs / "ep1_probe", model="ULF", curve=(0.9,))                  # excluded by --exclude
    page_run(runs / "tiktok_lgn", dataset="tiktok", curve=(0.5,))             # another dataset: not on the page
    (runs / "unfinished").mkdir()
    out = tmp_path / "docs"
    argv = ["--page", "lfm2k", str(runs / "lgn"), str(runs), "--exclude", "ep1_*", "--out", str(out)]
    assert summarize.main(argv) == 0
    assert "3 runs on lfm2k" in capsys.readouterr().err
    page = (out / "lfm2k.md").read_text()
    lines = page.splitlines()
    assert lines[0] == "# Results on lfm2k"
    assert f"python experiments/summarize.py --page lfm2k {runs / 'lgn'} {runs} --exclude 'ep1_*' --out {out}" in page
    assert "10 users, 8 items, 61 interactions (train 50 / valid 5 / test 6); modalities: text 384-d" in page
    label = page.index("## Standard split"), page.index("## Item cold start (split=cold)")
    table = [ln for ln in page[label[0]:label[1]].splitlines() if ln.startswith("| ")]
    assert table[0] == ("| model | settings | seeds | valid R@20 | valid N@20 | test R@10 | test R@20 | test N@10 | "
                        "test N@20 | p (test R@20) | best epoch | epochs | s/epoch | device |")
    # sorted by valid recall@20; one seed each: no std; no per_user.npz: no p-value
    assert table[1].startswith("| FREEDOM | `experiment=ref_freedom dataset=lfm2k` | 1 | 0.4000 | 0.1333 | 0.1800 | "
                               "**0.3600** |")
    assert table[2].startswith("| LightGCN | `model=lightgcn dataset=lfm2k` | 1 | 0.3000 | 0.1000 | 0.1350 | 0.2700 |")
    # best epoch, epochs run, seconds per epoch = train 1.0 + sampling 0.1 + validation 0.5 (every epoch)
    assert table[1].endswith("| best | 3 | 4 | 1.60 | cpu |") and table[2].endswith("|  | 2 | 3 | 1.60 | cpu |")
    assert "no per_user" not in page and str(runs) not in page.split("```")[2]  # no absolute paths below the command
    cold = [ln for ln in page[label[1]:].splitlines() if ln.startswith("| BPR")]
    assert len(cold) == 1 and "| 1 | 2 |" in cold[0]
    assert "ep1_probe" not in page and "tiktok_lgn" not in page and "trainer.progress" not in page
    assert "![valid recall@20 per epoch](lfm2k_curves.png)" in page
    assert "- **lgn** (LightGCN); model: embedding_dim=64, dropout=null; trainer: lr=0.001, batch=2048, " \
           "max_epochs=1000, patience=20; data: split=label, modalities=[\"text\"]; seed 999; 1,234 parameters; " \
           "total 1.5 min; peak RSS 400 MB" in page
    assert (out / "lfm2k_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_curves_one_panel_per_split_one_line_per_run(summarize, tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    page_run(tmp_path / "a", curve=(0.1, 0.3, 0.2))
    page_run(tmp_path / "b", model="FREEDOM", curve=(0.2, 0.25))
    page_run(tmp_path / "c", model="BPR", split="cold", curve=(0.05,))
    runs = summarize.collect_runs([tmp_path])
    captured = {}
    monkeypatch.setattr(plt, "close", lambda fig: captured.setdefault("fig", fig))
    summarize.plot_curves(runs, "recall@20", tmp_path / "curves.png", title="lfm2k")
    axes = captured["fig"].axes
    assert [ax.get_title() for ax in axes] == ["lfm2k (split=label)", "lfm2k (split=cold)"]
    curves = {ln.get_label(): (list(ln.get_xdata()), list(ln.get_ydata())) for ln in axes[0].get_lines()
              if not ln.get_label().startswith("_")}  # the best-epoch markers have no legend label
    assert curves == {"LightGCN (a)": ([1, 2, 3], [0.1, 0.3, 0.2]), "FREEDOM (b)": ([1, 2], [0.2, 0.25])}
    best_markers = [(list(ln.get_xdata()), list(ln.get_ydata())) for ln in axes[0].get_lines() if ln.get_marker() == "o"]
    assert sorted(best_markers) == [([2], [0.25]), ([2], [0.3])]


def test_seconds_per_epoch_amortises_validation(summarize):
    m = {"epochs_run": 10, "history": [{}] * 5, "timing": {"train_epoch_s": 2.0, "sample_s": 0.5, "eval_s": 1.0}}
    assert summarize.seconds_per_epoch(m) == pytest.approx(3.0)  # eval every 2nd epoch
    assert summarize.seconds_per_epoch({"timing": {}}) is None


def test_page_errors(summarize, tmp_path, capsys):
    page_run(tmp_path / "runs" / "a", dataset="tiktok")
    assert summarize.main(["--page", "lfm2k", str(tmp_path / "runs"), "--out", str(tmp_path / "o")]) == 1
    assert "no finished run (metrics.json) on dataset 'lfm2k'" in capsys.readouterr().err
    assert summarize.main([str(tmp_path / "runs"), str(tmp_path)]) == 1
    assert "several folders only with --page" in capsys.readouterr().err
    assert summarize.main(["--page", "tiktok", str(tmp_path / "nope")]) == 1
    assert "is not a folder" in capsys.readouterr().err


def test_page_without_matplotlib(summarize, tmp_path, monkeypatch):
    page_run(tmp_path / "runs" / "a")
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert summarize.main(["--page", "lfm2k", str(tmp_path / "runs"), "--out", str(tmp_path / "o"), "--no-plots"]) == 0
    page = (tmp_path / "o" / "lfm2k.md").read_text()
    assert "## Training curves" not in page and not list((tmp_path / "o").glob("*.png"))


# ------------------------------------------------------------------------------------------------
# seeds, significance, committed records


def seeded_runs(root: Path, rng_seed: int = 0):
    """Two models x 3 seeds on 200 users, with per_user.npz; model B slightly and consistently better."""
    import numpy as np

    rng = np.random.default_rng(rng_seed)
    users = np.arange(200)
    base = rng.random(200)
    arrays = {}
    for model, shift, name in (("LightGCN", 0.0, "lightgcn"), ("CRANE", 0.03, "crane")):
        for seed in (1, 2, 999):
            per_user = np.clip(base + shift + rng.normal(0, 0.05, 200), 0, 1)
            folder = root / f"{name}_s{seed}"
            m = page_run(folder, model=model, curve=(0.1, float(per_user.mean())),
                         overrides=(f"experiment=ref_{name}", "dataset=lfm2k", f"seed={seed}"))
            m["seed"] = seed
            m["config"]["seed"] = seed
            m["test"]["recall@20"] = float(per_user.mean())
            (folder / "metrics.json").write_text(json.dumps(m))
            np.savez(folder / "per_user.npz", users=users, **{"recall@20": per_user.astype(np.float32)},
                     valid_users=users, **{"valid_recall@20": per_user.astype(np.float32)})
            arrays[(model, seed)] = per_user.astype(np.float32).astype(np.float64)
    return arrays


def test_seeds_form_one_row_with_mean_std_and_paired_p(summarize, tmp_path):
    import numpy as np

    stats = pytest.importorskip("scipy.stats")
    arrays = seeded_runs(tmp_path / "runs")
    runs = summarize.collect_runs([tmp_path / "runs"])
    groups = summarize.group_seeds(runs)
    assert sorted((g[0]["metrics"]["model"], [r["metrics"]["seed"] for r in g]) for g in groups) == [
        ("CRANE", [1, 2, 999]), ("LightGCN", [1, 2, 999])]
    best, pvals = summarize.p_values(groups, "test", "recall@20")
    assert groups[best][0]["metrics"]["model"] == "CRANE"
    lgn = next(i for i, g in enumerate(groups) if g[0]["metrics"]["model"] == "LightGCN")
    mean_of = lambda model: np.mean([arrays[(model, s)] for s in (1, 2, 999)], axis=0)  # noqa: E731
    assert pvals[lgn] == pytest.approx(stats.ttest_rel(mean_of("LightGCN"), mean_of("CRANE")).pvalue, rel=1e-6)
    assert pvals[lgn] < 0.05 and pvals[best] is None
    means = [float(arrays[("LightGCN", s)].mean()) for s in (1, 2, 999)]
    mean, std = summarize.group_stat(groups[lgn], "test", "recall@20")
    assert mean == pytest.approx(np.mean(means), abs=1e-6) and std == pytest.approx(np.std(means, ddof=1), abs=1e-6)
    # the sweep summary: one CSV row per model, n_seeds, _mean / _std, p_value
    summarize.summarize(tmp_path / "runs", out=tmp_path / "out", plots=False)
    with (tmp_path / "out" / "summary.csv").open() as f:
        table = {r["model"]: r for r in csv.DictReader(f)}
    assert table["LightGCN"]["n_seeds"] == "3" and table["LightGCN"]["seeds"] == "1 2 999"
    assert float(table["LightGCN"]["test_recall@20_std"]) == pytest.approx(np.std(means, ddof=1), abs=1e-6)
    assert float(table["LightGCN"]["p_value"]) == pytest.approx(pvals[lgn]) and table["CRANE"]["p_value"] == ""


def test_page_marks_rows_not_significantly_below_the_best(summarize, tmp_path):
    seeded_runs(tmp_path / "runs")
    page = summarize.results_page("lfm2k", summarize.collect_runs([tmp_path / "runs"]))
    rows = [ln for ln in page.splitlines() if ln.startswith(("| CRANE", "| LightGCN"))][:2]
    crane, lgn = sorted(rows, key=lambda ln: not ln.startswith("| CRANE"))
    assert "| `experiment=ref_crane dataset=lfm2k` | 3 |" in crane and "| best |" in crane
    assert "seed=" not in crane
    assert " ± " in crane and crane.count("**") == 2  # the best row's test R@20 in bold
    assert "**" not in lgn  # significantly below the best
    assert "MMRec and most papers select hyperparameters" in page


def test_archive_then_page_regenerates_byte_for_byte(summarize, tmp_path, monkeypatch, capsys):
    seeded_runs(tmp_path / "scratch")
    for f in (tmp_path / "scratch").glob("*/"):
        (f / "best.pt").write_bytes(b"checkpoint")  # not part of a record
    monkeypatch.chdir(tmp_path)
    args = ["--page", "lfm2k", "scratch", "--archive", "docs/results/runs/lfm2k", "--out", "docs/results", "--no-plots"]
    assert summarize.main(args) == 0
    assert "archived 6 run records" in capsys.readouterr().err
    rec = tmp_path / "docs/results/runs/lfm2k/crane_s1"
    assert sorted(p.relative_to(rec).as_posix() for p in rec.rglob("*") if p.is_file()) == [
        ".hydra/overrides.yaml", "metrics.json", "per_user.npz"]
    page = (tmp_path / "docs/results/lfm2k.md").read_bytes()
    cmd = "python experiments/summarize.py --page lfm2k docs/results/runs/lfm2k --out docs/results --no-plots"
    assert cmd.encode() in page and str(tmp_path).encode() not in page
    (tmp_path / "docs/results/lfm2k.md").unlink()
    assert summarize.main(cmd.split()[2:]) == 0  # the command the page states
    assert (tmp_path / "docs/results/lfm2k.md").read_bytes() == page


def test_two_runs_with_one_name_are_refused_not_merged(summarize, tmp_path):
    seeded_runs(tmp_path / "a")
    seeded_runs(tmp_path / "b")  # the same run names under another sweep folder
    with pytest.raises(summarize.SummaryError, match="both named 'crane_s1'.*common parent"):
        summarize.collect_runs([tmp_path / "a", tmp_path / "b"])
    names = {r["name"] for r in summarize.collect_runs([tmp_path])}  # the parent keeps them apart
    assert "a/crane_s1" in names and "b/crane_s1" in names
