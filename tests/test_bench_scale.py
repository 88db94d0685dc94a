"""benchmarks/bench_scale.py: runs the trainer's steps and writes a JSON with the documented fields."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_scale", REPO / "benchmarks" / "bench_scale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("batches", [0, 2])
def test_bench_scale_writes_its_json(tmp_path, cache_dir, batches):
    out = tmp_path / "scale.json"
    tiny = ["dataset=synthetic", "dataset.name=bench_tiny", "dataset.num_users=60", "dataset.num_items=40",
            "dataset.num_interactions=900", "dataset.dims={image: 8, text: 6}", f"cache_dir={cache_dir}",
            "trainer.train_batch_size=64"]
    result = _bench().main(["model=freedom", *tiny, "--batches", str(batches), "--out", str(out)])
    on_disk = json.loads(out.read_text())
    assert on_disk == json.loads(json.dumps(result))
    n = on_disk["batches_per_epoch"]
    assert n == -(-on_disk["train_rows"] // on_disk["batch_size"]) and n >= 4
    assert on_disk["whole_epoch"] is (batches == 0)
    assert on_disk["batches_timed"] == (n - 1 if batches == 0 else min(batches, n - 1))
    assert on_disk["epoch_s"] >= on_disk["first_batch_s"] > 0
    assert on_disk["eval_s"] > 0 and 0.0 <= on_disk["valid_recall@20"] <= 1.0
    assert on_disk["model"] == "FREEDOM" and on_disk["users"] == 60 and on_disk["peak_rss_mb"] > 0


def test_bench_scale_rejects_negative_batches(capsys):
    with pytest.raises(SystemExit):
        _bench().main(["--batches", "-1"])
    assert "--batches must be >= 0" in capsys.readouterr().err
