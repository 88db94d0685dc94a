"""Train and evaluate one model: ``python experiments/train.py model=lightgcn dataset=lfm2k``.

Returns the monitored validation metric, so Hydra sweepers (Optuna) can optimise it.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    """Hydra entry point."""
    from mmgraph.training.run import run

    metrics = run(cfg)
    return float(metrics["valid"][metrics["monitor"]])


if __name__ == "__main__":
    main()
