"""Shared fixtures: the tiny synthetic dataset, Hydra composition, the real-data root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from mmgraph.data.synthetic import load_synthetic

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
DATA_ROOT = Path(os.environ.get("MMGRAPH_DATA", REPO.parent / "shared" / "data"))

TINY = dict(num_users=60, num_items=40, num_interactions=600, num_clusters=4,
            dims={"image": 8, "text": 6}, noise={"image": 0.5, "text": 2.0}, seed=0)


def real_data(name: str) -> Path:
    """Folder of a real dataset, or skip the test when it is absent."""
    folder = DATA_ROOT / name
    if not folder.is_dir():
        pytest.skip(f"real dataset {name} not found under {DATA_ROOT} (set MMGRAPH_DATA)")
    return folder


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("mmgraph-cache")


@pytest.fixture()
def tiny_data(cache_dir):
    """``(data, split)`` of a tiny synthetic dataset with modalities image and text."""
    torch.manual_seed(0)
    return load_synthetic(cache_dir, name="tiny", **TINY)


def compose(overrides: list[str], cache_dir: Path):
    """Hydra-compose ``conf/config.yaml`` with ``overrides`` (tiny dataset, debug trainer)."""
    from hydra import compose as hcompose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hcompose(config_name="config", overrides=[
            "dataset=synthetic", "trainer=debug", f"cache_dir={cache_dir}",
            *[f"dataset.{k}={v}" for k, v in TINY.items() if not isinstance(v, dict)],
            "dataset.dims={image: 8, text: 6}", "dataset.noise={image: 0.5, text: 2.0}",
            "dataset.name=tiny",
            *overrides,
        ], return_hydra_config=False)


@pytest.fixture()
def cfg_tiny(cache_dir):
    """A factory ``cfg_tiny(*overrides)`` returning a composed config on the tiny dataset."""
    return lambda *overrides: compose(list(overrides), cache_dir)
