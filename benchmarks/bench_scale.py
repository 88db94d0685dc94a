"""Time and memory of one model at scale: set-up, training batches, one full-ranking evaluation.

A whole Electronics-size epoch takes minutes to hours on a CPU; this script times a few batches
(after one warm-up batch) and extrapolates, so models can be compared in minutes. It takes the
same Hydra overrides as ``experiments/train.py``::

    python benchmarks/bench_scale.py experiment=ref_lirdrec dataset=synthetic_elec --batches 5
    python benchmarks/bench_scale.py model=freedom dataset=synthetic_elec --batches 0   # whole epoch

and writes ``benchmarks/results/scale_<model>_<dataset>.json`` (``--out`` to change). The steps
are those of ``Trainer.fit`` (``zero_grad`` → ``model.loss`` → ``backward`` → ``step`` on the
epoch's sampled batches, then ``FullRankingEvaluator.evaluate`` on the validation split).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as experiments/train.py
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

import argparse  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.utils import get_class, instantiate  # noqa: E402

from mmgraph.data.sampler import UniformNegativeSampler  # noqa: E402
from mmgraph.models.base import dataset_kwargs, prepare_data  # noqa: E402
from mmgraph.training.run import load_dataset  # noqa: E402
from mmgraph.typing import BPRBatch  # noqa: E402
from mmgraph.utils.io import atomic_write_json  # noqa: E402
from mmgraph.utils.memory import peak_rss_mb  # noqa: E402
from mmgraph.utils.seed import seed_everything  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("overrides", nargs="*", help="Hydra overrides, as for experiments/train.py")
    p.add_argument("--batches", type=int, default=5,
                   help="timed training batches after one warm-up batch; 0: the whole epoch (default 5)")
    p.add_argument("--no-eval", action="store_true", help="skip the validation evaluation")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--out", type=Path, default=None,
                   help="JSON path (default benchmarks/results/scale_<model>_<dataset>.json)")
    args = p.parse_args(argv)
    if args.batches < 0:
        p.error("--batches must be >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=args.overrides)
    seed_everything(int(cfg.seed))
    load0 = os.getloadavg()[0]

    t = time.perf_counter()
    data, split = load_dataset(cfg.dataset)
    load_s = time.perf_counter() - t
    model = instantiate(cfg.model, **dataset_kwargs(get_class(cfg.model._target_), data), _convert_="all")
    t = time.perf_counter()
    data = prepare_data(model, data, cfg.get("cache_dir"))
    prepare_s = time.perf_counter() - t
    trainer = instantiate(cfg.trainer, _convert_="all")
    device = trainer.device
    model.to(device)
    data = data.to(device)
    print(f"[bench_scale] {type(model).__name__} on {cfg.dataset.name}: load {load_s:.1f}s, "
          f"graphs+init {prepare_s:.1f}s, peak RSS {peak_rss_mb():.0f} MB", flush=True)

    sampler = UniformNegativeSampler(split, generator=torch.Generator().manual_seed(int(cfg.seed)))
    opt = trainer.optimizer_fn(model.parameters())
    t = time.perf_counter()
    batch_all = sampler.epoch()
    sample_s = time.perf_counter() - t
    bs = trainer.train_batch_size
    n_batches = math.ceil(batch_all.users.numel() / bs)
    n_timed = n_batches - 1 if args.batches == 0 else min(args.batches, n_batches - 1)
    graph = model.train_graph(data, 0)
    model.train()
    step_state: dict = {}

    def step(b: int) -> float:
        batch = BPRBatch(*(x[b * bs:(b + 1) * bs] for x in batch_all)).to(device)
        t0 = time.perf_counter()
        trainer.step(model, graph, batch, opt, where=f"batch {b + 1}", state=step_state)  # the trainer's own step
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0

    first_s = step(0)
    print(f"[bench_scale] warm-up batch {first_s:.2f}s; timing {n_timed} of {n_batches} batches", flush=True)
    times = []
    for b in range(1, n_timed + 1):
        times.append(step(b))
        if b % max(1, n_timed // 10) == 0 or b == n_timed:
            print(f"[bench_scale] batch {b}/{n_timed}: {times[-1]:.2f}s, peak RSS {peak_rss_mb():.0f} MB",
                  flush=True)
    per_batch = sum(times) / len(times) if times else first_s
    epoch_s = first_s + sum(times) if args.batches == 0 else first_s + per_batch * (n_batches - 1)

    eval_s = valid = None
    if not args.no_eval:
        t = time.perf_counter()
        valid = trainer.evaluator.evaluate(model, data, split, "valid")
        eval_s = time.perf_counter() - t
        print(f"[bench_scale] evaluation {eval_s:.1f}s", flush=True)

    result = {
        "benchmark": "scale",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([sys.executable.split("/")[-1], *sys.argv]),
        "model": type(model).__name__,
        "dataset": str(cfg.dataset.name),
        "overrides": args.overrides,
        "users": int(data["user"].num_nodes),
        "items": int(data["item"].num_nodes),
        "train_rows": int(batch_all.users.numel()),
        "parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "batch_size": bs,
        "batches_per_epoch": n_batches,
        "batches_timed": len(times),
        "whole_epoch": args.batches == 0,
        "load_s": load_s,
        "graphs_and_init_s": prepare_s,
        "sample_s": sample_s,
        "first_batch_s": first_s,
        "s_per_batch": per_batch,
        "epoch_s": epoch_s,
        "epoch_s_is_extrapolated": args.batches != 0,
        "eval_s": eval_s,
        "valid_recall@20": None if valid is None else valid.get("recall@20"),
        "peak_rss_mb": peak_rss_mb(),
        "device": str(device),
        "num_threads": torch.get_num_threads(),
        "thread_env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY",
                                                      "THP_MEM_ALLOC_ENABLE")},
        "loadavg_1m_start_end": [load0, os.getloadavg()[0]],
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__},
    }
    out = args.out or REPO / "benchmarks" / "results" / f"scale_{type(model).__name__.lower()}_{cfg.dataset.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, result)
    print(f"[bench_scale] epoch {'' if args.batches == 0 else '~'}{epoch_s:.0f}s "
          f"({per_batch:.2f}s/batch × {n_batches}); wrote {out}", flush=True)
    return result


if __name__ == "__main__":
    main()
