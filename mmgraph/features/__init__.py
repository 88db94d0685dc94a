"""Item features from raw content: text (sentence-transformers) and images (a pretrained CNN).

The heavy packages are optional (``pip install -e ".[features]"``) and imported only when an
extractor runs; a missing one raises :class:`MissingDependencyError` naming the package.
Command line: ``experiments/extract_features.py``; documentation: ``docs/data_preparation.md``.
"""

from mmgraph.features.common import (
    FeatureError,
    MissingDependencyError,
    fill_missing,
    item_keys_from_table,
    save_modality,
)
from mmgraph.features.image import find_images, image_features, load_image_encoder
from mmgraph.features.text import (
    DEFAULT_TEXT_MODEL,
    encode_texts,
    load_text_model,
    read_text_table,
    resolve_text_model,
    text_features,
)

__all__ = [
    "FeatureError",
    "MissingDependencyError",
    "DEFAULT_TEXT_MODEL",
    "fill_missing",
    "item_keys_from_table",
    "save_modality",
    "read_text_table",
    "resolve_text_model",
    "load_text_model",
    "encode_texts",
    "text_features",
    "find_images",
    "load_image_encoder",
    "image_features",
]
