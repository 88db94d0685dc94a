"""Write ``<modality>_feat.npy`` / ``<modality>_mask.npy`` for a list of items from a text table
and/or an image folder (what ``experiments/extract_features.py`` and the dataset preparation run)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmgraph.features.common import FeatureError, save_modality
from mmgraph.features.image import (
    DEFAULT_IMAGE_MODEL,
    find_images,
    image_features,
    load_image_encoder,
)
from mmgraph.features.text import (
    DEFAULT_TEXT_MODEL,
    read_text_table,
    resolve_text_model,
    text_features,
)

log = logging.getLogger(__name__)


def keys_from_ids(ids: Sequence[str], source: str, num_items: int | None = None) -> list[str]:
    """Item keys ``'0'..'n-1'`` when the keys of ``source`` are the item ids themselves.

    ``n`` is ``num_items`` or ``max(id) + 1``; a non-integer key is an error.
    """
    ints = []
    for k in ids:
        if not k.isdigit():
            raise FeatureError(f"{source}: key {k!r} is not an item id; without an item map (--items) the keys "
                               "must be the integer item ids 0..n-1")
        ints.append(int(k))
    n = num_items if num_items is not None else (max(ints) + 1 if ints else 0)
    too_big = [i for i in ints if i >= n]
    if too_big:
        raise FeatureError(f"{source}: item id {too_big[0]} >= num_items={n}")
    if n == 0:
        raise FeatureError(f"{source}: no items")
    return [str(i) for i in range(n)]


def extract_features(
    out_dir: str | Path,
    keys: Sequence[str] | None = None,
    *,
    num_items: int | None = None,
    text_table: str | Path | None = None,
    text_id_col: str | None = None,
    text_cols: Sequence[str] | None = None,
    text_sep: str | None = None,
    text_model: str = DEFAULT_TEXT_MODEL,
    text_batch_size: int = 64,
    normalize: bool = False,
    text_modality: str = "text",
    image_folder: str | Path | None = None,
    image_list: str | Path | None = None,
    image_model: str = DEFAULT_IMAGE_MODEL,
    image_weights: str | Path | None = None,
    image_batch_size: int = 32,
    workers: int = 0,
    image_modality: str = "image",
    device: str | None = None,
    fill: str = "mean",
    progress: bool = True,
) -> dict[str, dict[str, Any]]:
    """Extract the requested modalities into ``out_dir``.

    Args:
        keys: item keys in row order (row ``i`` = item ``keys[i]``); ``None``: the keys of the
            text table (else the image file names) are the item ids ``0..n-1`` themselves
            (``n = num_items`` or the largest id + 1).

    Returns:
        ``{modality: {'dim', 'missing', 'rows', 'features', 'mask'}}``.
    """
    if text_table is None and image_folder is None and image_list is None:
        raise FeatureError("nothing to extract: give a text table and/or an image folder or list")
    texts = read_text_table(text_table, text_id_col, text_cols, text_sep) if text_table is not None else None
    if keys is None:
        if texts is not None:
            keys = keys_from_ids(list(texts), str(text_table), num_items)
        elif image_folder is not None:
            stems = [p.stem for p in Path(image_folder).iterdir() if p.is_file() and not p.name.startswith(".")]
            keys = keys_from_ids(stems, str(image_folder), num_items)
        else:
            raise FeatureError("an image list needs the item keys (--items or --num-items)")
    keys = [str(k) for k in keys]
    done: dict[str, dict[str, Any]] = {}
    if texts is not None:
        unknown = len(set(texts) - set(keys))
        if unknown:
            log.info("%s: %d row(s) belong to no listed item (ignored)", text_table, unknown)
        feats, mask = text_features(keys, texts, text_model, batch_size=text_batch_size, device=device,
                                    normalize=normalize, fill=fill, progress=progress)
        paths = save_modality(out_dir, text_modality, feats, mask, info={
            "source": str(text_table), "model": text_model, "model_path": resolve_text_model(text_model),
            "normalize": normalize, "fill": fill})
        done[text_modality] = {"dim": feats.shape[1], "rows": feats.shape[0], "missing": int((~mask).sum()),
                               **{k: paths[k] for k in ("features", "mask")}}
    if image_folder is not None or image_list is not None:
        paths_by_key = find_images(keys, image_folder, image_list)
        encoder = load_image_encoder(image_model, image_weights, device)
        feats, mask = image_features(keys, paths_by_key, encoder, batch_size=image_batch_size, workers=workers,
                                     fill=fill, progress=progress)
        paths = save_modality(out_dir, image_modality, feats, mask, info={
            "source": str(image_list or image_folder), "model": encoder.name,
            "weights": str(image_weights) if image_weights else "packaged", "fill": fill})
        done[image_modality] = {"dim": feats.shape[1], "rows": feats.shape[0], "missing": int((~mask).sum()),
                                **{k: paths[k] for k in ("features", "mask")}}
    return done
