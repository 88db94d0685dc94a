"""Train and evaluate one model: ``python experiments/train.py model=lightgcn dataset=lfm2k``.

Returns the monitored validation metric, so Hydra sweepers (Optuna) can optimise it.
"""

from __future__ import annotations

import os
import sys

# Before torch is imported: with busy cores, OpenMP's default spin-waiting makes sparse ops
# up to ~30x slower (measured on 2 shared cores); passive waiting costs nothing when idle.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Large tensors on transparent huge pages (Linux; read once by torch's CPU allocator): every
# fresh [U, d] activation otherwise page-faults 4 KiB at a time. Measured on the 2-core VM: a fresh
# 148 MB tensor 37 -> 10 ms, a LIRDRec batch at Electronics size 8.7 -> 6.4 s. THP_MEM_ALLOC_ENABLE=0
# turns it off.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    """Hydra entry point."""
    from mmgraph.training.run import USER_ERRORS, run

    try:
        metrics = run(cfg)
    except USER_ERRORS as e:  # the user's input or run, not a bug: the message says what to do, no traceback
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    return float(metrics["valid"][metrics["monitor"]])


if __name__ == "__main__":
    main()
