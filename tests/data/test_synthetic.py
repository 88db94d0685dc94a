"""The seeded synthetic dataset: determinism, exact sizes, structure, and the on-disk cache."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from mmgraph.data import generate, load_synthetic, mmrec_random_labels
from mmgraph.data import synthetic as synthetic_mod
from mmgraph.graph import topk_cosine
from mmgraph.typing import ITEM, UI

SMALL = dict(num_users=120, num_items=80, num_interactions=1200, num_clusters=6)


@pytest.fixture(scope="module")
def small():
    return generate(**SMALL, seed=0)


def test_deterministic_for_a_seed(small):
    again = generate(**SMALL, seed=0)
    for a, b in zip(small[:3], again[:3]):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    assert small[3].keys() == again[3].keys()
    for m in small[3]:
        assert small[3][m].tobytes() == again[3][m].tobytes()


def test_different_seeds_differ(small):
    other = generate(**SMALL, seed=1)
    assert not np.array_equal(small[1], other[1])
    for m in small[3]:
        assert not np.array_equal(small[3][m], other[3][m])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sizes_and_coverage(seed):
    users, items, labels, feats = generate(**SMALL, seed=seed)
    assert users.shape == items.shape == labels.shape == (SMALL["num_interactions"],)
    assert users.min() >= 0 and users.max() < SMALL["num_users"]
    assert items.min() >= 0 and items.max() < SMALL["num_items"]
    per_user = np.bincount(users, minlength=SMALL["num_users"])
    per_item = np.bincount(items, minlength=SMALL["num_items"])
    assert per_user.min() >= 5
    assert per_item.min() >= 1
    key = users * SMALL["num_items"] + items
    assert np.unique(key).size == key.size  # no duplicate pairs
    # labels are MMRec's per-user rule (seed + 1)
    np.testing.assert_array_equal(labels, mmrec_random_labels(users, seed + 1))


def test_min_per_user_is_respected():
    users, *_ = generate(**SMALL, min_per_user=8, seed=3)
    assert np.bincount(users, minlength=SMALL["num_users"]).min() >= 8


def test_default_feature_dims(small):
    feats = small[3]
    assert sorted(feats) == ["image", "text"]
    assert feats["image"].shape == (80, 64) and feats["text"].shape == (80, 48)
    assert all(f.dtype == np.float32 for f in feats.values())
    assert all(np.isfinite(f).all() for f in feats.values())


def test_custom_dims_and_noise():
    _, _, _, feats = generate(**SMALL, dims={"a": 3, "b": 17, "c": 5}, noise={"a": 0.1, "b": 1.0, "c": 3.0})
    assert {m: f.shape for m, f in feats.items()} == {"a": (80, 3), "b": (80, 17), "c": (80, 5)}


def test_argument_checks():
    with pytest.raises(ValueError, match="noise keys"):
        generate(**SMALL, dims={"image": 8}, noise={"text": 1.0})
    with pytest.raises(ValueError, match="min_per_user"):
        generate(**SMALL, min_per_user=2)
    with pytest.raises(ValueError, match="too small"):
        generate(num_users=100, num_items=50, num_interactions=400)
    with pytest.raises(ValueError, match="too large"):
        generate(num_users=20, num_items=20, num_interactions=201)


def item_cooccurrence(users, items, num_users, num_items):
    R = np.zeros((num_users, num_items))
    R[users, items] = 1.0
    C = R.T @ R
    np.fill_diagonal(C, 0.0)
    return C


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_image_is_more_informative_than_text(seed):
    """Feature neighbours should be items that users co-consume (same latent cluster).

    The image noise (0.6) is far below the text noise (2.5), so the items nearest by
    image cosine are co-consumed much more often than those nearest by text cosine,
    which in turn beat random pairs.
    """
    users, items, _, feats = generate(**SMALL, seed=seed)
    n_u, n_i = SMALL["num_users"], SMALL["num_items"]
    C = item_cooccurrence(users, items, n_u, n_i)
    score = {}
    for m, x in feats.items():
        _, idx = topk_cosine(torch.from_numpy(x), 5, loop=False)
        score[m] = C[np.arange(n_i)[:, None], idx.numpy()].mean()
    random_pair = C.sum() / (n_i * (n_i - 1))
    assert score["image"] > 1.3 * score["text"], score
    assert score["text"] > 1.3 * random_pair, (score, random_pair)
    assert score["image"] > 2.5 * random_pair, (score, random_pair)


def test_image_features_cluster_tightly():
    # with noise 0.6 on unit-variance centroids, an item's image nearest neighbour is
    # far more similar than the typical pair; with noise 2.5 (text) much less so
    _, _, _, feats = generate(**SMALL, seed=0)
    gap = {}
    for m, x in feats.items():
        xn = torch.nn.functional.normalize(torch.from_numpy(x), dim=1)
        sim = xn @ xn.t()
        sim.fill_diagonal_(float("nan"))
        nn = sim.nan_to_num(-2).max(1).values.mean()
        gap[m] = float(nn - sim.nanmean())
    assert gap["image"] > 0.5 and gap["image"] > 1.5 * gap["text"], gap


# --------------------------------------------------------------------------- load_synthetic


def test_load_synthetic_writes_and_reuses_cache(tmp_path, monkeypatch):
    data, split = load_synthetic(tmp_path, **SMALL, seed=0)
    folders = list((tmp_path / "datasets").iterdir())
    assert len(folders) == 1 and folders[0].name.startswith("synthetic-")
    folder = folders[0]
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["image_feat.npy", "params.json", "synthetic.inter", "text_feat.npy"]
    header = (folder / "synthetic.inter").read_text().splitlines()[0]
    assert header == "userID\titemID\trating\tx_label"

    # the loaded data is the generator's output
    users, items, labels, feats = generate(**SMALL, seed=0)
    assert set(map(tuple, data[UI].edge_index.t().tolist())) == {
        (u, i) for u, i, lab in zip(users.tolist(), items.tolist(), labels.tolist()) if lab == 0
    }
    np.testing.assert_array_equal(data[ITEM].x_image.numpy(), feats["image"])
    assert split.num_users == SMALL["num_users"] and split.num_items == SMALL["num_items"]
    assert sum(split.summary["rows"].values()) == SMALL["num_interactions"]

    mtimes = {p.name: os.stat(p).st_mtime_ns for p in folder.iterdir()}

    def boom(*a, **k):
        raise AssertionError("generate() called although the cache is complete")

    monkeypatch.setattr(synthetic_mod, "generate", boom)
    data2, split2 = load_synthetic(tmp_path, **SMALL, seed=0)
    assert {p.name: os.stat(p).st_mtime_ns for p in folder.iterdir()} == mtimes
    assert torch.equal(data2[UI].edge_index, data[UI].edge_index)
    assert torch.equal(split2.test, split.test)


def test_load_synthetic_keys_folder_by_parameters(tmp_path):
    load_synthetic(tmp_path, **SMALL, seed=0)
    load_synthetic(tmp_path, **SMALL, seed=1)
    load_synthetic(tmp_path, **SMALL, seed=0, dims={"image": 8, "text": 4})
    # loader-only arguments do not create a new folder
    load_synthetic(tmp_path, **SMALL, seed=0, split_seed=5, modalities=["image"])
    assert len(list((tmp_path / "datasets").iterdir())) == 3


def test_load_synthetic_regenerates_incomplete_folder(tmp_path):
    load_synthetic(tmp_path, **SMALL, seed=0)
    folder = next((tmp_path / "datasets").iterdir())
    (folder / "params.json").unlink()  # as after a crash before the marker was written
    (folder / "synthetic.inter").write_text("garbage")
    data, _ = load_synthetic(tmp_path, **SMALL, seed=0)
    assert (folder / "params.json").is_file()
    assert data[UI].edge_index.size(1) > 0


def test_load_synthetic_modalities_and_splits(tmp_path):
    data, _ = load_synthetic(tmp_path, **SMALL, seed=0, modalities=["text"])
    assert data.modalities == ["text"]
    _, cold = load_synthetic(tmp_path, **SMALL, seed=0, split="cold", filter_cold_users=False)
    assert not set(cold.test[1].tolist()) & set(cold.train[1].tolist())
