"""Declarative graph specs, built once in the data layer and cached by content hash.

A model declares the graphs it needs with a :class:`GraphSpec`; :func:`build_graph`
adds them to the ``HeteroData``. kNN graphs are cached on disk under a key that
hashes the input tensors (features or train edges) and the spec fields that shape
them, so a sweep over model hyperparameters never rebuilds them and a change of
features never reuses a stale graph (MMRec keys its caches by ``k`` only).

Every edge type gets ``edge_index [2, E]``, normalised ``edge_weight [E]`` and
``adj_t``: the transposed adjacency as ``torch.sparse_csr`` for fast propagation.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from mmgraph.graph.knn import cointeraction_knn_graph, knn_graph, scatter_mean_features
from mmgraph.graph.norm import bipartite_norm, normalize, rw_selfloop_norm, to_adj_t
from mmgraph.typing import II, ITEM, IU, UI, USER, UU, item_knn_type
from mmgraph.utils.io import atomic_save

log = logging.getLogger(__name__)

_NORMS = ("sym", "row", "softmax", "none")


@dataclass(frozen=True)
class GraphSpec:
    """What graphs a model needs.

    Args:
        ui_norm: normalisation of the user–item graph: ``'sym'`` (LightGCN's
            ``D_u^{-1/2} R D_i^{-1/2}``), ``'rw_selfloop'`` (``D^{-1}(A + I)`` on the
            ``U + I`` graph, as LATTICE's and NGCF's reference code: edge weights
            ``1 / (deg(dst) + 1)`` and a per-node ``self_weight = 1 / (deg + 1)`` on
            ``data['user']`` and ``data['item']``) or ``'none'`` (weights 1). (default: ``'sym'``)
        item_knn_k: neighbours of the item–item kNN graphs; ``None`` builds none.
        item_knn_loop: the item itself is a candidate neighbour (MMRec parity). (default: ``True``)
        item_knn_weighted: keep cosine values (``True``) or binary weights. (default: ``False``)
        item_knn_norm: ``'sym'``, ``'row'``, ``'softmax'`` or ``'none'`` per modality graph
            (:func:`~mmgraph.graph.normalize`). (default: ``'sym'``)
        modality_weights: weights of the fused graph ``II = Σ_m w_m S_m``; ``None``
            gives equal weights over the dataset's modalities. Modalities with weight
            0 are skipped.
        reference_image_weight: the reference frameworks' ``mm_image_weight`` (their "image slot"
            share), mapped onto the dataset's modalities by :func:`reference_modality_weights`
            when ``modality_weights`` is ``None``. (default: ``None``)
        item_knn_modalities: also keep each per-modality graph as ``('item', 'knn_<m>', 'item')``.
        user_knn_k: neighbours of the user–user kNN graph ``UU``; ``None`` builds none.
        user_knn_source: ``'interactions'`` (co-interaction counts, DualGNN) or a
            modality name (cosine of the mean features of the user's train items).
        user_knn_weighted: keep counts/cosines (``True``) or binary weights.
        user_knn_loop: the user itself is a candidate neighbour (modality sources only;
            the co-interaction graph always excludes it). (default: ``False``)
        user_knn_norm: normalisation of ``UU``: ``'sym'``, ``'row'``, ``'softmax'`` (of each
            user's positive neighbour weights: DualGNN's softmax of co-interaction counts) or
            ``'none'``. (default: ``'sym'``)
        block_size: rows per kNN block (memory knob; not part of the cache key).
        knn_precision: ``'fp32'`` or ``'bf16'`` (bf16 candidates re-ranked and certified in fp32, the
            same neighbours; :func:`~mmgraph.graph.topk_cosine`) for the feature kNN graphs. (default: ``'fp32'``)
    """

    ui_norm: str = "sym"
    item_knn_k: int | None = None
    item_knn_loop: bool = True
    item_knn_weighted: bool = False
    item_knn_norm: str = "sym"
    modality_weights: dict[str, float] | None = None
    reference_image_weight: float | None = None
    item_knn_modalities: bool = False
    user_knn_k: int | None = None
    user_knn_source: str = "interactions"
    user_knn_weighted: bool = True
    user_knn_norm: str = "sym"
    user_knn_loop: bool = False
    block_size: int | None = field(default=None, compare=False)
    knn_precision: str = field(default="fp32", compare=False)

    def __post_init__(self) -> None:
        if self.ui_norm not in ("sym", "rw_selfloop", "none"):
            raise ValueError(
                f"GraphSpec.ui_norm must be 'sym', 'rw_selfloop' or 'none', got {self.ui_norm!r}"
            )
        for name in ("item_knn_norm", "user_knn_norm"):
            if getattr(self, name) not in _NORMS:
                raise ValueError(f"GraphSpec.{name} must be one of {_NORMS}, got {getattr(self, name)!r}")
        if self.knn_precision not in ("fp32", "bf16"):
            raise ValueError(f"GraphSpec.knn_precision must be 'fp32' or 'bf16', got {self.knn_precision!r}")
        for name in ("item_knn_k", "user_knn_k"):
            v = getattr(self, name)
            if v is not None and int(v) <= 0:
                raise ValueError(f"GraphSpec.{name} must be positive or None, got {v}")

    def for_modalities(self, modalities: list[str]) -> GraphSpec:
        """This spec with ``reference_image_weight`` turned into ``modality_weights`` for ``modalities``."""
        if self.reference_image_weight is None or self.modality_weights is not None:
            return self
        weights = reference_modality_weights(list(modalities), float(self.reference_image_weight))
        return replace(self, modality_weights=weights, reference_image_weight=None)

    def key(self, *fields_: str) -> dict:
        """The named fields as a plain dict (for cache keys)."""
        d = asdict(self)
        return {f: d[f] for f in fields_}


def reference_modality_weights(modalities: list[str], image_weight: float) -> dict[str, float]:
    """Map the reference frameworks' two slots (image share ``image_weight``, text ``1 − image_weight``).

    The rule, for a dataset's modalities in their order:

    * the **image slot** is ``image`` when present, otherwise the first modality that is not ``text``;
    * the **text slot** is the other one (``text`` when present) — the slots of
      :func:`mmgraph.models.mmgcn.mmrec_modality_order`, so the order in which a dataset lists its
      modalities does not matter (``[audio, image]`` → image 0.1, audio 0.9, as ``[image, audio]``);
    * with exactly two modalities the weights are ``{image slot: w, text slot: 1 − w}``
      (lfm2k ``[text, audio]`` → audio 0.1, text 0.9; tiktok ``[image, audio]`` → image 0.1,
      audio 0.9; MMRec's Amazon sets → image 0.1, text 0.9);
    * with one modality, or three or more, there is no two-slot reading: equal weights, logged.
    """
    if not modalities:
        raise ValueError("reference_modality_weights: the dataset has no modality")
    if len(modalities) != 2:
        log.info("reference image/text weights need two modalities, the dataset has %s: equal weights",
                 modalities)
        return {m: 1.0 / len(modalities) for m in modalities}
    image, text = reference_slot_order(modalities)
    return {image: image_weight, text: 1.0 - image_weight}


def reference_slot_order(modalities: list[str]) -> list[str]:
    """``[image slot, text slot]`` of two modalities by the rule of :func:`reference_modality_weights`
    (any other number of modalities: the dataset's order)."""
    if len(modalities) != 2:
        return list(modalities)
    image = "image" if "image" in modalities else next(m for m in modalities if m != "text")
    text = next(m for m in modalities if m != image)
    return [image, text]


def tensor_digest(*tensors: Tensor) -> str:
    """Content hash of tensors (dtype, shape and bytes)."""
    h = hashlib.blake2b(digest_size=16)
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _cached(
    cache_dir: Path | None, kind: str, key: dict, build: Callable[[], tuple[Tensor, Tensor]]
) -> tuple[Tensor, Tensor]:
    digest = hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]
    path = cache_dir / "graphs" / f"{kind}-{digest}.pt" if cache_dir is not None else None
    if path is not None and path.is_file():
        cached = _load_cached(path, json.dumps(key, default=str))
        if cached is not None:
            log.info("graph %s loaded from cache %s", kind, path)
            return cached
    t0 = time.perf_counter()
    edge_index, edge_weight = build()
    log.info("graph %s built in %.2fs (%d edges)", kind, time.perf_counter() - t0, edge_index.size(1))
    if path is not None:
        atomic_save({"edge_index": edge_index, "edge_weight": edge_weight, "key": json.dumps(key, default=str)}, path)
    return edge_index, edge_weight


def _load_cached(path: Path, key: str) -> tuple[Tensor, Tensor] | None:
    """A cache entry, verified (readable, the stored key, consistent shapes); ``None`` (logged) when damaged."""
    try:
        obj = torch.load(path, weights_only=True)
        edge_index, edge_weight = obj["edge_index"], obj["edge_weight"]
        ok = (obj.get("key") == key and edge_index.dim() == 2 and edge_index.size(0) == 2
              and edge_weight.shape == (edge_index.size(1),))
    except Exception as e:  # noqa: BLE001 - truncated or foreign file: rebuild it
        log.warning("graph cache %s is damaged (%s): rebuilding it", path, type(e).__name__)
        return None
    if not ok:
        log.warning("graph cache %s does not hold the expected graph (key or shapes differ): rebuilding it", path)
        return None
    return edge_index, edge_weight


def _set(data: HeteroData, et, edge_index: Tensor, edge_weight: Tensor, n_src: int, n_dst: int) -> None:
    data[et].edge_index = edge_index
    data[et].edge_weight = edge_weight
    data[et].adj_t = to_adj_t(edge_index, edge_weight, n_src, n_dst)


def _coalesce_sum(parts: list[tuple[Tensor, Tensor]], n: int) -> tuple[Tensor, Tensor]:
    ei = torch.cat([p[0] for p in parts], 1)
    w = torch.cat([p[1] for p in parts])
    a = torch.sparse_coo_tensor(ei, w, (n, n)).coalesce()
    return a.indices(), a.values()


def build_graph(data: HeteroData, spec: GraphSpec | None, cache_dir: str | Path | None = None) -> HeteroData:
    """Add the graphs of ``spec`` to a shallow copy of ``data``.

    ``data`` must hold the train edges ``UI``/``IU`` (as the loaders produce them);
    validation and test interactions are not in ``data`` and so never enter a graph.

    Args:
        data: the loaded dataset.
        spec: what to build (``None``: the user–item graph with ``'sym'`` weights).
        cache_dir: folder of the on-disk cache (``None`` disables caching).

    Returns:
        A new ``HeteroData`` sharing the input tensors, with the graph edge types set.
    """
    spec = spec or GraphSpec()
    cache = Path(cache_dir).expanduser() if cache_dir is not None else None
    out = copy.copy(data)
    U, I = data[USER].num_nodes, data[ITEM].num_nodes
    ei = data[UI].edge_index
    for nt in (USER, ITEM):
        if "self_weight" in out[nt]:  # only 'rw_selfloop' has self-loop weights
            del out[nt]["self_weight"]
    if spec.ui_norm == "rw_selfloop":
        w, self_i = rw_selfloop_norm(ei, I)  # user -> item: 1 / (deg_i + 1)
        w_rev, self_u = rw_selfloop_norm(ei.flip(0), U)  # item -> user: 1 / (deg_u + 1)
        out[USER].self_weight = self_u
        out[ITEM].self_weight = self_i
    elif spec.ui_norm == "sym":
        w = w_rev = bipartite_norm(ei, U, I)
    else:
        w = w_rev = torch.ones(ei.size(1))
    _set(out, UI, ei, w, U, I)
    _set(out, IU, ei.flip(0), w_rev, I, U)

    modalities = [k[2:] for k in data[ITEM].keys() if k.startswith("x_")]
    if spec.item_knn_k is not None:
        weights = spec.for_modalities(modalities).modality_weights
        if weights is None:
            if not modalities:
                raise ValueError("GraphSpec asks for an item kNN graph but the dataset has no modality")
            weights = {m: 1.0 / len(modalities) for m in modalities}
        missing = [m for m in weights if m not in modalities]
        if missing:
            raise ValueError(
                f"GraphSpec.modality_weights names {missing}, not in the dataset's modalities {modalities}"
            )
        parts = []
        for m, wm in weights.items():
            x = data[ITEM][f"x_{m}"]
            key = {"x": tensor_digest(x), **spec.key("item_knn_k", "item_knn_loop", "item_knn_weighted")}
            e, ew = _cached(
                cache, f"item_knn_{m}", key,
                lambda x=x: knn_graph(x, int(spec.item_knn_k), loop=spec.item_knn_loop,
                                      weighted=spec.item_knn_weighted, batch_size=spec.block_size,
                                      precision=spec.knn_precision),
            )
            ew = normalize(e, I, ew, spec.item_knn_norm)
            if spec.item_knn_modalities:
                _set(out, item_knn_type(m), e, ew, I, I)
            if wm:
                parts.append((e, float(wm) * ew))
        if parts:
            e, ew = _coalesce_sum(parts, I)
            _set(out, II, e, ew, I, I)

    if spec.user_knn_k is not None:
        src = spec.user_knn_source
        if src == "interactions":
            key = {"train": tensor_digest(ei), "U": U, "I": I, **spec.key("user_knn_k", "user_knn_weighted")}
            e, ew = _cached(
                cache, "user_knn_interactions", key,
                lambda: cointeraction_knn_graph(ei, U, I, int(spec.user_knn_k),
                                                weighted=spec.user_knn_weighted, batch_size=spec.block_size),
            )
        else:
            if src not in modalities:
                raise ValueError(
                    f"GraphSpec.user_knn_source={src!r} is neither 'interactions' nor a modality of "
                    f"the dataset {modalities}"
                )
            x = data[ITEM][f"x_{src}"]
            key = {"train": tensor_digest(ei), "x": tensor_digest(x), "U": U,
                   **spec.key("user_knn_k", "user_knn_weighted")}
            if spec.user_knn_loop:  # only then: keys of the existing loop-free graphs are unchanged
                key["loop"] = True
            e, ew = _cached(
                cache, f"user_knn_{src}", key,
                lambda: knn_graph(scatter_mean_features(ei, x, U), int(spec.user_knn_k), loop=spec.user_knn_loop,
                                  weighted=spec.user_knn_weighted, batch_size=spec.block_size,
                                  precision=spec.knn_precision),
            )
        _set(out, UU, e, normalize(e, U, ew, spec.user_knn_norm), U, U)
    return out
