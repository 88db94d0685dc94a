"""Serve a trained run over HTTP (FastAPI + uvicorn: ``pip install -e '.[serve]'``).

    python experiments/serve.py outputs/crane-lfm2k/2026-12-07_12-00-00 --port 8000
    curl 'http://127.0.0.1:8000/recommend?user=3&k=10'
    curl 'http://127.0.0.1:8000/similar?item=42&k=5'
    curl 'http://127.0.0.1:8000/health'

The embeddings are computed once at start-up; ``--exclude seen`` (default) never returns an
interaction of the dataset file, ``train`` only masks the training ones, ``none`` nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mmgraph.data.mmrec import DatasetError
from mmgraph.inference import EXCLUDE, InferenceError, Recommender
from mmgraph.training.run import USER_ERRORS


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path, help="a run folder of experiments/train.py (holds best.pt)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--exclude", choices=EXCLUDE, default="seen")
    ap.add_argument("--max-k", type=int, default=1000, help="largest k a request may ask for")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    try:
        from mmgraph.inference.service import create_app

        rec = Recommender.from_run(args.run_dir, device=args.device, data_root=args.data_root)
        app = create_app(rec, exclude=args.exclude, max_k=args.max_k)
        import uvicorn
    except ImportError:
        print("error: the HTTP service needs uvicorn: pip install fastapi uvicorn (or pip install -e '.[serve]')",
              file=sys.stderr)
        return 2
    except (InferenceError, DatasetError, *USER_ERRORS) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"serving {type(rec.model).__name__} ({rec.num_users:,} users x {rec.num_items:,} items) on "
          f"http://{args.host}:{args.port}", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
