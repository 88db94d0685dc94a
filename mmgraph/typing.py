"""Shared constants and small types.

Edge types are constants: nobody types string triples inline.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

USER = "user"
ITEM = "item"

#: Train user–item interactions (messages flow user -> item).
UI = (USER, "interacts", ITEM)
#: Their reverse (messages flow item -> user), PyG ``ToUndirected`` naming.
IU = (ITEM, "rev_interacts", USER)
#: Fused multimodal item–item kNN graph.
II = (ITEM, "knn", ITEM)
#: User–user kNN graph.
UU = (USER, "knn", USER)


def item_knn_type(modality: str) -> tuple[str, str, str]:
    """Edge type of the per-modality item–item kNN graph, e.g. ``('item', 'knn_image', 'item')``."""
    return (ITEM, f"knn_{modality}", ITEM)


class BPRBatch(NamedTuple):
    """One training batch of (user, positive item, negative item) triples, each ``[B]``."""

    users: Tensor
    pos_items: Tensor
    neg_items: Tensor

    def to(self, device) -> BPRBatch:  # noqa: D102
        return BPRBatch(*(t.to(device, non_blocking=True) for t in self))
