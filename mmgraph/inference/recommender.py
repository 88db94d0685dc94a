"""From a trained run to recommendations: :class:`Recommender`.

``Recommender.from_run(run_dir)`` rebuilds the run's data and model from its saved configuration,
loads ``best.pt`` (the best-validation state, the one the run was tested on), runs **one** forward
in evaluation mode and keeps the final user and item embeddings. Every query after that is a few
rows of the score matrix: ``model.score(user_emb[users], item_emb)``, the same function the
evaluator ranks with, so models with a non-dot-product score and models whose evaluation forward
rebuilds graphs (LATTICE, ULF, CRANE) are served exactly as they were tested.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from mmgraph.data.split import RecSplit, to_csr
from mmgraph.evaluation.ranking import FullRankingEvaluator
from mmgraph.models.base import GraphRecommender, dataset_kwargs, prepare_data

log = logging.getLogger(__name__)

Exclude = Literal["seen", "train", "none"]
EXCLUDE = ("seen", "train", "none")
INDEXES = ("exact", "mips", "ivf", "approx")


def _ivf_flat_index(emb: Tensor, num_cells: int, num_cells_to_visit: int):
    """PyG ``KNNIndex`` over a faiss ``IndexIVFFlat`` (inner product): the items are clustered into
    ``num_cells`` cells; a query scores exactly (no compression) the items of its
    ``num_cells_to_visit`` best cells."""
    from torch_geometric.nn.pool.knn import KNNIndex

    class IVFFlatMIPSIndex(KNNIndex):
        def __init__(self) -> None:
            super().__init__(index_factory=None, emb=None)

        def _create_index(self, channels: int):
            import faiss

            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(channels), channels, num_cells, faiss.METRIC_INNER_PRODUCT)
            index.nprobe = num_cells_to_visit
            return index

    idx = IVFFlatMIPSIndex()
    idx.add(emb)
    return idx


class InferenceError(ValueError):
    """A run folder that cannot be served, or a bad query (unknown user or item, bad ``k``)."""


@dataclass
class Recommendations:
    """Top-``k`` lists: ``users [n]``, ``items [n, k]`` and ``scores [n, k]`` in rank order.

    A list shorter than ``k`` (a user who has seen almost every item) is padded with item ``-1`` and
    score ``-inf``.
    """

    users: Tensor
    items: Tensor
    scores: Tensor


def load_run_config(run_dir: str | Path) -> DictConfig:
    """The configuration a run was trained with: ``.hydra/config.yaml``, else ``metrics.json``'s."""
    run_dir = Path(run_dir)
    hydra_cfg = run_dir / ".hydra" / "config.yaml"
    if hydra_cfg.is_file():
        return OmegaConf.load(hydra_cfg)
    metrics = run_dir / "metrics.json"
    if metrics.is_file():
        cfg = json.loads(metrics.read_text()).get("config")
        if isinstance(cfg, dict):
            return OmegaConf.create(cfg)
    raise InferenceError(f"{run_dir}: no .hydra/config.yaml or metrics.json with a config: is this a run folder "
                         "written by experiments/train.py?")


def _device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class Recommender:
    """Recommendations from a trained model's final embeddings.

    Args:
        model: the trained model (its weights already loaded).
        data: the graph-carrying ``HeteroData`` it was trained on.
        split: the interactions of each stage (for ``exclude``).
        device: where the embeddings live and scores are computed.
        block_size: users scored per block (a ``[block, I]`` score matrix); on a CPU capped so that a
            block stays within 64 MB (measured at Electronics size, 20,000 users: blocks of 256 users
            3,905 users/s, of 4,096 users 2,602 users/s, 2 threads).
        item_ids / user_ids: raw ids of the dataset (``i_id_mapping.csv`` / ``u_id_mapping.csv``)
            when the dataset folder has them, indexed by the model's ids.
    """

    def __init__(self, model: GraphRecommender, data, split: RecSplit, device: str | torch.device = "cpu",
                 block_size: int = 4096, user_ids: np.ndarray | None = None,
                 item_ids: np.ndarray | None = None) -> None:
        self.device = _device(device)
        self.model = model.to(self.device).eval()
        self.split = split
        self.block_size = block_size if self.device.type != "cpu" else \
            max(1, min(block_size, int(64 * 2**20 / 4) // max(1, split.num_items)))
        self.user_ids, self.item_ids = user_ids, item_ids
        with torch.no_grad():
            emb = self.model(data.to(self.device) if data is not None else None)  # the one forward
        self._user_emb, self._item_emb = emb["user"].detach(), emb["item"].detach()
        dot = getattr(self.model.score, "__func__", None) is GraphRecommender.score
        self.dot_product = dot
        self._csr: dict[str, tuple[Tensor, Tensor]] = {}
        self._indexes: dict[str, object] = {}

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_run(cls, run_dir: str | Path, device: str = "auto", data_root: str | Path | None = None,
                 checkpoint: str = "best.pt", cache_dir: str | Path | None = None, **kwargs) -> Recommender:
        """Rebuild the run's data and model, load ``checkpoint`` (default: the best-validation state).

        Args:
            run_dir: a run folder of ``experiments/train.py``.
            device: ``'auto'`` (CUDA when available), ``'cpu'``, ``'cuda:0'``, ...
            data_root: where the datasets are, when not where the run read them.
            checkpoint: ``best.pt`` (tested state) or ``last.pt`` (latest epoch).
            cache_dir: graph cache (default: the run's).
        """
        from mmgraph.training.run import load_dataset
        from mmgraph.training.trainer import load_checkpoint

        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise InferenceError(f"{run_dir} is not a folder (give the run folder that holds best.pt)")
        ckpt_path = run_dir / checkpoint
        if not ckpt_path.is_file():
            raise InferenceError(f"{ckpt_path} does not exist: the run has not saved a model yet (best.pt is "
                                 "written at the first validation), or the checkpoints were not copied")
        cfg = load_run_config(run_dir)
        if data_root is not None:
            cfg.data_root = str(data_root)
            if "root" in cfg.dataset:
                cfg.dataset.root = str(data_root)
        data, split = load_dataset(cfg.dataset)
        model_cls = get_class(cfg.model._target_)
        model = instantiate(cfg.model, **dataset_kwargs(model_cls, data), _convert_="all")
        data = prepare_data(model, data, cache_dir if cache_dir is not None else cfg.get("cache_dir"))
        model.load_state_dict(load_checkpoint(ckpt_path)["model"])
        user_ids, item_ids = _id_maps(cfg)
        log.info("loaded %s from %s (%d users x %d items)", type(model).__name__, ckpt_path, split.num_users,
                 split.num_items)
        return cls(model, data, split, device=device, user_ids=user_ids, item_ids=item_ids, **kwargs)

    # ----------------------------------------------------------------- embeddings
    @property
    def num_users(self) -> int:
        return self.split.num_users

    @property
    def num_items(self) -> int:
        return self.split.num_items

    def user_embeddings(self) -> Tensor:
        """Final user embeddings ``[U, d]`` (what ``score`` consumes)."""
        return self._user_emb

    def item_embeddings(self) -> Tensor:
        """Final item embeddings ``[I, d]``."""
        return self._item_emb

    # ----------------------------------------------------------------- queries
    def _check_ids(self, ids: Tensor, n: int, what: str) -> Tensor:
        if ids.dtype.is_floating_point or ids.dtype == torch.bool:
            raise InferenceError(f"{what} ids must be integers, got {ids.dtype}")
        ids = ids.long().reshape(-1)
        bad = (ids < 0) | (ids >= n)
        if bool(bad.any()):
            raise InferenceError(f"unknown {what} id {int(ids[bad][0])}: ids run from 0 to {n - 1}")
        return ids.to(self.device)

    def _check_k(self, k: int, n: int) -> int:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
            raise InferenceError(f"k must be a positive integer, got {k!r}")
        if k > n:
            raise InferenceError(f"k={k} exceeds the number of items ({n})")
        return int(k)

    def exclusion(self, exclude: Exclude) -> list[tuple[Tensor, Tensor]]:
        """CSR views ``(indptr, items)`` of the interactions ``exclude`` masks."""
        if exclude not in EXCLUDE:
            raise InferenceError(f"exclude must be one of {EXCLUDE}, got {exclude!r}")
        if exclude == "none":
            return []
        if exclude not in self._csr:
            if exclude == "train":
                ptr, cols = self.split.csr("train")
            else:  # every interaction of the file
                e = torch.cat([self.split.train, self.split.valid, self.split.test], 1)
                ptr, cols = to_csr(e[0], e[1], self.split.num_users)
            self._csr[exclude] = (ptr.to(self.device), cols.to(self.device))
        return [self._csr[exclude]]

    def score_block(self, users: Tensor) -> Tensor:
        """Scores of ``users`` against every item, ``[n, I]`` (``model.score``)."""
        return self.model.score(self._user_emb[users], self._item_emb)

    def index(self, kind: str = "exact", num_cells: int | None = None, num_cells_to_visit: int | None = None,
              bits_per_vector: int | None = None):
        """The retrieval index over the item embeddings (built once per kind).

        ``'exact'``: blocked score matrix + ``topk`` (any model; returns ``None``). ``'mips'``: PyG's
        ``MIPSKNNIndex`` (faiss exact inner product); ``'ivf'``: an inverted file of uncompressed
        vectors on PyG's ``KNNIndex`` (faiss ``IndexIVFFlat``; defaults ``num_cells = 4·√I``,
        ``num_cells_to_visit = num_cells / 16``); ``'approx'``: PyG's ``ApproxMIPSKNNIndex`` (faiss
        IVF-PQ, one 8-bit sub-quantizer per dimension unless ``bits_per_vector`` says otherwise;
        ``num_cells_to_visit`` default ``num_cells / 4``). All but ``exact`` need the ``ann`` extra
        (``pip install faiss-cpu``) and a dot-product model.
        """
        if kind not in INDEXES:
            raise InferenceError(f"index must be one of {INDEXES}, got {kind!r}")
        if kind == "exact":
            return None
        if not self.dot_product:
            raise InferenceError(f"{type(self.model).__name__} scores with its own function, not a dot product: "
                                 "a MIPS index would rank by something else; use index='exact'")
        if kind not in self._indexes:
            try:
                import faiss  # noqa: F401
                from torch_geometric.nn.pool import ApproxMIPSKNNIndex, MIPSKNNIndex
            except ImportError as e:
                raise InferenceError(f"index={kind!r} needs faiss: pip install faiss-cpu "
                                     "(or pip install -e '.[ann]'); index='exact' needs nothing") from e
            emb = self._item_emb.float().cpu().contiguous()
            cells = num_cells or max(1, int(4 * self.num_items ** 0.5))
            if kind == "mips":
                self._indexes[kind] = MIPSKNNIndex(emb)
            elif kind == "ivf":
                self._indexes[kind] = _ivf_flat_index(emb, cells, num_cells_to_visit or max(1, cells // 16))
            else:
                self._indexes[kind] = ApproxMIPSKNNIndex(
                    num_cells=cells, num_cells_to_visit=num_cells_to_visit or max(1, cells // 4),
                    bits_per_vector=bits_per_vector or emb.size(1), emb=emb)  # PQ sub-quantizers (8 bits each)
        return self._indexes[kind]

    def _search(self, index, users: Tensor, k: int, excl: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
        """Top-``k`` (scores, items) of ``users`` from a faiss index, the excluded items dropped."""
        links = None
        if excl:
            ptr, cols = excl[0]
            ptr, cols = ptr.cpu(), cols.cpu()
            u = users.cpu()
            lens = ptr[u + 1] - ptr[u]
            rows = torch.repeat_interleave(torch.arange(u.numel()), lens)
            starts = torch.cumsum(lens, 0) - lens
            idx = torch.repeat_interleave(ptr[u] - starts, lens) + torch.arange(rows.numel())
            links = torch.stack([rows, cols[idx]])
        out = index.search(self._user_emb[users].float().cpu().contiguous(), k, exclude_links=links)
        return out.score, out.index

    @torch.no_grad()
    def recommend(self, users: Sequence[int] | Tensor | None = None, k: int = 20,
                  exclude: Exclude = "seen", index: str = "exact") -> Recommendations:
        """Top-``k`` items for ``users`` (all users when ``None``).

        ``exclude``: ``'seen'`` masks every interaction of the dataset file (train, valid and test:
        what a served user already has), ``'train'`` only the training ones (the evaluator's test-time
        ranking), ``'none'`` nothing.
        """
        parts = list(self.iter_recommend(users, k, exclude, index))
        return Recommendations(*(torch.cat([getattr(p, f) for p in parts]) for f in ("users", "items", "scores")))

    @torch.no_grad()
    def iter_recommend(self, users: Sequence[int] | Tensor | None = None, k: int = 20,
                       exclude: Exclude = "seen", index: str = "exact") -> Iterator[Recommendations]:
        """:meth:`recommend` one block of users at a time (for writing big outputs as they come)."""
        users = torch.arange(self.num_users) if users is None else torch.as_tensor(users)
        users = self._check_ids(users, self.num_users, "user")
        k = self._check_k(k, self.num_items)
        excl = self.exclusion(exclude)
        ann = self.index(index)
        for start in range(0, users.numel(), self.block_size):
            u = users[start:start + self.block_size]
            if ann is not None:
                top_v, top = self._search(ann, u, k, excl)
            else:
                scores = self.score_block(u)
                FullRankingEvaluator._mask(scores, u, excl)
                top_v, top = torch.topk(scores, k, dim=1)
            top = torch.where(top_v == float("-inf"), torch.full_like(top, -1), top)
            yield Recommendations(u.cpu(), top.cpu(), top_v.float().cpu())

    @torch.no_grad()
    def score(self, users: Sequence[int] | Tensor, items: Sequence[int] | Tensor) -> Tensor:
        """Scores of pairs: ``users [n]`` with ``items [n]`` → ``[n]``; ``items [n, m]`` → ``[n, m]``."""
        u = self._check_ids(torch.as_tensor(users), self.num_users, "user")
        items_t = torch.as_tensor(items)
        i = self._check_ids(items_t, self.num_items, "item").view(items_t.shape)
        if i.dim() == 1:
            if i.numel() != u.numel():
                raise InferenceError(f"score: {u.numel()} users but {i.numel()} items; give one item per user, "
                                     "or an [n, m] item matrix")
            i = i.unsqueeze(1)
            squeeze = True
        else:
            squeeze = False
            if i.size(0) != u.numel():
                raise InferenceError(f"score: {u.numel()} users but {i.size(0)} rows of items")
        if self.dot_product:
            out = (self._user_emb[u].unsqueeze(1) * self._item_emb[i]).sum(-1)
        else:  # a model-specific score: one row per user against its own items
            out = torch.stack([self.model.score(self._user_emb[u[j:j + 1]], self._item_emb[i[j]])[0]
                               for j in range(u.numel())])
        return (out.squeeze(1) if squeeze else out).cpu()

    @torch.no_grad()
    def similar_items(self, items: Sequence[int] | Tensor, k: int = 10) -> Recommendations:
        """The ``k`` items whose final embeddings are closest (cosine) to each of ``items`` (itself left out).

        Returned as :class:`Recommendations` whose ``users`` field holds the query items.
        """
        q = self._check_ids(torch.as_tensor(items), self.num_items, "item")
        k = self._check_k(k, self.num_items - 1)
        normed = torch.nn.functional.normalize(self._item_emb.float(), dim=1)
        out_i, out_s = [], []
        for start in range(0, q.numel(), self.block_size):
            b = q[start:start + self.block_size]
            sim = normed[b] @ normed.T
            sim[torch.arange(b.numel(), device=sim.device), b] = float("-inf")
            v, i = torch.topk(sim, k, dim=1)
            out_i.append(i.cpu())
            out_s.append(v.cpu())
        return Recommendations(q.cpu(), torch.cat(out_i), torch.cat(out_s))


def _id_maps(cfg: DictConfig) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Raw user / item ids from ``u_id_mapping.csv`` / ``i_id_mapping.csv`` in the dataset folder, if any."""
    ds = cfg.dataset
    if "root" not in ds or "folder" not in ds:
        return None, None
    folder = Path(str(ds.root)).expanduser() / str(ds.folder or ds.name)
    out = []
    for name, col in (("u_id_mapping.csv", 1), ("i_id_mapping.csv", 1)):
        path = folder / name
        if not path.is_file():
            out.append(None)
            continue
        raw: dict[int, str] = {}
        with path.open(encoding="utf-8") as f:
            next(f, None)  # header
            for line in f:
                parts = line.rstrip("\n").split("\t")
                if len(parts) >= 2 and parts[col].strip().lstrip("-").isdigit():
                    raw[int(parts[col])] = parts[0]
        arr = np.array([raw.get(i, "") for i in range(max(raw) + 1)], dtype=object) if raw else None
        out.append(arr)
    return out[0], out[1]
