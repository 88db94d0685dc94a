"""Time and memory of CRANE's Recursive Cross-Modal Attention alone (forward + backward).

One process per configuration, so the peak RSS belongs to it:

    python benchmarks/bench_rca.py --n 26495 --kernel tanh          # Amazon Baby's N = |U| + |I|
    python benchmarks/bench_rca.py --n 26495 --kernel linear
    python benchmarks/bench_rca.py --n 26495 --kernel tanh --naive  # dense N × N autograd (memory!)

Prints one JSON line: forward and forward+backward seconds, peak RSS (MiB) and the RSS before RCA.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch
import torch.nn.functional as F

from mmgraph.nn.rca import RecursiveCrossModalAttention
from mmgraph.utils.memory import peak_rss_mb


def naive_step(rca: RecursiveCrossModalAttention, xs: dict) -> dict:
    joint = rca.joint(torch.cat([xs[m] for m in rca.modalities], 1))
    new = {}
    for m in rca.modalities:
        c = xs[m] @ rca.to_modality[m](joint).t() / math.sqrt(rca.dim)  # [N, N]
        if rca.kernel == "tanh":
            c = torch.tanh(c)
        new[m] = rca.out[m](F.relu(c @ rca.value[m](xs[m]) / c.size(1))) + xs[m]
    return new


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=26495)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--modalities", type=int, default=2)
    p.add_argument("--kernel", choices=["tanh", "linear"], default="tanh")
    p.add_argument("--block", type=int, default=2048)
    p.add_argument("--naive", action="store_true", help="dense N × N reference instead of the blockwise one")
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    mods = [f"m{i}" for i in range(a.modalities)]
    rca = RecursiveCrossModalAttention(mods, dim=a.dim, rounds=a.rounds, kernel=a.kernel, block_size=a.block)
    x0 = {m: torch.randn(a.n, a.dim) for m in mods}
    rss0 = peak_rss_mb()

    def run(grad: bool) -> float:
        t = time.perf_counter()
        with torch.set_grad_enabled(grad):
            xs = x0
            for _ in range(a.rounds):
                xs = naive_step(rca, xs) if a.naive else rca.step(xs)
            if grad:
                sum(x.sum() for x in xs.values()).backward()
        return time.perf_counter() - t

    fwd = run(False)
    fwd_bwd = run(True)
    print(json.dumps({"n": a.n, "kernel": a.kernel, "naive": a.naive, "rounds": a.rounds, "block": a.block,
                      "threads": torch.get_num_threads(), "forward_s": round(fwd, 3),
                      "forward_backward_s": round(fwd_bwd, 3), "rss_before_mb": round(rss0),
                      "peak_rss_mb": round(peak_rss_mb())}))


if __name__ == "__main__":
    main()
