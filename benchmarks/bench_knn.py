"""Exact cosine kNN: the plain fp32 blockwise matmul + top-k against bf16 candidates re-ranked in fp32.

    python benchmarks/bench_knn.py                              # 20,000 x 4,096, k = 10
    python benchmarks/bench_knn.py --n 63001 --skip-fp32        # the Electronics-size item graph, bf16 only

Features: non-negative (ReLU) clustered vectors, like CNN image features (500 clusters). Both methods
run in this process, one after the other, on the same input; written to JSON: seconds, the ratio,
the share of rows whose neighbour sets are identical, the rows the bf16 path had to recompute, the
thread count and whether the CPU reports AMX.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from mmgraph.graph.knn import topk_cosine
from mmgraph.utils.io import atomic_write_json
from mmgraph.utils.memory import peak_rss_mb

OUT = Path(__file__).resolve().parent / "results" / "knn_bf16.json"


def cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), [])
    return sorted(f for f in flags if f.startswith(("amx", "avx512_bf16")))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--f", type=int, default=4096)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--skip-fp32", action="store_true")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(500, args.f, generator=g)
    x = torch.relu(centres[torch.randint(0, 500, (args.n,), generator=g)] + 0.8 * torch.randn(args.n, args.f, generator=g))
    out = {"n": args.n, "features": args.f, "k": args.k, "threads": torch.get_num_threads(), "cpu_flags": cpu_flags()}
    t = time.perf_counter()
    v16, i16 = topk_cosine(x, args.k, precision="bf16")
    out["bf16_s"] = time.perf_counter() - t
    out["bf16_fallback_rows"] = topk_cosine.last_fallback_rows
    print(f"[bench_knn] bf16 {out['bf16_s']:.1f}s, {out['bf16_fallback_rows']} rows recomputed", file=sys.stderr)
    if not args.skip_fp32:
        t = time.perf_counter()
        v32, i32 = topk_cosine(x, args.k, precision="fp32")
        out["fp32_s"] = time.perf_counter() - t
        out["bf16_over_fp32"] = out["bf16_s"] / out["fp32_s"]
        same = (torch.sort(i16, 1).values == torch.sort(i32, 1).values).all(1)
        out["identical_neighbour_sets"] = float(same.float().mean())
        out["max_abs_value_diff"] = float((v16 - v32).abs().max())
        print(f"[bench_knn] fp32 {out['fp32_s']:.1f}s; ratio {out['bf16_over_fp32']:.3f}; identical sets "
              f"{out['identical_neighbour_sets']:.5f}", file=sys.stderr)
    out["peak_rss_mb"] = peak_rss_mb()
    atomic_write_json(args.out, out)
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
