"""Data layer: MMRec-format loading, splits, the synthetic dataset, negative sampling."""

from mmgraph.data.mmrec import DatasetError, load_feature, load_mmrec, read_inter
from mmgraph.data.sampler import UniformNegativeSampler
from mmgraph.data.split import RecSplit, SplitError, cold_item_labels, mmrec_random_labels
from mmgraph.data.synthetic import generate, load_synthetic

__all__ = [
    "DatasetError",
    "SplitError",
    "RecSplit",
    "load_mmrec",
    "load_synthetic",
    "load_feature",
    "read_inter",
    "generate",
    "mmrec_random_labels",
    "cold_item_labels",
    "UniformNegativeSampler",
]
