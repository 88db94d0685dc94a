"""Retrieval throughput of :class:`mmgraph.inference.Recommender`: exact vs faiss MIPS vs approximate MIPS.

    python benchmarks/bench_recommend.py                                  # Electronics size, 20,000 query users
    python benchmarks/bench_recommend.py --users 192403                   # every user
    python benchmarks/bench_recommend.py --num-users 20000 --num-items 7000 --out /tmp/r.json   # quick

Electronics size: 192,403 users x 63,001 items, 1.7M training interactions (excluded, ``exclude='train'``),
64-d embeddings with cluster structure (a trained model's embeddings are far from isotropic: 200
item clusters, users near the clusters of their items, plus noise). Reported per index: users/second
for top-20 and, for the indexes other than ``exact``, the mean overlap of their top-20 with the exact
top-20. All timed in one process, one after the other, with the thread count written to the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from mmgraph.data.split import RecSplit
from mmgraph.inference import Recommender
from mmgraph.models.base import GraphRecommender
from mmgraph.utils.io import atomic_write_json
from mmgraph.utils.memory import peak_rss_mb

OUT = Path(__file__).resolve().parent / "results" / "recommend_electronics.json"


class FixedEmbeddings(GraphRecommender):
    """A stand-in trained model: its forward returns fixed embeddings (dot-product score)."""

    def __init__(self, user: torch.Tensor, item: torch.Tensor) -> None:
        super().__init__(user.size(0), item.size(0))
        self.register_buffer("u", user)
        self.register_buffer("i", item)

    def forward(self, data) -> dict[str, torch.Tensor]:
        return {"user": self.u, "item": self.i}

    def loss(self, data, batch):  # pragma: no cover - never trained
        raise NotImplementedError


def synthetic(num_users: int, num_items: int, num_edges: int, dim: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(200, dim, generator=g)
    item_c = torch.randint(0, 200, (num_items,), generator=g)
    item = centres[item_c] + 0.6 * torch.randn(num_items, dim, generator=g)
    users = torch.randint(0, num_users, (num_edges,), generator=g)
    items = torch.randint(0, num_items, (num_edges,), generator=g)
    key = torch.unique(users * num_items + items)
    users, items = key // num_items, key % num_items
    user = torch.zeros(num_users, dim).index_add_(0, users, item[items])
    deg = torch.bincount(users, minlength=num_users).clamp(min=1).unsqueeze(1)
    user = user / deg + 0.3 * torch.randn(num_users, dim, generator=g)
    empty = torch.empty(2, 0, dtype=torch.long)
    split = RecSplit(num_users, num_items, torch.stack([users, items]), empty, empty)
    return FixedEmbeddings(user, item), split


def timed(rec: Recommender, users: torch.Tensor, k: int, index: str) -> tuple[float, torch.Tensor]:
    rec.index(index)  # building the index is set-up, not query time (reported separately)
    t = time.perf_counter()
    out = rec.recommend(users, k=k, exclude="train", index=index)
    return time.perf_counter() - t, out.items


def overlap(a: torch.Tensor, b: torch.Tensor) -> float:
    k = a.size(1)
    hits = (a.unsqueeze(2) == b.unsqueeze(1)).any(2) & (a >= 0)
    return float(hits.sum()) / (a.size(0) * k)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--num-users", type=int, default=192_403)
    ap.add_argument("--num-items", type=int, default=63_001)
    ap.add_argument("--num-edges", type=int, default=1_689_188)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--users", type=int, default=20_000, help="query users (the first N)")
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--indexes", default="exact,mips,ivf,approx")
    ap.add_argument("--num-cells", type=int, default=None)
    ap.add_argument("--cells-to-visit", type=int, default=None)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    t = time.perf_counter()
    model, split = synthetic(args.num_users, args.num_items, args.num_edges, args.dim, seed=0)
    rec = Recommender(model, None, split, device="cpu")
    setup_s = time.perf_counter() - t
    users = torch.arange(min(args.users, args.num_users))
    result: dict = {"num_users": args.num_users, "num_items": args.num_items, "train_interactions": split.train.size(1),
                    "dim": args.dim, "query_users": users.numel(), "k": args.k, "exclude": "train",
                    "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
                    "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "setup_s": setup_s, "indexes": {}}
    exact_items = None
    for kind in args.indexes.split(","):
        t = time.perf_counter()
        if kind in ("ivf", "approx"):
            rec.index(kind, num_cells=args.num_cells, num_cells_to_visit=args.cells_to_visit)
        else:
            rec.index(kind)
        build_s = time.perf_counter() - t
        secs, items = timed(rec, users, args.k, kind)
        row = {"build_s": build_s, "query_s": secs, "users_per_s": users.numel() / secs}
        if kind == "exact":
            exact_items = items
        elif exact_items is not None:
            row["overlap_at_k_with_exact"] = overlap(items, exact_items)
            row["speedup_vs_exact"] = result["indexes"]["exact"]["query_s"] / secs
        result["indexes"][kind] = row
        print(f"[bench_recommend] {kind}: {row}", file=sys.stderr, flush=True)
    result["peak_rss_mb"] = peak_rss_mb()
    atomic_write_json(args.out, result)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
