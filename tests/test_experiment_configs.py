"""Every ``conf/experiment/*.yaml`` composes and resolves, for every value its own sweep lists."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

CONF = Path(__file__).resolve().parents[1] / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def _compose(overrides: list[str], hydra: bool = False):
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return compose("config", overrides=overrides, return_hydra_config=hydra)


def _sweep_overrides(name: str, dataset: str) -> list[list[str]]:
    """One override list per value of the experiment's own sweep (the first swept key); [[]] without one."""
    cfg = _compose([f"experiment={name}", f"dataset={dataset}"], hydra=True)
    params = OmegaConf.select(cfg, "hydra.sweeper.params") or {}
    if not params:
        return [[]]
    key, values = next(iter(params.items()))
    return [[f"{key}={v.strip()}"] for v in str(values).split(",")]


@pytest.mark.parametrize("name", EXPERIMENTS)
@pytest.mark.parametrize("dataset", ["synthetic", "lfm2k"])
def test_experiment_composes_and_resolves(name, dataset, monkeypatch):
    monkeypatch.setenv("MMGRAPH_DATA", "/nonexistent")  # composing never reads data
    for extra in _sweep_overrides(name, dataset):
        cfg = _compose([f"experiment={name}", f"dataset={dataset}", *extra])
        resolved = OmegaConf.to_container(cfg, resolve=True)
        assert "_target_" in resolved["model"], name
        assert resolved["trainer"]["max_epochs"] >= 1


def test_crane_fusion_variants_pick_dataset_modalities():
    got = {}
    for fv in ("single_1", "single_2", "concat", "sum", "graph_avg"):
        cfg = _compose(["experiment=crane_fusion", "dataset=lfm2k", f"fusion_variant={fv}"])
        m = OmegaConf.to_container(cfg.model, resolve=True)
        got[fv] = (m["item_graph_modalities"], m["item_graph_fusion"])
    assert got == {"single_1": (["text"], "concat"), "single_2": (["audio"], "concat"),
                   "concat": (None, "concat"), "sum": (None, "sum"), "graph_avg": (None, "graph_avg")}


def test_crane_table5_sweeps_all_variants_as_settings():
    runs = _sweep_overrides("crane_table5", "lfm2k")
    names = [r[0].split("=")[1] for r in runs]
    assert names == ["crane", "no_item_graph", "no_rca", "no_attention", "no_gcn", "no_cl", "no_dual_fusion"]
    ref = OmegaConf.to_container(_compose(["experiment=ref_crane", "dataset=lfm2k"]).model, resolve=True)
    got = {n: OmegaConf.to_container(_compose(["experiment=crane_table5", "dataset=lfm2k", f"table5_variant={n}"]).model,
                                     resolve=True) for n in names}
    assert got["crane"] == ref  # the full model of the table is ref_crane
    changed = {n: {k: v for k, v in got[n].items() if ref[k] != v} for n in names}
    assert changed == {"crane": {}, "no_item_graph": {"num_ii_layers": 0}, "no_rca": {"rca_rounds": 1},
                       "no_attention": {"rca_rounds": 0}, "no_gcn": {"num_ui_layers": 0, "num_ii_layers": 0},
                       "no_cl": {"cl_weight": 0.0}, "no_dual_fusion": {"variant": "no_dual_fusion"}}
    # a value the user gives wins over the table's
    user = _compose(["experiment=crane_table5", "dataset=lfm2k", "table5_variant=no_rca", "model.rca_rounds=2"])
    assert user.model.rca_rounds == 2
