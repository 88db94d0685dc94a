"""The README's sweeps, exercised: a 2-trial Optuna search and a 2-job joblib sweep on the synthetic
dataset, and every ``conf/hparams_search/*.yaml`` composes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SMALL = ["trainer=debug", "trainer.max_epochs=2", "dataset.num_users=200", "dataset.num_items=100",
         "dataset.num_interactions=3000", "trainer.device=cpu"]


def _env() -> dict:
    import os

    return {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.mark.parametrize("name", sorted(p.stem for p in (REPO / "conf" / "hparams_search").glob("*.yaml")))
def test_hparams_search_composes(name):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"hparams_search={name}"], return_hydra_config=True)
    assert cfg.hydra.sweeper.params and "optuna" in cfg.hydra.sweeper._target_.lower()


def test_optuna_two_trials(tmp_path, cache_dir):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    cmd = [sys.executable, str(REPO / "experiments" / "train.py"), "-m", "hparams_search=lightgcn_optuna",
           "hydra.sweeper.n_trials=2", *SMALL, f"cache_dir={cache_dir}", f"hydra.sweep.dir={tmp_path}"]
    subprocess.run(cmd, check=True, capture_output=True, env=_env(), timeout=600)
    runs = sorted(tmp_path.glob("*/metrics.json"))
    assert len(runs) == 2
    results = (tmp_path / "optimization_results.yaml").read_text()
    best = max(json.loads(p.read_text())["valid"]["recall@20"] for p in runs)
    assert "best_value" in results and f"{best}"[:6] in results  # Optuna optimised the returned VALIDATION metric


def test_joblib_two_jobs(tmp_path, cache_dir):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    cmd = [sys.executable, str(REPO / "experiments" / "train.py"), "-m", "hydra/launcher=parallel",
           "model=bpr", "model.reg_weight=1e-4,1e-3", *SMALL, f"cache_dir={cache_dir}", f"hydra.sweep.dir={tmp_path}"]
    subprocess.run(cmd, check=True, capture_output=True, env=_env(), timeout=600)
    regs = sorted(json.loads(p.read_text())["config"]["model"]["reg_weight"] for p in tmp_path.glob("*/metrics.json"))
    assert regs == [1e-4, 1e-3]
