#!/usr/bin/env python
"""Foundation benchmark: LightGCN sampling, training and full-ranking evaluation speed.

For each dataset, LightGCN (3 layers, d=64, batch 2048, Adam lr 1e-3) is trained for
``--epochs`` timed epochs, then the validation split is evaluated three ways:

* ``eval_s``: :class:`mmgraph.evaluation.FullRankingEvaluator` (ks 5/10/20/50, all 5 metrics);
* ``bare_rank_s``: one forward + per user block (the evaluator's block size) ``u @ i.T`` and ``topk(50)``, nothing else
  (the floor any full-ranking evaluator pays);
* ``mmrec_eval_s``: MMRec's evaluation re-implemented faithfully (``Trainer.evaluate`` +
  ``EvalDataLoader`` + ``TopKEvaluator`` + ``utils/metrics.py``); its recall@20 must equal ours.

Results go to one JSON file (written atomically). See ``benchmarks/README.md``.

    python benchmarks/bench_foundation.py                # both datasets, ~1 min on 2 idle cores
    python benchmarks/bench_foundation.py --datasets amazon_baby --epochs 5 --threads 1
"""

from __future__ import annotations

import argparse
import datetime as _dt
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from mmgraph.data.mmrec import load_mmrec
from mmgraph.data.sampler import UniformNegativeSampler
from mmgraph.data.split import RecSplit
from mmgraph.evaluation.ranking import FullRankingEvaluator
from mmgraph.graph.build import build_graph
from mmgraph.models.lightgcn import LightGCN
from mmgraph.training import Trainer
from mmgraph.typing import BPRBatch
from mmgraph.utils.io import atomic_write_json
from mmgraph.utils.memory import peak_rss_mb

# How each dataset is loaded (mirrors conf/dataset/<name>.yaml, minus the features:
# LightGCN uses none, so neither real nor synthetic feature matrices are loaded).
DATASETS: dict[str, dict] = {
    "lfm2k": {"name": "lfm2k", "folder": "lfm2k", "conf_modalities": ["text", "audio"]},
    "amazon_baby": {"name": "baby", "folder": "amazon-baby", "conf_modalities": [],
                    "conf_synthetic_features": {"image": 4096, "text": 384}},
}

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "foundation.json"
KS = (5, 10, 20, 50)
EVAL_BATCH = 4096
MODEL_CFG = {"model": "LightGCN", "num_layers": 3, "embedding_dim": 64, "reg_weight": 1e-4,
             "train_batch_size": 2048, "optimizer": "Adam", "lr": 1e-3}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def timed(fn: Callable[[], object], repeats: int, warmup: int = 1) -> tuple[list[float], object]:
    """Run ``fn`` ``warmup`` times untimed, then ``repeats`` times timed; return (seconds, last result)."""
    out = None
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return times, out


# --------------------------------------------------------------------------- training
def train_epoch(model: LightGCN, data, batch_all: BPRBatch, opt: torch.optim.Optimizer, bs: int) -> float:
    """One epoch of ``Trainer.step`` calls, as ``Trainer.fit`` runs them (minus tqdm/checkpointing); mean loss."""
    model.train()
    trainer = Trainer(progress=False)
    state: dict = {}
    n = batch_all.users.numel()
    total = 0.0
    n_batches = math.ceil(n / bs)
    for b in range(n_batches):
        sl = slice(b * bs, (b + 1) * bs)
        batch = BPRBatch(*(t[sl] for t in batch_all))
        total += trainer.step(model, data, batch, opt, where=f"batch {b + 1}", state=state)["loss"]
    return total / n_batches


# --------------------------------------------------------------------------- bare ranking
@torch.no_grad()
def bare_rank(model: LightGCN, data, users: torch.Tensor, kmax: int, block: int = 4096) -> torch.Tensor:
    """One forward, then per ``block`` users ``u @ i.T`` + ``topk``: no masking, no metrics.

    ``block`` is the evaluator's own user-block size, so the comparison isolates its overhead.
    """
    model.eval()
    emb = model(data)
    u_all, i_all = emb["user"], emb["item"]
    k = min(kmax, i_all.size(0))
    last = None
    for s in range(0, users.numel(), block):
        last = torch.topk(u_all[users[s : s + block]] @ i_all.T, k, dim=1).indices
    return last


# --------------------------------------------------------------------------- MMRec way
class MMRecEvalData:
    """MMRec's ``EvalDataLoader`` state, built once with Python lists as MMRec does in ``__init__``.

    * ``eval_u``: users of the stage in order of first appearance (``df[uid].unique()``);
    * ``pos_items_per_u``: ``[2, N]`` tensor of (row-in-eval_u, train item) built by extending
      Python lists user by user (``_get_pos_items_per_u``), with ``train_pos_len_list``;
    * ``eval_items_per_u``: one numpy array of the user's stage items per user, in file order
      (``groupby(...).get_group(u).values``), and ``eval_len_list`` as a numpy array.
    """

    def __init__(self, split: RecSplit, stage: str, batch_size: int) -> None:
        st = split.edge_label_index(stage).numpy()
        tr = split.train.numpy()
        self.batch_size = batch_size
        _, first = np.unique(st[0], return_index=True)
        eval_u = st[0][np.sort(first)]  # pandas .unique(): order of appearance
        # groupby(uid)[iid] emulation: item arrays per user, in file order.
        train_groups = _group(tr[0], tr[1])
        stage_groups = _group(st[0], st[1])
        u_ids: list[int] = []
        i_ids: list[int] = []
        self.train_pos_len_list: list[int] = []
        for i, u in enumerate(eval_u):
            u_ls = train_groups[int(u)]
            i_len = len(u_ls)
            self.train_pos_len_list.append(i_len)
            u_ids.extend([i] * i_len)
            i_ids.extend(u_ls)
        self.pos_items_per_u = torch.tensor([u_ids, i_ids]).type(torch.LongTensor)
        self.eval_items_per_u: list[np.ndarray] = []
        eval_len = []
        for u in eval_u:
            u_ls = stage_groups[int(u)]
            eval_len.append(len(u_ls))
            self.eval_items_per_u.append(u_ls)
        self.eval_len_list = np.asarray(eval_len)
        self.eval_u = torch.tensor(eval_u).type(torch.LongTensor)

    def __iter__(self):
        """``_next_batch_data``: (batch users, [2, n] mask indices with rows relative to the batch)."""
        pr, inter_pr = 0, 0
        while pr < self.eval_u.shape[0]:
            inter_cnt = sum(self.train_pos_len_list[pr : pr + self.batch_size])
            batch_users = self.eval_u[pr : pr + self.batch_size]
            batch_mask_matrix = self.pos_items_per_u[:, inter_pr : inter_pr + inter_cnt].clone()
            batch_mask_matrix[0] -= pr
            inter_pr += inter_cnt
            pr += self.batch_size
            yield batch_users, batch_mask_matrix


def _group(keys: np.ndarray, vals: np.ndarray) -> dict[int, np.ndarray]:
    order = np.argsort(keys, kind="stable")
    k, v = keys[order], vals[order]
    uniq, start = np.unique(k, return_index=True)
    ends = np.append(start[1:], k.size)
    return {int(u): v[s:e] for u, s, e in zip(uniq, start, ends)}


# MMRec utils/metrics.py, same algorithms (cumulative over ranks 1..K_max, per-user loops for
# the NDCG ideal-DCG truncation and MAP normalisation).
def mmrec_recall(pos_index: np.ndarray, pos_len: np.ndarray) -> np.ndarray:
    return (np.cumsum(pos_index, axis=1) / pos_len.reshape(-1, 1)).mean(axis=0)


def mmrec_ndcg(pos_index: np.ndarray, pos_len: np.ndarray) -> np.ndarray:
    len_rank = np.full_like(pos_len, pos_index.shape[1])
    idcg_len = np.where(pos_len > len_rank, len_rank, pos_len)
    iranks = np.zeros_like(pos_index, dtype=np.float64)
    iranks[:, :] = np.arange(1, pos_index.shape[1] + 1)
    idcg = np.cumsum(1.0 / np.log2(iranks + 1), axis=1)
    for row, idx in enumerate(idcg_len):
        idcg[row, idx:] = idcg[row, idx - 1]
    ranks = np.zeros_like(pos_index, dtype=np.float64)
    ranks[:, :] = np.arange(1, pos_index.shape[1] + 1)
    dcg = 1.0 / np.log2(ranks + 1)
    dcg = np.cumsum(np.where(pos_index, dcg, 0), axis=1)
    return (dcg / idcg).mean(axis=0)


def mmrec_map(pos_index: np.ndarray, pos_len: np.ndarray) -> np.ndarray:
    pre = pos_index.cumsum(axis=1) / np.arange(1, pos_index.shape[1] + 1)
    sum_pre = np.cumsum(pre * pos_index.astype(np.float64), axis=1)
    len_rank = np.full_like(pos_len, pos_index.shape[1])
    actual_len = np.where(pos_len > len_rank, len_rank, pos_len)
    result = np.zeros_like(pos_index, dtype=np.float64)
    for row, lens in enumerate(actual_len):
        ranges = np.arange(1, pos_index.shape[1] + 1)
        ranges[lens:] = ranges[lens - 1]
        result[row] = sum_pre[row] / ranges
    return result.mean(axis=0)


def mmrec_precision(pos_index: np.ndarray, pos_len: np.ndarray) -> np.ndarray:
    return (pos_index.cumsum(axis=1) / np.arange(1, pos_index.shape[1] + 1)).mean(axis=0)


MMREC_METRICS = {"recall": mmrec_recall, "ndcg": mmrec_ndcg, "precision": mmrec_precision, "map": mmrec_map}


@torch.no_grad()
def mmrec_evaluate(model: LightGCN, data, eval_data: MMRecEvalData, ks=KS,
                   phases: dict[str, list[float]] | None = None) -> dict[str, float]:
    """MMRec ``Trainer.evaluate`` + ``TopKEvaluator.evaluate`` (metrics not rounded to 4 digits).

    ``phases`` (optional) receives the seconds of its three phases: ``rank`` (per-batch forward,
    scores, masking, topk, concatenation to numpy), ``hit_matrix`` (the Python double loop) and
    ``metrics`` (MMRec's numpy metrics).
    """
    t0 = time.perf_counter()
    model.eval()
    batch_matrix_list = []
    for users, masked_items in eval_data:
        # LightGCN.full_sort_predict: forward() recomputed for every batch.
        emb = model(data)
        scores = torch.matmul(emb["user"][users], emb["item"].transpose(0, 1))
        scores[masked_items[0], masked_items[1]] = -1e10
        _, topk_index = torch.topk(scores, max(ks), dim=-1)
        batch_matrix_list.append(topk_index)
    pos_items = eval_data.eval_items_per_u
    pos_len_list = eval_data.eval_len_list
    topk_index = torch.cat(batch_matrix_list, dim=0).cpu().numpy()
    t1 = time.perf_counter()
    assert len(pos_len_list) == len(topk_index)
    bool_rec_matrix = []
    for m, n in zip(pos_items, topk_index):
        bool_rec_matrix.append([True if i in m else False for i in n])
    bool_rec_matrix = np.asarray(bool_rec_matrix)
    t2 = time.perf_counter()
    out = {}
    for name, fn in MMREC_METRICS.items():
        value = fn(bool_rec_matrix, pos_len_list)
        for k in ks:
            out[f"{name}@{k}"] = float(value[k - 1])
    t3 = time.perf_counter()
    if phases is not None:
        for key, dt in (("rank", t1 - t0), ("hit_matrix", t2 - t1), ("metrics", t3 - t2)):
            phases.setdefault(key, []).append(dt)
    return out


@torch.no_grad()
def profile_evaluator(evaluator: FullRankingEvaluator, model: LightGCN, data, split: RecSplit,
                      top: int = 6) -> dict:
    """One ``evaluate`` under ``torch.profiler``: the ops with the most self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        evaluator.evaluate(model, data, split, "valid")
    avgs = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in avgs) or 1.0
    ops = [{"op": e.key, "calls": e.count, "self_s": e.self_cpu_time_total / 1e6,
            "share": e.self_cpu_time_total / total} for e in avgs[:top]]
    return {"total_self_s": total / 1e6, "top_ops": ops}


# --------------------------------------------------------------------------- one dataset
def bench_dataset(key: str, args) -> dict:
    spec = DATASETS[key]
    load_start = os.getloadavg()[0]  # other processes on the machine skew every timing
    t0 = time.perf_counter()
    data, split = load_mmrec(args.data_root, spec["name"], folder=spec["folder"], modalities=[],
                             synthetic_features=None)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    model = LightGCN(split.num_users, split.num_items, embedding_dim=MODEL_CFG["embedding_dim"],
                     num_layers=MODEL_CFG["num_layers"], reg_weight=MODEL_CFG["reg_weight"])
    data = build_graph(data, model.graph_spec, cache_dir=None)
    graph_s = time.perf_counter() - t0
    rows = {s: int(split.edge_label_index(s).size(1)) for s in ("train", "valid", "test")}
    n_eval_users = int(split.eval_users("valid").numel())
    log(f"{key}: {split.num_users:,} users x {split.num_items:,} items, rows {rows}, "
        f"{n_eval_users:,} valid users (load {load_s:.2f}s, graph {graph_s:.2f}s)")

    gen = torch.Generator().manual_seed(args.seed)
    sampler = UniformNegativeSampler(split, generator=gen)
    sample_runs, _ = timed(sampler.epoch, args.sample_repeats)
    log(f"{key}: sampling {statistics.mean(sample_runs):.4f}s/epoch (mean of {len(sample_runs)})")

    opt = torch.optim.Adam(model.parameters(), lr=MODEL_CFG["lr"])
    bs = MODEL_CFG["train_batch_size"]
    # Warm-up epoch (untimed), then the timed ones; sampling is outside the timed region.
    train_runs, losses = [], []
    for e in range(args.epochs + 1):
        batch_all = sampler.epoch()
        t0 = time.perf_counter()
        loss = train_epoch(model, data, batch_all, opt, bs)
        dt = time.perf_counter() - t0
        losses.append(loss)
        if e > 0:
            train_runs.append(dt)
        log(f"{key}: epoch {e + 1}{' (warm-up)' if e == 0 else ''}: loss {loss:.5f}, {dt:.2f}s")

    evaluator = FullRankingEvaluator(ks=KS, metrics=("recall", "ndcg", "precision", "map", "hit"),
                                     batch_size=EVAL_BATCH)
    users = split.eval_users("valid")
    t0 = time.perf_counter()
    mm_data = MMRecEvalData(split, "valid", EVAL_BATCH)
    mmrec_setup_s = time.perf_counter() - t0
    phases: dict[str, list[float]] = {}
    contenders = {
        "eval": lambda: evaluator.evaluate(model, data, split, "valid"),
        "bare_rank": lambda: bare_rank(model, data, users, max(KS),
                                       evaluator._batch_size(torch.device("cpu"), split.num_items)),
        "mmrec_eval": lambda: mmrec_evaluate(model, data, mm_data, phases=phases),
    }
    # One untimed warm-up each, then the repeats interleaved (eval, bare, mmrec, eval, ...)
    # so that a change of machine load hits the three alike.
    last = {name: fn() for name, fn in contenders.items()}
    phases.clear()
    runs: dict[str, list[float]] = {name: [] for name in contenders}
    for r in range(args.repeats):
        for name, fn in contenders.items():
            t0 = time.perf_counter()
            last[name] = fn()
            runs[name].append(time.perf_counter() - t0)
        log(f"{key}: evaluation repeat {r + 1}/{args.repeats}: "
            + ", ".join(f"{n} {v[-1]:.3f}s" for n, v in runs.items()))
    ours, theirs = last["eval"], last["mmrec_eval"]
    eval_runs, bare_runs, mm_runs = runs["eval"], runs["bare_rank"], runs["mmrec_eval"]
    log(f"{key}: FullRankingEvaluator {statistics.mean(eval_runs):.4f}s, bare ranking "
        f"{statistics.mean(bare_runs):.4f}s, MMRec way {statistics.mean(mm_runs):.4f}s "
        f"(+{mmrec_setup_s:.2f}s one-off setup); recall@20 ours {ours['recall@20']:.5f}, "
        f"MMRec way {theirs['recall@20']:.5f}")
    prof = profile_evaluator(evaluator, model, data, split) if args.profile else None

    diffs = {k: abs(ours[k] - theirs[k]) for k in theirs}
    max_diff_metric = max(diffs, key=diffs.get)
    agree = diffs["recall@20"] <= 1e-4
    if not agree:
        log(f"{key}: WARNING recall@20 differs: ours {ours['recall@20']:.6f} vs MMRec way {theirs['recall@20']:.6f}")

    eval_s, bare_s, mm_s = (statistics.mean(r) for r in (eval_runs, bare_runs, mm_runs))
    return {
        "dataset": key,
        "loader": {"name": spec["name"], "folder": spec["folder"], "modalities": [],
                   "synthetic_features": None,
                   "note": ("features not loaded: LightGCN uses none (conf/dataset/"
                            f"{key}.yaml would load modalities={spec['conf_modalities']}"
                            + (f", synthetic_features={spec['conf_synthetic_features']}"
                               if "conf_synthetic_features" in spec else "") + ")")},
        "users": split.num_users,
        "items": split.num_items,
        "rows": rows,
        "valid_users": n_eval_users,
        "load_s": load_s,
        "graph_s": graph_s,
        "sample_s": statistics.mean(sample_runs),
        "train_epoch_s": statistics.mean(train_runs),
        "eval_s": eval_s,
        "bare_rank_s": bare_s,
        "mmrec_eval_s": mm_s,
        "mmrec_setup_s": mmrec_setup_s,
        "speedup_vs_mmrec": mm_s / eval_s,
        "overhead_vs_bare": eval_s / bare_s,
        "speedup_vs_mmrec_min": min(mm_runs) / min(eval_runs),
        "overhead_vs_bare_min": min(eval_runs) / min(bare_runs),
        "mmrec_eval_phases_s": {k: statistics.mean(v) for k, v in phases.items()},
        "eval_profile": prof,
        "recall@20_ours": ours["recall@20"],
        "recall@20_mmrec_way": theirs["recall@20"],
        "recall@20_agree_1e-4": agree,
        "max_abs_metric_diff": {"metric": max_diff_metric, "value": diffs[max_diff_metric]},
        "metrics_ours": ours,
        "metrics_mmrec_way": theirs,
        "runs_s": {"sample": sample_runs, "train_epoch": train_runs, "eval": eval_runs,
                   "bare_rank": bare_runs, "mmrec_eval": mm_runs},
        "train_loss": losses,
        "peak_rss_mb": peak_rss_mb(),
        "loadavg_1m_start_end": [load_start, os.getloadavg()[0]],
    }


def machine_info() -> dict:
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        affinity = None
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data-root", default=os.environ.get("MMGRAPH_DATA", "/work/shared/data"),
                   help="folder holding lfm2k/ and amazon-baby/ (env MMGRAPH_DATA)")
    p.add_argument("--datasets", nargs="+", default=["lfm2k", "amazon_baby"], choices=sorted(DATASETS))
    p.add_argument("--epochs", type=int, default=3, help="timed LightGCN training epochs (after 1 warm-up)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats of each evaluation (after 1 warm-up)")
    p.add_argument("--sample-repeats", type=int, default=5, help="timed repeats of sampler.epoch()")
    p.add_argument("--out", default=str(DEFAULT_OUT),
                   help="JSON file to write (the default is inside the repository, whatever the cwd)")
    p.add_argument("--threads", type=int, default=None,
                   help="intra-op threads (torch.set_num_threads); unset: torch's default")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-profile", dest="profile", action="store_false",
                   help="skip the torch.profiler run of FullRankingEvaluator.evaluate (eval_profile)")
    args = p.parse_args(argv)
    if args.epochs < 1 or args.repeats < 1 or args.sample_repeats < 1:
        p.error("--epochs, --repeats and --sample-repeats must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    result = {
        "benchmark": "foundation",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).as_posix(), *(argv if argv is not None else sys.argv[1:])]),
        "torch": torch.__version__,
        "num_threads": torch.get_num_threads(),
        "thread_env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                       "OMP_WAIT_POLICY")},
        "device": "cpu",
        "machine": machine_info(),
        "config": {**MODEL_CFG, "epochs_timed": args.epochs, "eval_repeats": args.repeats,
                   "sample_repeats": args.sample_repeats, "eval_ks": list(KS),
                   "eval_metrics": ["recall", "ndcg", "precision", "map", "hit"],
                   "eval_batch_size": EVAL_BATCH, "eval_stage": "valid", "seed": args.seed,
                   "data_root": str(args.data_root)},
        "targets": {"dataset": "amazon_baby", "speedup_vs_mmrec_at_least": 3.0,
                    "overhead_vs_bare_at_most": 1.5, "sample_s_below": 0.1},
        "datasets": {},
    }
    log(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.platform()}")
    load, ncpu = os.getloadavg()[0], os.cpu_count() or 1
    if load > 0.5 * ncpu:
        log(f"WARNING: load average {load:.1f} on {ncpu} CPUs before starting: other processes will skew "
            "the timings; with OpenMP threads competing for busy cores sparse ops can slow down "
            "many-fold (try --threads 1, or OMP_WAIT_POLICY=PASSIVE)")
    for key in args.datasets:
        result["datasets"][key] = bench_dataset(key, args)
        atomic_write_json(args.out, result)  # partial results survive a later failure

    baby = result["datasets"].get("amazon_baby")
    if baby is not None:
        result["targets"]["met"] = {
            "speedup_vs_mmrec": baby["speedup_vs_mmrec"] >= 3.0,
            "overhead_vs_bare": baby["overhead_vs_bare"] <= 1.5,
            "sample_s": baby["sample_s"] < 0.1,
        }
    out = atomic_write_json(args.out, result)

    cols = ["sample_s", "train_epoch_s", "eval_s", "bare_rank_s", "mmrec_eval_s",
            "speedup_vs_mmrec", "overhead_vs_bare", "peak_rss_mb"]
    print()
    print(f"{'dataset':<12}" + "".join(f"{c:>17}" for c in cols) + f"{'recall@20 ours/mmrec':>26}")
    for key, r in result["datasets"].items():
        print(f"{key:<12}" + "".join(f"{r[c]:>17.4f}" for c in cols)
              + f"{r['recall@20_ours']:>13.5f}/{r['recall@20_mmrec_way']:.5f}")
    if "met" in result["targets"]:
        print("targets on amazon_baby: " + ", ".join(f"{k} {'OK' if v else 'MISSED'}"
                                                     for k, v in result["targets"]["met"].items()))
    print(f"written {out}")
    bad = [k for k, r in result["datasets"].items() if not r["recall@20_agree_1e-4"]]
    if bad:
        print(f"recall@20 of ours and the MMRec way differ by more than 1e-4 on {bad}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
