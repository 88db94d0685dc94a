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
                "trainer.device", "dataset.root", "trainer.log_every_s", "trainer.divergence_factor",
                "trainer.evaluator.metrics", "trainer.evaluator.cold_metrics", "trainer.evaluator.batch_size"}
#: Runs whose configurations differ only in these keys (and IGNORED_KEYS) are seeds of one row.
SEED_KEYS = {"seed"}
#: Significance level of the "not significantly below the best" mark.
ALPHA = 0.05
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


def group_seeds(runs: list[dict]) -> list[list[dict]]:
    """Runs that differ only in ``seed`` form one group (in order of first appearance; seeds ascending)."""
    groups: dict[str, list[dict]] = {}
    for r in runs:
        key = _hashable({k: v for k, v in r["params"].items() if k not in IGNORED_KEYS | SEED_KEYS})
        groups.setdefault(key, []).append(r)
    return [sorted(g, key=lambda r: _num(_seed(r))) for g in groups.values()]


def _seed(run: dict) -> Any:
    return run["metrics"].get("seed", run["params"].get("seed"))


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (``ddof=1``; ``None`` with one value)."""
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def group_stat(group: list[dict], stage: str, metric: str) -> tuple[float | None, float | None]:
    return mean_std([float(r["metrics"][stage][metric]) for r in group if metric in (r["metrics"].get(stage) or {})])


def per_user_mean(group: list[dict], key: str):
    """``(users, values)``: the per-user ``key`` array (``per_user.npz``) averaged over the group's seeds,
    on the users every seed evaluated; ``None`` when a seed has no such array."""
    import numpy as np

    users, values = None, []
    for r in group:
        path = r["dir"] / "per_user.npz"
        if not path.is_file():
            return None
        with np.load(path) as z:
            if key not in z.files:
                return None
            u, v = z["valid_users" if key.startswith("valid_") else "users"], z[key].astype(np.float64)
        if users is not None and not np.array_equal(u, users):
            common = np.intersect1d(users, u)
            values = [vv[np.isin(users, common)] for vv in values]
            v, users = v[np.isin(u, common)], common
        else:
            users = u
        values.append(v)
    return users, np.mean(values, axis=0)


def p_values(groups: list[list[dict]], stage: str, metric: str) -> tuple[int | None, list[float | None]]:
    """The group with the best mean ``stage`` ``metric`` and, for every group, the two-sided p-value of
    a paired t-test against it over users (per-user arrays averaged over seeds; ``None`` without them)."""
    from mmgraph.evaluation.significance import paired_ttest, paired_users

    means = [group_stat(g, stage, metric)[0] for g in groups]
    if not any(m is not None for m in means):
        return None, [None] * len(groups)
    best = max(range(len(groups)), key=lambda i: _num(means[i]))
    key = metric if stage == "test" else f"valid_{metric}"
    ref = per_user_mean(groups[best], key)
    out: list[float | None] = []
    for i, g in enumerate(groups):
        cur = per_user_mean(g, key) if i != best else ref
        if i == best or ref is None or cur is None:
            out.append(None)
            continue
        a, b = paired_users(cur[0], cur[1], ref[0], ref[1])
        out.append(paired_ttest(a, b)[1] if a.size >= 2 else None)
    return best, out


def _pm(mean: float | None, std: float | None, digits: int = 4) -> str:
    if mean is None:
        return ""
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def _fmt_p(p: float | None) -> str:
    if p is None:
        return ""
    return f"{p:.2g}" if p >= 1e-3 else "<0.001"


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return str(v)


def _run_name(r: dict, root: Path) -> str:
    try:
        return str(r["dir"].relative_to(root))
    except ValueError:
        return str(r["dir"])


def rows(runs: list[dict], params: list[str], root: Path, monitor: str = "recall@20") -> list[dict[str, Any]]:
    """One flat row per group of seeds: swept parameters, ``n_seeds`` / ``seeds``, per metric
    ``<split>_<metric>_mean`` and ``_std`` (std empty with one seed), ``p_value`` of the test
    ``monitor`` against the best row (:func:`p_values`), run folders."""
    groups = group_seeds(runs)
    _, pvals = p_values(groups, "test", monitor)
    out = []
    for g, p in zip(groups, pvals):
        m = g[0]["metrics"]
        row: dict[str, Any] = {q: g[0]["params"].get(q) for q in params if q not in SEED_KEYS}
        row["n_seeds"] = len(g)
        row["seeds"] = " ".join(_fmt(_seed(r)) for r in g)
        row["best_epoch"] = mean_std([float(r["metrics"]["best_epoch"]) for r in g
                                      if isinstance(r["metrics"].get("best_epoch"), (int, float))])[0]
        row["epochs_run"] = mean_std([float(r["metrics"]["epochs_run"]) for r in g
                                      if isinstance(r["metrics"].get("epochs_run"), (int, float))])[0]
        for stage in ("valid", "test"):
            for k in CSV_METRICS:
                mean, std = group_stat(g, stage, k)
                if mean is not None:
                    row[f"{stage}_{k}_mean"], row[f"{stage}_{k}_std"] = mean, std
        row["p_value"] = p
        row["total_s"] = mean_std([float((r["metrics"].get("timing") or {}).get("total_s"))
                                   for r in g if (r["metrics"].get("timing") or {}).get("total_s") is not None])[0]
        row["peak_rss_mb"] = max((r["metrics"].get("peak_rss_mb") or 0.0 for r in g), default=None)
        row.setdefault("model", m.get("model"))
        row["monitor"] = m.get("monitor")
        row["run"] = " ".join(_run_name(r, root) for r in g)
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
    """Markdown table: swept parameters, seeds, best epoch, valid and test Recall/NDCG@10/20 (mean ± std
    over seeds), p-value; best validation row in bold."""
    params = [q for q in params if q not in SEED_KEYS]
    metric_cols = [(s, k) for s in ("valid", "test") for k in TABLE_METRICS
                   if any(f"{s}_{k}_mean" in row for row in table)]
    seeds = any(row["n_seeds"] > 1 for row in table)
    header = ["run", *params, *(["seeds"] if seeds else []), "best epoch", *(f"{s}/{k}" for s, k in metric_cols),
              *([f"p (test {monitor})"] if seeds else [])]
    best = max(range(len(table)), key=lambda i: _num(table[i].get(f"valid_{monitor}_mean")), default=None)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for i, row in enumerate(table):
        cells = [row["run"], *(_fmt(row.get(q)) for q in params), *([str(row["n_seeds"])] if seeds else []),
                 _fmt(_round(row.get("best_epoch")))]
        for s_, k in metric_cols:
            cell = _pm(row.get(f"{s_}_{k}_mean"), row.get(f"{s_}_{k}_std"))
            cells.append(f"**{cell}**" if i == best and (s_, k) == ("valid", monitor) and cell else cell)
        if seeds:
            cells.append(_fmt_p(row.get("p_value")))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _round(v: Any) -> Any:
    return int(round(v)) if isinstance(v, float) and abs(v - round(v)) < 1e-9 else (round(v, 1) if isinstance(v, float) else v)


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
    table = rows(runs, params, root, monitor)
    write_csv(table, out_dir / "summary.csv")
    md = markdown(table, params, monitor)
    (out_dir / "summary.md").write_text(md)
    written = {"runs": len(runs), "rows": len(table), "params": [q for q in params if q not in SEED_KEYS], "csv": out_dir / "summary.csv",
               "markdown": out_dir / "summary.md", "table": md, "plots": []}
    params = [q for q in params if q not in SEED_KEYS] or params  # seeds are a row's spread, not an axis
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
    names: dict[str, Path] = {}
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
            if r["name"] in names:
                raise SummaryError(f"two runs are both named {r['name']!r} ({names[r['name']]} and {r['dir']}); "
                                   "pass their common parent folder instead, so that names stay distinct")
            names[r["name"]] = r["dir"]
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
             f"stopped early: {m.get('stopped_early')}" if "stopped_early" in m else ""]
    return "- " + "; ".join(p for p in parts if p)


def _settings(group: list[dict]) -> str:
    """The group's command-line settings without the seed (``seed=`` differs within a group)."""
    args = [a for a in run_settings(group[0]).split() if not a.lstrip("+~").startswith("seed=")]
    return f"`{' '.join(args)}`" if args else "-"


def _page_cols(groups: list[list[dict]], monitor: str) -> list[tuple[str, str, str]]:
    """``(stage, metric, header)`` of the accuracy table: valid monitor and NDCG@20, test R/N@10/20 and,
    on a cold split, the held-out items' own ranking and share."""
    k = monitor.split("@")[1] if "@" in monitor else "20"
    cols = [("valid", monitor, f"valid {_short(monitor)}"), ("valid", f"ndcg@{k}", f"valid N@{k}")]
    cols = list(dict.fromkeys(cols))
    cols += [("test", m, f"test {_short(m)}") for m in TABLE_METRICS]
    cols += [("test", m, f"test {_short(m)}") for m in (f"cold_recall@{k}", f"cold_ndcg@{k}", f"cold_share@{k}")
             if any(m in (r["metrics"].get("test") or {}) for g in groups for r in g)]
    return cols


def _short(metric: str) -> str:
    return (metric.replace("cold_recall", "cold R").replace("cold_ndcg", "cold N").replace("cold_share", "cold share")
            .replace("recall", "R").replace("ndcg", "N"))


def _page_table(groups: list[list[dict]], monitor: str) -> str:
    """Accuracy table: one row per model setting, mean ± std over its seeds, the paired p-value of
    test ``monitor`` against the best row; bold: the best row and rows not significantly below it."""
    cols = _page_cols(groups, monitor)
    best, pvals = p_values(groups, "test", monitor)
    header = ["model", "settings", "seeds", *(h for _, _, h in cols), f"p (test {_short(monitor)})",
              "best epoch", "epochs", "s/epoch", "device"]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if i < 2 else "--:" for i in range(len(header))) + "|"]
    for i, (g, p) in enumerate(zip(groups, pvals)):
        tied = i == best or (p is not None and p >= ALPHA)
        cells = [str(g[0]["metrics"].get("model", "")), _settings(g), str(len(g))]
        for stage, metric, _ in cols:
            cell = _pm(*group_stat(g, stage, metric))
            cells.append(f"**{cell}**" if cell and tied and (stage, metric) == ("test", monitor) and len(groups) > 1
                         else cell)
        cells.append("best" if i == best and len(groups) > 1 else _fmt_p(p))
        spe = mean_std([v for v in (seconds_per_epoch(r["metrics"]) for r in g) if v is not None])[0]
        cells += [_fmt(_round(mean_std([float(r["metrics"]["best_epoch"]) for r in g])[0])),
                  _fmt(_round(mean_std([float(r["metrics"]["epochs_run"]) for r in g])[0])),
                  f"{spe:.2f}" if spe is not None else "",
                  ", ".join(sorted({str(r["metrics"].get("device", "")) for r in g}))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


BEYOND = (("mrr", "MRR"), ("coverage", "coverage"), ("gini", "Gini"), ("avg_pop", "avg pop"))


def _beyond_table(groups: list[list[dict]], monitor: str) -> str:
    """Beyond-accuracy test metrics at the monitor's cut-off (mean ± std over seeds), when recorded."""
    k = monitor.split("@")[1] if "@" in monitor else "20"
    cols = [(f"{m}@{k}", h) for m, h in BEYOND if any(f"{m}@{k}" in (r["metrics"].get("test") or {})
                                                       for g in groups for r in g)]
    if not cols:
        return ""
    header = ["model", "settings", "seeds", *(f"{h}@{k}" for _, h in cols)]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if i < 2 else "--:" for i in range(len(header))) + "|"]
    for g in groups:
        cells = [str(g[0]["metrics"].get("model", "")), _settings(g), str(len(g))]
        cells += [_pm(*group_stat(g, "test", m), digits=2 if m.startswith("avg_pop") else 4) for m, _ in cols]
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
            f"{monitor}, test evaluated once at the best validation epoch. One row per model setting; runs that "
            "differ only in `seed` are one row (*seeds*: how many), each metric the mean ± sample standard "
            "deviation over them. Columns: valid / test Recall (R) and NDCG (N) at 10 and 20 of the "
            f"best-validation state; *p*: two-sided paired t-test of the row's per-user test {monitor} "
            "(averaged over its seeds) against the row with the best mean, over the users both evaluate; "
            f"**bold**: the best row and the rows not significantly below it (p ≥ {ALPHA}); *best epoch* / "
            "*epochs* run (means); *s/epoch*: mean wall seconds per epoch (training + negative sampling + "
            "validation) on the run's device (timings of runs that shared a machine are only roughly "
            "comparable); *settings*: the command-line overrides (`python experiments/train.py <settings> "
            "seed=<s>` reruns a seed; full configurations under *Run details*). Rows by mean valid " + monitor
            + ".", "",
            "MMRec and most papers select hyperparameters and report the epoch with the best **test** score; "
            "here every choice is made on validation and test is evaluated once, so these numbers are expected "
            "to sit slightly below published ones.", ""]
    by_split: dict[str, list[dict]] = defaultdict(list)
    for r in runs:
        by_split[_split_of(r)].append(r)
    titles = {"label": "Standard split (the dataset's x_label)", "cold": "Item cold start (split=cold)",
              "random": "MMRec random split (split=random)"}
    for split in sorted(by_split, key=lambda p: (p != "label", p)):
        groups = sorted(group_seeds(by_split[split]), key=lambda g: -_num(group_stat(g, "valid", monitor)[0]))
        out += [f"## {titles.get(split, f'split={split}')}", "", _page_table(groups, monitor)]
        if split == "cold":
            out += ["On the cold split every test item is held out of training. *cold R* / *cold N*: the held-out "
                    "items ranked among themselves only (how well a model orders items it never saw with a user); "
                    "*cold share*: the share of the full top-K they fill (the warm/cold balance of the score). "
                    "Overall R@20 needs both.", ""]
        beyond = _beyond_table(groups, monitor)
        if beyond:
            out += [f"Beyond accuracy (test, top-{monitor.split('@')[-1]}): MRR; catalogue coverage (share of items in "
                    "anyone's list); Gini index of item exposure (0 = even, 1 = one item); avg pop = mean train "
                    "interactions of the recommended items.", "", beyond]
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


#: What a run's committed record holds (no checkpoints, no logs).
RECORD_FILES = ("metrics.json", "per_user.npz", ".hydra/config.yaml", ".hydra/overrides.yaml")


def archive_runs(folders: list[str | Path], dataset: str, dest: str | Path, exclude: tuple[str, ...] = ()) -> list[Path]:
    """Copy the records (:data:`RECORD_FILES`) of the runs on ``dataset`` into ``dest/<run name>/``."""
    import shutil

    runs = [r for r in collect_runs(folders, exclude) if r["metrics"].get("dataset") == dataset]
    if not runs:
        raise SummaryError(f"no finished run (metrics.json) on dataset {dataset!r} to archive")
    written = []
    for r in runs:
        target = Path(dest) / r["name"]
        for rel in RECORD_FILES:
            src = r["dir"] / rel
            if src.is_file():
                (target / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, target / rel)
        if not (target / "per_user.npz").is_file():
            print(f"summarize: {r['name']} has no per_user.npz (written since per-user metrics exist): "
                  "its row gets no p-value", file=sys.stderr)
        written.append(target)
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
    ap.add_argument("--archive", metavar="DEST", default=None,
                    help="with --page: first copy the runs' records (metrics.json, per_user.npz, .hydra/config.yaml, "
                    ".hydra/overrides.yaml) to DEST/<run>/, then build the page from DEST (e.g. docs/results/runs/lfm2k)")
    ap.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                    help="with --page: leave out runs whose name matches (repeatable), e.g. 'ep1_*'")
    args = ap.parse_args(argv)
    try:
        if args.page is not None:
            cmd = "python experiments/summarize.py " + " ".join(
                shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
            if args.archive is not None:
                archived = archive_runs(args.folders, args.page, args.archive, tuple(args.exclude))
                print(f"archived {len(archived)} run records in {args.archive}", file=sys.stderr)
                args.folders, args.exclude = [args.archive], []
                cmd = "python experiments/summarize.py " + " ".join(shlex.quote(a) for a in (
                    "--page", args.page, args.archive, *(["--out", args.out] if args.out else []),
                    *(["--metric", args.metric] if args.metric else []), *(["--no-plots"] if args.no_plots else [])))
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
