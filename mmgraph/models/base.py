"""The model contract."""

from __future__ import annotations

import abc
import inspect
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor
from torch_geometric.data import HeteroData
from torch_geometric.typing import EdgeType, NodeType

from mmgraph.graph.build import GraphSpec, build_graph
from mmgraph.typing import ITEM, IU, UI, BPRBatch


class GraphRecommender(torch.nn.Module, abc.ABC):
    """Base class of every model.

    A model is a pure ``nn.Module`` with typed constructor arguments (no ``**kwargs``,
    so an unknown config key fails loudly). It never reads files, builds kNN graphs
    from raw data, or sees a config object: it declares the graphs it needs in
    ``graph_spec`` and the data layer builds them once.

    Subclasses implement :meth:`forward` (the only propagation entry point) and
    :meth:`loss`; they may override :meth:`train_graph` for per-epoch graph changes
    (edge dropout, graph refresh). Evaluation always uses the full ``data``.
    """

    required_edge_types: ClassVar[tuple[EdgeType, ...]] = (UI, IU)
    required_modalities: ClassVar[tuple[str, ...]] = ()

    def __init__(self, num_users: int, num_items: int, *, embedding_dim: int = 64,
                 graph: GraphSpec | None = None) -> None:
        super().__init__()
        if num_users <= 0 or num_items <= 0:
            raise ValueError(f"num_users and num_items must be positive, got {num_users}, {num_items}")
        if embedding_dim <= 0:
            raise ValueError(f"embedding_dim must be positive, got {embedding_dim}")
        self.num_users = num_users
        self.num_items = num_items
        self.embedding_dim = embedding_dim
        self.graph_spec = graph if graph is not None else GraphSpec()

    def reset_parameters(self) -> None:
        """Re-initialise all parameters."""

    def init_from_data(self, data: HeteroData) -> None:
        """Initialise parameters whose initial values are data (e.g. trainable raw features).

        Called once by the pipeline after :func:`~mmgraph.graph.build_graph` and before the
        optimiser is built; the parameters themselves exist from ``__init__`` on. A no-op by
        default.
        """

    @abc.abstractmethod
    def forward(self, data: HeteroData) -> dict[NodeType, Tensor]:
        """Final embeddings ``{'user': [U, d], 'item': [I, d]}``."""

    @abc.abstractmethod
    def loss(self, data: HeteroData, batch: BPRBatch) -> dict[str, Tensor]:
        """``{'loss': total, ...}``: the trainer backpropagates ``'loss'`` and logs all terms."""

    def score(self, user_emb: Tensor, item_emb: Tensor) -> Tensor:
        """Scores ``[B, I]`` of users ``[B, d]`` against items ``[I, d]``."""
        return user_emb @ item_emb.t()

    def train_graph(self, data: HeteroData, epoch: int) -> HeteroData:
        """The graph to train on in ``epoch`` (pure: must not modify ``data`` in place)."""
        return data

    # ------------------------------------------------ trainable raw item features
    def add_raw_features(self, modality_dims: dict[str, int]) -> None:
        """Create trainable copies ``raw_features[m]`` ``[I, F_m]`` of the item features.

        MMRec trains the raw features in several models (LATTICE, FREEDOM, BM3, MGCN). They
        are zeros until :meth:`load_raw_features` (call it from :meth:`init_from_data`);
        :meth:`loaded_raw_features` refuses to hand them out before that.
        """
        self.raw_features = torch.nn.ParameterDict(
            {m: torch.nn.Parameter(torch.zeros(self.num_items, int(d))) for m, d in modality_dims.items()})
        self.register_buffer("raw_features_loaded", torch.tensor(False))

    @torch.no_grad()
    def load_raw_features(self, data: HeteroData) -> None:
        """Copy ``data['item'].x_<m>`` into the tables made by :meth:`add_raw_features`."""
        for m, p in self.raw_features.items():
            x = data[ITEM][f"x_{m}"]
            if x.shape != p.shape:
                raise ValueError(f"{type(self).__name__}: data['item'].x_{m} has shape {tuple(x.shape)}, "
                                 f"the model expects {tuple(p.shape)}")
            p.copy_(x)
        self.raw_features_loaded.fill_(True)

    def loaded_raw_features(self) -> torch.nn.ParameterDict:
        """The trainable feature tables; raises if :meth:`load_raw_features` has not run."""
        if not bool(self.raw_features_loaded):
            raise RuntimeError(f"{type(self).__name__}: call model.init_from_data(data) before the first "
                               "forward (mmgraph.training.run does) to load the raw item features")
        return self.raw_features

    def extra_repr(self) -> str:
        return f"num_users={self.num_users}, num_items={self.num_items}, embedding_dim={self.embedding_dim}"


def edge_inputs(data: HeteroData, edge_type: EdgeType) -> tuple[Tensor, Tensor | None]:
    """``(adj_t, None)`` when the data layer built a sparse adjacency, else ``(edge_index, edge_weight)``."""
    store = data[edge_type]
    if "adj_t" in store:
        return store.adj_t, None
    return store.edge_index, store.get("edge_weight")


def check_requirements(model: GraphRecommender, data: HeteroData) -> None:
    """Raise if ``data`` lacks an edge type or modality that ``model`` needs."""
    missing = [et for et in model.required_edge_types if et not in data.edge_types]
    if missing:
        raise ValueError(f"{type(model).__name__} needs edge types {missing}; build them with its GraphSpec")
    mods = [k[2:] for k in data["item"].keys() if k.startswith("x_")]
    missing_m = [m for m in model.required_modalities if m not in mods]
    if missing_m:
        raise ValueError(f"{type(model).__name__} needs modalities {missing_m}; the dataset has {mods}")


def dataset_kwargs(cls: type[GraphRecommender], data: HeteroData) -> dict[str, object]:
    """The constructor arguments a dataset fixes: sizes, and ``modality_dims`` when ``cls`` takes it."""
    kwargs: dict[str, object] = {"num_users": data["user"].num_nodes, "num_items": data["item"].num_nodes}
    if "modality_dims" in inspect.signature(cls.__init__).parameters:
        kwargs["modality_dims"] = {m: int(data["item"][f"x_{m}"].size(1)) for m in data.modalities}
    return kwargs


def prepare_data(model: GraphRecommender, data: HeteroData,
                 cache_dir: str | Path | None = None) -> HeteroData:
    """Build ``model``'s graphs on ``data`` (cached in ``cache_dir``), check them, initialise from data.

    The three steps every entry point takes between constructing a model and training it; returns
    the graph-carrying ``HeteroData`` to train and evaluate on.
    """
    data = build_graph(data, model.graph_spec, cache_dir=cache_dir)
    check_requirements(model, data)
    model.init_from_data(data)  # e.g. LATTICE's trainable raw features, LIRDRec's DCT input
    return data


def build_model(cls: type[GraphRecommender], data: HeteroData, *, cache_dir: str | Path | None = None,
                **kwargs) -> tuple[GraphRecommender, HeteroData]:
    """``cls`` sized for ``data`` with ``kwargs`` (typed: a wrong name fails), and ``data`` with its graphs.

    The Python-API counterpart of ``experiments/train.py``'s model set-up::

        data, split = load_mmrec("../shared/data", "lfm2k")
        model, data = build_model(FREEDOM, data, reg_weight=1e-3)
    """
    model = cls(**dataset_kwargs(cls, data), **kwargs)
    return model, prepare_data(model, data, cache_dir)


def resolve_modalities(model: str, modality_dims: Mapping[str, int], modalities: Sequence[str] | str | None,
                       *, default: Sequence[str] | None = None, allow_empty: bool = False) -> list[str]:
    """The modalities a model uses, checked against the dataset's.

    ``modalities`` as given (a config's ``model.modalities``), or when it is ``None`` ``default``
    (itself ``None``: the dataset's order); ``'reference_slots'`` orders two modalities as the
    reference frameworks' image slot, then text slot
    (:func:`mmgraph.graph.build.reference_slot_order`). Raises ``ValueError`` naming ``model`` when the list
    is empty (unless ``allow_empty``: a model that degrades to pure CF), names a modality the
    dataset lacks, or repeats one.
    """
    if modalities == "reference_slots":
        from mmgraph.graph.build import reference_slot_order

        mods = reference_slot_order(list(modality_dims))
    elif isinstance(modalities, str):
        raise ValueError(f"{model} modalities must be a list or 'reference_slots', got {modalities!r}")
    elif modalities is not None:
        mods = list(modalities)
    else:
        mods = list(modality_dims) if default is None else list(default)
    if not mods and not allow_empty:
        raise ValueError(f"{model} needs at least one modality")
    unknown = [m for m in mods if m not in modality_dims]
    if unknown:
        raise ValueError(f"{model} modalities {unknown} are not in the dataset's {list(modality_dims)}")
    if len(set(mods)) != len(mods):
        raise ValueError(f"{model} modalities {mods} repeat a modality")
    return mods
