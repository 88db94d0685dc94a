"""The embedded default dataset: a seeded generator with planted structure.

Latent clusters drive both interactions and item features:

* every item belongs to one of ``num_clusters`` clusters and has a popularity
  drawn from a log-normal (a long tail, as in real data);
* every user prefers a few clusters (a sparse Dirichlet mixture); each interaction
  draws a cluster from the user's mixture, then an item of that cluster with
  probability proportional to its popularity; users' activity is skewed too;
* item features of each modality are the cluster's centroid plus Gaussian noise;
  modalities differ in informativeness through ``noise`` (the default ``image`` is
  sharp, ``text`` is noisy).

Because features reveal the cluster, models that use them can place items that
have few or no training interactions (cold start) where ID-only models cannot.

The generated data is written in MMRec's format (``<name>.inter`` with ``x_label``
from MMRec's per-user random rule, and ``<modality>_feat.npy``) into a cache folder
keyed by the generator's parameters, and read back by the real loader.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import HeteroData

from mmgraph.data.mmrec import load_mmrec
from mmgraph.data.split import RecSplit, mmrec_random_labels
from mmgraph.utils.io import atomic_save_npy, atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)


def random_features(num_items: int, dim: int, seed: int = 0) -> np.ndarray:
    """Seeded standard-normal features ``[num_items, dim]`` float32 (scale tests)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(num_items, dim, generator=g).numpy()


def generate(
    num_users: int = 2000,
    num_items: int = 1000,
    num_interactions: int = 40000,
    num_clusters: int = 40,
    clusters_per_user: float = 0.1,
    popularity_sigma: float = 1.0,
    activity_sigma: float = 0.8,
    min_per_user: int = 5,
    dims: dict[str, int] | None = None,
    noise: dict[str, float] | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Generate interactions, MMRec split labels and features.

    Args:
        num_users: users; every user gets at least ``min_per_user`` interactions.
        num_items: items; every item gets at least one interaction.
        num_interactions: exact number of (user, item) pairs.
        num_clusters: latent clusters.
        clusters_per_user: Dirichlet concentration of the users' cluster mixtures
            (small = users focus on few clusters).
        popularity_sigma: log-normal sigma of item popularity.
        activity_sigma: log-normal sigma of user activity.
        min_per_user: minimum interactions per user (>= 3 for the split rule).
        dims: feature size per modality (default ``{'image': 64, 'text': 48}``).
        noise: feature noise per modality relative to the unit-variance centroid
            (default ``{'image': 0.6, 'text': 2.5}``).
        seed: RNG seed; the output is a deterministic function of all arguments.

    Returns:
        ``(users, items, x_label, features)`` with ``features[m]`` of shape ``[I, F_m]``.
    """
    dims = dict(dims or {"image": 64, "text": 48})
    noise = dict(noise or {"image": 0.6, "text": 2.5})
    if set(noise) != set(dims):
        raise ValueError(f"noise keys {sorted(noise)} must equal dims keys {sorted(dims)}")
    if min_per_user < 3:
        raise ValueError("min_per_user must be >= 3 (MMRec's split gives 1 valid + 1 test)")
    if num_interactions < num_users * min_per_user or num_interactions < num_items:
        raise ValueError("num_interactions too small for num_users * min_per_user and num_items")
    if num_interactions > 0.5 * num_users * num_items:
        raise ValueError("num_interactions too large: the generator targets sparse data")
    rng = np.random.default_rng(seed)
    C = num_clusters

    item_cluster = rng.integers(0, C, size=num_items)
    pop = rng.lognormal(0.0, popularity_sigma, size=num_items)
    by_cluster = np.argsort(item_cluster, kind="stable")  # items grouped by cluster
    cum = np.cumsum(pop[by_cluster])
    sizes = np.bincount(item_cluster, minlength=C)
    ends = np.cumsum(sizes)
    starts = ends - sizes
    base = np.where(starts > 0, cum[np.maximum(starts - 1, 0)], 0.0)
    mass = np.where(sizes > 0, cum[np.maximum(ends - 1, 0)] - base, 0.0)

    prefs = rng.dirichlet(np.full(C, clusters_per_user), size=num_users)
    prefs = 0.98 * prefs + 0.02 / C  # a floor: every cluster stays reachable
    prefs[:, sizes == 0] = 0.0
    prefs /= prefs.sum(1, keepdims=True)
    activity = rng.lognormal(0.0, activity_sigma, size=num_users)
    extra = rng.multinomial(num_interactions - num_users * min_per_user, activity / activity.sum())
    n_u = np.minimum(min_per_user + extra, num_items // 2)
    short = num_interactions - n_u.sum()  # rare: caps removed some interactions
    while short > 0:
        room = np.nonzero(n_u < num_items // 2)[0]
        add = rng.choice(room, size=min(short, room.size), replace=False)
        n_u[add] += 1
        short = num_interactions - n_u.sum()

    # Inverse-CDF sampling of a cluster per draw without a [draws, C] matrix: row u of the
    # users' cumulative preferences is shifted by u, so one flat array is sorted.
    flat_cdf = (np.cumsum(prefs, axis=1) / prefs.sum(1, keepdims=True) + np.arange(num_users)[:, None]).ravel()

    def draw(user_ids: np.ndarray) -> np.ndarray:
        r = user_ids + rng.random(user_ids.size) * (1 - 1e-12)
        c = np.searchsorted(flat_cdf, r, side="right") - user_ids * C
        c = np.clip(c, 0, C - 1)
        r = base[c] + rng.random(user_ids.size) * mass[c]
        pos = np.minimum(np.searchsorted(cum, r, side="right"), ends[c] - 1)
        return by_cluster[np.maximum(pos, starts[c])]

    # Oversample, deduplicate, keep the first n_u distinct items per user; top up the rest.
    need = n_u.copy()
    pairs = np.empty(0, dtype=np.int64)
    for attempt in range(100):
        if need.sum() == 0:
            break
        users_rep = np.repeat(np.arange(num_users), np.ceil(need * 1.5).astype(np.int64) + 2)
        # A user focused on a small cluster may exhaust it: after 20 rounds, top up uniformly.
        drawn = draw(users_rep) if attempt < 20 else rng.integers(0, num_items, users_rep.size)
        key = users_rep * num_items + drawn
        key = np.setdiff1d(np.unique(key), pairs, assume_unique=True)
        u = key // num_items
        first = np.searchsorted(u, np.arange(num_users))
        rank = np.arange(key.size) - first[u]
        key = key[rank < need[u]]
        pairs = np.union1d(pairs, key)
        need = n_u - np.bincount(pairs // num_items, minlength=num_users)
    if need.sum() != 0:
        raise RuntimeError("synthetic generator could not fill users' interactions")

    # Every item must occur: give each unseen item to a user devoted to its cluster, replacing
    # that user's most popular interaction (counts unchanged). Vectorised, in rounds of one
    # replacement per user.
    users, items = pairs // num_items, pairs % num_items
    dominant = prefs.argmax(1)
    by_dom = np.argsort(dominant, kind="stable")
    dom_start = np.searchsorted(dominant[by_dom], np.arange(C))
    dom_size = np.bincount(dominant, minlength=C)
    for _ in range(1000):
        seen = np.bincount(items, minlength=num_items)
        missing = np.nonzero(seen == 0)[0]
        if missing.size == 0:
            break
        c = item_cluster[missing]
        pick = dom_start[c] + (rng.random(missing.size) * np.maximum(dom_size[c], 1)).astype(np.int64)
        fan = np.where(dom_size[c] > 0, by_dom[np.minimum(pick, num_users - 1)],
                       rng.integers(0, num_users, missing.size))
        fan, first = np.unique(fan, return_index=True)  # one replacement per user this round
        missing = missing[first]
        order = np.lexsort((-seen[items], users))  # per user, most popular item first
        row_of_user = order[np.searchsorted(users[order], fan)]
        ok = seen[items[row_of_user]] > 1
        items[row_of_user[ok]] = missing[ok]
    if (np.bincount(items, minlength=num_items) == 0).any():
        raise RuntimeError("synthetic generator left items without interactions")
    order = np.lexsort((items, users))
    users, items = users[order], items[order]
    labels = mmrec_random_labels(users, seed + 1)

    features: dict[str, np.ndarray] = {}
    for m, dim in dims.items():
        centroids = rng.standard_normal((C, dim), dtype=np.float32)
        feats = rng.standard_normal((num_items, dim), dtype=np.float32)  # float32 throughout:
        feats *= noise[m]  # 1 GB at Electronics size (63,001 x 4096), no float64 copies
        feats += centroids[item_cluster]
        features[m] = feats
    return users, items, labels, features


def write_mmrec(folder: str | Path, name: str, users, items, labels, features) -> Path:
    """Write interactions and features in MMRec's format into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for m, f in features.items():
        atomic_save_npy(folder / f"{m}_feat.npy", f)
    body = "\n".join(f"{u}\t{i}\t1\t{lab}" for u, i, lab in zip(users.tolist(), items.tolist(), labels.tolist()))
    atomic_write_text(folder / f"{name}.inter", "userID\titemID\trating\tx_label\n" + body + "\n")
    return folder


def load_synthetic(
    cache_dir: str | Path,
    name: str = "synthetic",
    num_users: int = 2000,
    num_items: int = 1000,
    num_interactions: int = 40000,
    num_clusters: int = 40,
    clusters_per_user: float = 0.1,
    popularity_sigma: float = 1.0,
    activity_sigma: float = 0.8,
    dims: dict[str, int] | None = None,
    noise: dict[str, float] | None = None,
    seed: int = 0,
    modalities: list[str] | None = None,
    split: str = "label",
    split_seed: int = 123,
    cold_ratio: float = 0.2,
    filter_cold_users: bool = True,
) -> tuple[HeteroData, RecSplit]:
    """Generate (once, cached) and load the synthetic dataset through the MMRec loader.

    The folder is ``<cache_dir>/datasets/<name>-<hash of the generator arguments>/``.
    """
    params = dict(
        num_users=num_users, num_items=num_items, num_interactions=num_interactions,
        num_clusters=num_clusters, clusters_per_user=clusters_per_user,
        popularity_sigma=popularity_sigma, activity_sigma=activity_sigma,
        dims=dict(dims) if dims else None, noise=dict(noise) if noise else None, seed=seed,
    )
    digest = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    root = Path(cache_dir).expanduser() / "datasets"
    folder = root / f"{name}-{digest}"
    done = folder / "params.json"
    if not done.is_file():
        log.info("generating synthetic dataset %s into %s", name, folder)
        users, items, labels, features = generate(**params)
        write_mmrec(folder, name, users, items, labels, features)
        atomic_write_json(done, params)  # written last: marks a complete folder
    return load_mmrec(
        root, name, folder=folder.name, modalities=modalities, split=split, split_seed=split_seed,
        cold_ratio=cold_ratio, filter_cold_users=filter_cold_users,
    )
