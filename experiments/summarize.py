"""Summarise a sweep (or any folder of runs): a CSV, a Markdown table and plots of the validation metric.

    python experiments/summarize.py multirun/2025-01-01_12-00-00          # a Hydra multirun folder
    python experiments/summarize.py outputs/ --metric ndcg@20 --no-plots  # any folder of runs

Every folder below the given one that holds a ``metrics.json`` (written by
``mmgraph.training.run``) is one run; its configuration is the ``config`` stored in
``metrics.json`` (else ``.hydra/config.yaml``). The swept parameters are the configuration
keys whose values differ between runs (the dataset and the model class count as one
parameter each, ``dataset`` and ``model``).
Written to ``--out`` (default: the folder itself):

* ``summary.csv``: one row per run, swept parameters, best epoch, epochs run, valid and
  test Recall/NDCG/Precision@10/20 (those present), run time, peak RSS, run folder;
* ``summary.md``: the same as a Markdown table (Recall/NDCG@10/20), best validation run in bold;
* ``sweep_<metric>.png`` (needs matplotlib: ``pip install -e ".[plots]"``): the validation
  metric against each swept parameter, one panel per parameter and one row per dataset (the
  layout of the sensitivity figures of the ULF and LATTICE papers); a line per setting of
  the other parameters when there are few, else their best and mean; a scatter when no two runs
  share the other parameters (random or Optuna searches).

Results page mode (``--page DATASET``): the runs on that dataset below the given folders (run
folders or folders of runs) become ``docs/results/<DATASET>.md``: per split, a table of model,
settings (the run's command-line overrides), valid and test Recall/NDCG@10/20, best epoch, epochs
run, seconds per epoch (training + sampling + validation) and device, then per-run details; and
``<DATASET>_curves.png``: the validation metric per epoch, one line per run, one panel per split
(the layout of the LIRDRec paper's Fig. 3, whose panels are datasets). The page starts with the
command that regenerates it.

    python experiments/summarize.py --page lfm2k /tmp/runs/lgn_lfm2k /tmp/runs/lattice_lfm2k ...
    python experiments/summarize.py --page lfm2k multirun/ --exclude 'ep1_*' --out docs/results
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import json
import math
import re
import shlex
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

#: Keys that may differ between runs without being swept parameters.
IGNORED_KEYS = {"data_root", "cache_dir", "trainer.resume", "trainer.progress", "trainer.checkpoint_every",
                "trainer.device"}
TABLE_METRICS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20")
#: Command-line overrides that do not change results (left out of a results page's settings).
NEUTRAL_OVERRIDES = ("trainer.progress", "trainer.resume", "trainer.checkpoint_every", "trainer.device", "hydra.",
                     "cache_dir", "data_root")
REPO = Path(__file__).resolve().parents[1]
CSV_METRICS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20", "precision@10", "precision@20")
MAX_LINES = 6


class SummaryError(RuntimeError):
    """No runs found, or plots requested without matplotlib."""


def _natural_key(s: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """``{'a': {'b': 1}} -> {'a.b': 1}``; lists are kept as values."""
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def _load_config(run_dir: Path, metrics: dict) -> dict:
    if isinstance(metrics.get("config"), dict):
        return metrics["config"]
    hydra_cfg = run_dir / ".hydra" / "config.yaml"
    if hydra_cfg.is_file():
        from omegaconf import OmegaConf

        cfg = OmegaConf.to_container(OmegaConf.load(hydra_cfg), resolve=False)
        return cfg if isinstance(cfg, dict) else {}
    return {}


def _override_keys(run_dir: Path) -> list[str]:
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return []
    keys = []
    for line in path.read_text().splitlines():
        line = line.strip().lstrip("-").strip()
        if "=" in line:
            keys.append(line.split("=", 1)[0].lstrip("+~"))
    return keys


def _override_args(run_dir: Path) -> list[str]:
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return []
    return [line.strip()[1:].strip() for line in path.read_text().splitlines() if line.strip().startswith("-")]


def collect(root: Path) -> list[dict]:
    """Every run below ``root``: ``{'dir', 'metrics', 'params' (flattened config), 'overrides'
    (keys), 'override_args' (``key=value`` strings)}``."""
    runs = []
    for path in sorted(root.rglob("metrics.json"), key=lambda p: _natural_key(str(p.parent))):
        try:
            metrics = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            print(f"summarize: skipping unreadable {path}: {e}", file=sys.stderr)
            continue
        run_dir = path.parent
        params = {k: v for k, v in flatten(_load_config(run_dir, metrics)).items() if not k.startswith("hydra.")}
        params["dataset"] = metrics.get("dataset") or params.get("dataset.name")
        params["model"] = metrics.get("model") or params.get("model._target_")
        runs.append({"dir": run_dir, "metrics": metrics, "params": params, "overrides": _override_keys(run_dir),
                     "override_args": _override_args(run_dir)})
    return runs


def _hashable(v: Any) -> str:
    return json.dumps(v, sort_keys=True, default=str)


def swept_parameters(runs: list[dict]) -> list[str]:
    """Configuration keys whose value differs between runs, command-line overrides first."""
    keys: set[str] = set().union(*(r["params"] for r in runs)) - IGNORED_KEYS
    differing = {k for k in keys if len({_hashable(r["params"].get(k)) for r in runs}) > 1}
    if "dataset" in differing:  # the dataset is one parameter, not its many config keys
        differing = {k for k in differing if not k.startswith("dataset.")}
    differing.discard("model._target_")  # shown as `model` (the class name) when it differs
    order: list[str] = []
    for r in runs:
        for k in r["overrides"]:
            if k in differing and k not in order:
                order.append(k)
    rest = sorted(differing - set(order), key=lambda k: (k not in ("model", "dataset"), k))
    return order + rest


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return str(v)


def rows(runs: list[dict], params: list[str], root: Path) -> list[dict[str, Any]]:
    """One flat row per run."""
    out = []
    for r in runs:
        m = r["metrics"]
        row: dict[str, Any] = {p: r["params"].get(p) for p in params}
        row["best_epoch"] = m.get("best_epoch")
        row["epochs_run"] = m.get("epochs_run")
        for stage in ("valid", "test"):
            for k in CSV_METRICS:
                if k in (m.get(stage) or {}):
                    row[f"{stage}/{k}"] = m[stage][k]
        row["total_s"] = (m.get("timing") or {}).get("total_s")
        row["peak_rss_mb"] = m.get("peak_rss_mb")
        row.setdefault("model", m.get("model"))
        row["monitor"] = m.get("monitor")
        try:
            row["run"] = str(r["dir"].relative_to(root))
        except ValueError:
            row["run"] = str(r["dir"])
        out.append(row)
    return out


def write_csv(table: list[dict[str, Any]], path: Path) -> None:
    """All columns of all rows (a metric missing in a run is left empty)."""
    cols: list[str] = []
    for row in table:
        cols += [c for c in row if c not in cols]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for row in table:
            w.writerow({c: _fmt(row.get(c)) if isinstance(row.get(c), (list, dict)) else row.get(c) for c in cols})


def markdown(table: list[dict[str, Any]], params: list[str], monitor: str) -> str:
    """Markdown table: swept parameters, best epoch, valid and test Recall/NDCG@10/20."""
    metric_cols = [f"{s}/{k}" for s in ("valid", "test") for k in TABLE_METRICS
                   if any(f"{s}/{k}" in row for row in table)]
    header = ["run", *params, "best epoch", *metric_cols]
    best = max(range(len(table)), key=lambda i: _num(table[i].get(f"valid/{monitor}")), default=None)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for i, row in enumerate(table):
        cells = [row["run"], *(_fmt(row.get(p)) for p in params), _fmt(row.get("best_epoch"))]
        for c in metric_cols:
            v = row.get(c)
            cell = f"{v:.4f}" if isinstance(v, (int, float)) else ""
            cells.append(f"**{cell}**" if i == best and c == f"valid/{monitor}" and cell else cell)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _num(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else -math.inf


def _is_numeric(values: list[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def plot(runs: list[dict], params: list[str], metric: str, path: Path) -> None:
    """Validation ``metric`` against each swept parameter (rows: datasets; columns: parameters)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise SummaryError("plots need matplotlib: pip install -e \".[plots]\" "
                           "(or pass --no-plots for the CSV and Markdown table only)") from e
    xparams = [p for p in params if p != "dataset"]
    if not xparams:
        xparams = params
    datasets = sorted({_fmt(r["params"].get("dataset")) for r in runs}) if "dataset" in params else [None]
    fig, axes = plt.subplots(len(datasets), len(xparams), squeeze=False,
                             figsize=(4.2 * len(xparams), 3.2 * len(datasets)))
    for row_i, ds in enumerate(datasets):
        ds_runs = [r for r in runs if ds is None or _fmt(r["params"].get("dataset")) == ds]
        for col_i, p in enumerate(xparams):
            ax = axes[row_i][col_i]
            _panel(ax, ds_runs, p, [q for q in xparams if q != p], metric)
            ax.set_xlabel(p)
            ax.set_ylabel(f"valid {metric}")
            if ds is not None:
                ax.set_title(ds)
            ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _panel(ax, runs: list[dict], p: str, others: list[str], metric: str) -> None:
    values = [r["params"].get(p) for r in runs]
    numeric = _is_numeric(values)
    ticks = sorted({_fmt(v) for v in values}, key=_natural_key)

    def x_of(v: Any) -> float:
        return float(v) if numeric else float(ticks.index(_fmt(v)))

    groups: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in runs:
        y = (r["metrics"].get("valid") or {}).get(metric)
        if y is None:
            continue
        label = ", ".join(f"{q.split('.')[-1]}={_fmt(r['params'].get(q))}" for q in others)
        groups[label].append((x_of(r["params"].get(p)), float(y)))
    if groups and max(len(pts) for pts in groups.values()) <= 1:  # no grid (e.g. Optuna): a scatter
        pts = [pt for g in groups.values() for pt in g]
        ax.scatter([a for a, _ in pts], [b for _, b in pts])
    elif len(groups) <= MAX_LINES:
        for label, pts in sorted(groups.items(), key=lambda kv: _natural_key(kv[0])):
            pts.sort()
            ax.plot([a for a, _ in pts], [b for _, b in pts], marker="o", label=label or None)
        if any(groups) and len(groups) > 1:
            ax.legend(fontsize=7)
    else:  # too many settings of the other parameters: their best and their mean
        by_x: dict[float, list[float]] = defaultdict(list)
        for pts in groups.values():
            for a, b in pts:
                by_x[a].append(b)
        xs = sorted(by_x)
        ax.plot(xs, [max(by_x[x]) for x in xs], marker="o", label="best over the others")
        ax.plot(xs, [sum(by_x[x]) / len(by_x[x]) for x in xs], marker="s", linestyle="--", label="mean")
        ax.legend(fontsize=7)
    if not numeric:
        ax.set_xticks(range(len(ticks)), ticks, rotation=30, fontsize=7)


def summarize(root: str | Path, out: str | Path | None = None, metric: str | None = None,
              plots: bool = True) -> dict[str, Any]:
    """Write ``summary.csv``, ``summary.md`` and (``plots``) ``sweep_<metric>.png``; return what was written."""
    root = Path(root)
    if not root.is_dir():
        raise SummaryError(f"{root} is not a folder")
    runs = collect(root)
    if not runs:
        raise SummaryError(f"no metrics.json below {root}: nothing to summarise (runs unfinished or failed?)")
    out_dir = Path(out) if out is not None else root
    out_dir.mkdir(parents=True, exist_ok=True)
    monitor = metric or runs[0]["metrics"].get("monitor") or "recall@20"
    params = swept_parameters(runs)
    table = rows(runs, params, root)
    write_csv(table, out_dir / "summary.csv")
    md = markdown(table, params, monitor)
    (out_dir / "summary.md").write_text(md)
    written = {"runs": len(runs), "params": params, "csv": out_dir / "summary.csv",
               "markdown": out_dir / "summary.md", "table": md, "plots": []}
    if plots and params:
        png = out_dir / f"sweep_{re.sub(r'[^A-Za-z0-9_.-]', '_', monitor)}.png"
        plot(runs, params, monitor, png)
        written["plots"].append(png)
    return written


# ------------------------------------------------------------------------------------------------
# Results pages: docs/results/<dataset>.md and training curves


def collect_runs(folders: list[str | Path], exclude: tuple[str, ...] = ()) -> list[dict]:
    """Runs below each folder (a folder may be a run itself), each once, named by its path relative
    to the folder given (a run folder given directly is named by its own name); ``exclude``: glob
    patterns on the names."""
    runs: list[dict] = []
    seen: set[Path] = set()
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise SummaryError(f"{folder} is not a folder")
        for r in collect(folder):
            key = r["dir"].resolve()
            if key in seen:
                continue
            seen.add(key)
            r["name"] = folder.name if r["dir"] == folder else str(r["dir"].relative_to(folder))
            if any(fnmatch.fnmatch(r["name"], pat) for pat in exclude):
                continue
            runs.append(r)
    return runs


def seconds_per_epoch(metrics: dict) -> float | None:
    """Mean wall seconds per epoch: training + negative sampling + validation (amortised)."""
    t = metrics.get("timing") or {}
    if "train_epoch_s" not in t:
        return None
    epochs = metrics.get("epochs_run") or len(metrics.get("history") or []) or 1
    n_evals = len(metrics.get("history") or []) or epochs
    return float(t["train_epoch_s"] + t.get("sample_s", 0.0) + t.get("eval_s", 0.0) * n_evals / epochs)


def _split_of(run: dict) -> str:
    return str(run["params"].get("dataset.split") or "label")


def run_settings(run: dict) -> str:
    """The run's command-line overrides that change results (``experiment=ref_ulf dataset=lfm2k``)."""
    args = [a for a in run.get("override_args", [])
            if not any(a.lstrip("+~").startswith(n) for n in NEUTRAL_OVERRIDES)]
    return " ".join(args)


def _compact(d: dict, drop: tuple[str, ...] = ("_target_", "_partial_", "_convert_")) -> str:
    flat = flatten(d)
    return ", ".join(f"{k}={'null' if v is None else _fmt(v)}" for k, v in flat.items()
                     if not any(k == x or k.endswith("." + x) for x in drop))


def run_details(run: dict) -> str:
    """One Markdown bullet: model hyperparameters, trainer, data, seed, time and memory, folder."""
    m = run["metrics"]
    cfg = m.get("config") or {}
    tr = cfg.get("trainer") or {}
    trainer = {"lr": (tr.get("optimizer") or {}).get("lr"), "weight_decay": (tr.get("optimizer") or {}).get("weight_decay"),
               "batch": tr.get("train_batch_size"), "max_epochs": tr.get("max_epochs"), "patience": tr.get("patience"),
               "lr_decay": tr.get("lr_decay"), "lr_decay_every": tr.get("lr_decay_every"),
               "clip_grad_norm": tr.get("clip_grad_norm")}
    ds = cfg.get("dataset") or {}
    data = {k: ds[k] for k in ("split", "modalities") if k in ds}
    total = (m.get("timing") or {}).get("total_s")
    parts = [f"**{run['name']}** ({m.get('model')})",
             f"model: {_compact(cfg.get('model') or {}) or '-'}",
             f"trainer: {_compact({k: v for k, v in trainer.items() if v is not None})}",
             f"data: {_compact(data) or '-'}", f"seed {m.get('seed', cfg.get('seed'))}",
             f"{m.get('num_parameters'):,} parameters" if isinstance(m.get("num_parameters"), int) else "",
             (f"total {total / 60:.1f} min" if total >= 60 else f"total {total:.0f} s")
             if isinstance(total, (int, float)) else "",
             f"peak RSS {m['peak_rss_mb']:.0f} MB" if isinstance(m.get("peak_rss_mb"), (int, float)) else "",
             f"stopped early: {m.get('stopped_early')}" if "stopped_early" in m else "",
             f"`{run['dir']}`"]
    return "- " + "; ".join(p for p in parts if p)


def _page_table(runs: list[dict], monitor: str) -> str:
    cols = [(s, k) for s in ("valid", "test") for k in TABLE_METRICS]
    header = ["run", "model", "settings", *(f"{s} {k.replace('recall', 'R').replace('ndcg', 'N')}" for s, k in cols),
              "best epoch", "epochs", "s/epoch", "device"]
    best = {c: max((_num((r["metrics"].get(c[0]) or {}).get(c[1])) for r in runs), default=-math.inf) for c in cols}
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i < 3 else "--:" for i in range(len(header))) + "|"]
    for r in runs:
        m = r["metrics"]
        cells = [r["name"], str(m.get("model", "")), f"`{run_settings(r)}`" if run_settings(r) else "-"]
        for c in cols:
            v = (m.get(c[0]) or {}).get(c[1])
            cell = f"{v:.4f}" if isinstance(v, (int, float)) else ""
            cells.append(f"**{cell}**" if cell and len(runs) > 1 and _num(v) == best[c] else cell)
        spe = seconds_per_epoch(m)
        cells += [_fmt(m.get("best_epoch")), _fmt(m.get("epochs_run")), f"{spe:.2f}" if spe is not None else "",
                  str(m.get("device", ""))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_curves(runs: list[dict], metric: str, path: Path, panel_of=_split_of, title: str = "") -> None:
    """Validation ``metric`` per epoch, a line per run (best epoch marked), a panel per ``panel_of``
    value (splits on a dataset's page; datasets in the LIRDRec paper's Fig. 3)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise SummaryError("plots need matplotlib: pip install -e \".[plots]\" (or pass --no-plots)") from e
    panels = sorted({panel_of(r) for r in runs}, key=lambda p: (p != "label", p))
    fig, axes = plt.subplots(1, len(panels), squeeze=False, figsize=(6.4 * len(panels), 4.4))
    for ax, panel in zip(axes[0], panels):
        for r in sorted((r for r in runs if panel_of(r) == panel),
                        key=lambda r: -_num((r["metrics"].get("valid") or {}).get(metric))):
            hist = [h for h in r["metrics"].get("history") or [] if metric in (h.get("valid") or {})]
            if not hist:
                continue
            xs = [h["epoch"] for h in hist]
            ys = [h["valid"][metric] for h in hist]
            (line,) = ax.plot(xs, ys, linewidth=1.3, label=f"{r['metrics'].get('model')} ({r['name']})")
            b = max(range(len(ys)), key=lambda i: ys[i])
            ax.plot([xs[b]], [ys[b]], marker="o", color=line.get_color(), markersize=5)
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"valid {metric}")
        ax.set_title(f"{title} (split={panel})" if title else f"split={panel}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def results_page(dataset: str, runs: list[dict], monitor: str = "recall@20", command: str | None = None,
                 curves: str | None = None) -> str:
    """Markdown of a dataset's results page (see the module docstring)."""
    out = [f"# Results on {dataset}", ""]
    if command:
        out += ["<!-- Generated by experiments/summarize.py --page; edit the runs, not this file. -->",
                "Regenerate this page and its figure (add the folders of new runs to the command):", "",
                "```bash", command, "```", ""]
    ds = next((r["metrics"].get("dataset_summary") for r in runs
               if _split_of(r) == "label" and r["metrics"].get("dataset_summary")), None)
    if ds:
        rows = ds.get("rows") or {}
        mods = ", ".join(f"{m} {d}-d" for m, d in (ds.get("modalities") or {}).items()) or "none"
        out += [f"Dataset: {ds.get('num_users', 0):,} users, {ds.get('num_items', 0):,} items, "
                f"{sum(rows.values()):,} interactions (train {rows.get('train', 0):,} / valid "
                f"{rows.get('valid', 0):,} / test {rows.get('test', 0):,}); modalities: {mods}.", ""]
    out += [f"Protocol ([protocol.md](../protocol.md)): full ranking over all items, early stopping on valid "
            f"{monitor}, test evaluated once at the best validation epoch. Columns: valid / test Recall (R) and "
            "NDCG (N) at 10 and 20 of the best-validation state; *best epoch* / *epochs* run; *s/epoch*: mean "
            "wall seconds per epoch (training + negative sampling + validation) on the run's device (timings "
            "of runs that shared a machine with other jobs are only roughly comparable); *settings*: the "
            "run's command-line overrides (`python experiments/train.py <settings>` reruns it; the full "
            "configuration is under *Run details*). Best value per column in bold. Rows by valid " + monitor
            + ".", ""]
    by_split: dict[str, list[dict]] = defaultdict(list)
    for r in runs:
        by_split[_split_of(r)].append(r)
    titles = {"label": "Standard split (the dataset's x_label)", "cold": "Item cold start (split=cold)",
              "random": "MMRec random split (split=random)"}
    for split in sorted(by_split, key=lambda p: (p != "label", p)):
        rs = sorted(by_split[split], key=lambda r: -_num((r["metrics"].get("valid") or {}).get(monitor)))
        out += [f"## {titles.get(split, f'split={split}')}", "", _page_table(rs, monitor)]
    if curves:
        out += ["## Training curves", "", f"Validation {monitor} per epoch (dot: best epoch), one panel per split.",
                "", f"![valid {monitor} per epoch]({curves})", ""]
    out += ["## Run details", "", *(run_details(r) for r in sorted(runs, key=lambda r: r["name"])), ""]
    return "\n".join(out)


def write_results_page(folders: list[str | Path], dataset: str, out: str | Path | None = None,
                       metric: str = "recall@20", exclude: tuple[str, ...] = (), plots: bool = True,
                       command: str | None = None) -> dict[str, Any]:
    """Write ``<out>/<dataset>.md`` (and ``<dataset>_curves.png``) from the runs on ``dataset``."""
    runs = [r for r in collect_runs(folders, exclude) if r["metrics"].get("dataset") == dataset]
    if not runs:
        raise SummaryError(f"no finished run (metrics.json) on dataset {dataset!r} below "
                           f"{', '.join(str(f) for f in folders)}")
    out_dir = Path(out) if out is not None else REPO / "docs" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^A-Za-z0-9_.-]", "_", dataset)
    png = out_dir / f"{slug}_curves.png"
    written: dict[str, Any] = {"runs": len(runs), "plots": []}
    if plots:
        plot_curves(runs, metric, png, title=dataset)
        written["plots"].append(png)
    page = results_page(dataset, runs, metric, command, png.name if plots else None)
    md = out_dir / f"{slug}.md"
    md.write_text(page)
    written.update(markdown=md, table=page)
    return written


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="+", metavar="folder",
                    help="a Hydra multirun folder, or any folder with run folders holding metrics.json "
                    "(several, and run folders themselves, with --page)")
    ap.add_argument("--out", default=None, help="where to write the summary (default: the folder; "
                    "with --page: docs/results)")
    ap.add_argument("--metric", default=None, help="validation metric to plot and mark (default: the runs' monitor)")
    ap.add_argument("--no-plots", action="store_true", help="only the CSV and the Markdown table")
    ap.add_argument("--page", metavar="DATASET", default=None,
                    help="write the results page <out>/DATASET.md and DATASET_curves.png from the runs on DATASET")
    ap.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                    help="with --page: leave out runs whose name matches (repeatable), e.g. 'ep1_*'")
    args = ap.parse_args(argv)
    try:
        if args.page is not None:
            cmd = "python experiments/summarize.py " + " ".join(
                shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
            res = write_results_page(args.folders, args.page, args.out, args.metric or "recall@20",
                                     tuple(args.exclude), plots=not args.no_plots, command=cmd)
            print(f"{res['runs']} runs on {args.page}", file=sys.stderr)
            for p in (res["markdown"], *res["plots"]):
                print(f"wrote {p}", file=sys.stderr)
            return 0
        if len(args.folders) > 1:
            raise SummaryError("give one folder (several folders only with --page)")
        res = summarize(args.folders[0], args.out, args.metric, plots=not args.no_plots)
    except SummaryError as e:
        print(f"summarize: {e}", file=sys.stderr)
        return 1
    print(res["table"])
    print(f"{res['runs']} runs; swept: {', '.join(res['params']) or '(nothing differs)'}", file=sys.stderr)
    for p in (res["csv"], res["markdown"], *res["plots"]):
        print(f"wrote {p}", file=sys.stderr)
    return 0

if __name__ == "__main__":
    sys.exit(main())
