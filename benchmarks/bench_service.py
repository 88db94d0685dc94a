"""Latency of the HTTP service (experiments/serve.py) under a short load test, over a real socket.

    python benchmarks/bench_service.py RUN_DIR [--requests 1000 --threads 8 --k 20]

Starts the service on a free localhost port in this process, sends ``--requests`` GET /recommend
requests (users drawn uniformly, seeded) from a pool of ``--threads`` client threads, and writes
p50 / p90 / p99 / max latency, throughput and the error count to JSON.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from mmgraph.inference import Recommender
from mmgraph.inference.service import create_app
from mmgraph.utils.io import atomic_write_json

OUT = Path(__file__).resolve().parent / "results" / "service.json"


def main(argv: list[str] | None = None) -> dict:
    import uvicorn

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    t = time.perf_counter()
    rec = Recommender.from_run(args.run_dir, device="cpu")
    startup_s = time.perf_counter() - t
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(rec), host="127.0.0.1", port=port, log_level="error"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    rng = random.Random(0)
    urls = [f"http://127.0.0.1:{port}/recommend?user={rng.randrange(rec.num_users)}&k={args.k}"
            for _ in range(args.requests)]

    def get(url: str) -> tuple[float, bool]:
        t0 = time.perf_counter()
        try:
            with urllib.request.urlopen(url, timeout=30) as r:
                ok = r.status == 200 and len(json.loads(r.read())["items"]) > 0
        except Exception:  # noqa: BLE001 - counted as an error
            ok = False
        return time.perf_counter() - t0, ok

    t = time.perf_counter()
    with ThreadPoolExecutor(args.threads) as pool:
        results = list(pool.map(get, urls))
    wall = time.perf_counter() - t
    server.should_exit = True
    lat = sorted(r[0] * 1000 for r in results)
    pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]  # noqa: E731
    out = {"run": args.run_dir.name, "model": type(rec.model).__name__, "num_users": rec.num_users,
           "num_items": rec.num_items, "requests": args.requests, "client_threads": args.threads, "k": args.k,
           "torch_threads": torch.get_num_threads(), "startup_s": startup_s, "errors": sum(not r[1] for r in results),
           "p50_ms": pct(0.5), "p90_ms": pct(0.9), "p99_ms": pct(0.99), "max_ms": lat[-1],
           "requests_per_s": args.requests / wall}
    atomic_write_json(args.out, out)
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    sys.exit(0 if main()["errors"] == 0 else 1)
