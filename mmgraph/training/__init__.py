"""Training: the trainer and the ``run(cfg)`` pipeline."""

from mmgraph.training.run import config_fingerprint, run
from mmgraph.training.trainer import FitResult, ResumeError, Trainer

__all__ = ["Trainer", "FitResult", "ResumeError", "run", "config_fingerprint"]
