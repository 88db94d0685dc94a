"""Recommender models. Each file holds one model; configs point at it with ``_target_``."""

from mmgraph.models.base import (
    GraphRecommender,
    build_model,
    check_requirements,
    dataset_kwargs,
    edge_inputs,
    prepare_data,
)
from mmgraph.models.bm3 import BM3
from mmgraph.models.bpr import BPR
from mmgraph.models.cohesion import COHESION
from mmgraph.models.crane import CRANE
from mmgraph.models.dragon import DRAGON
from mmgraph.models.dualgnn import DualGNN
from mmgraph.models.freedom import FREEDOM
from mmgraph.models.grcn import GRCN
from mmgraph.models.lattice import LATTICE
from mmgraph.models.lgmrec import LGMRec
from mmgraph.models.lightgcn import LightGCN
from mmgraph.models.lirdrec import LIRDRec
from mmgraph.models.mentor import MENTOR
from mmgraph.models.mgcn import MGCN
from mmgraph.models.mmgcn import MMGCN
from mmgraph.models.ngcf import NGCF
from mmgraph.models.slmrec import SLMRec
from mmgraph.models.smore import SMORE
from mmgraph.models.ulf import ULF
from mmgraph.models.vbpr import VBPR

__all__ = ["GraphRecommender", "build_model", "check_requirements", "dataset_kwargs", "edge_inputs", "prepare_data", "BPR", "LightGCN", "NGCF", "LATTICE", "ULF", "CRANE", "FREEDOM", "LIRDRec", "VBPR", "BM3", "LGMRec", "MGCN", "MMGCN",
           "GRCN", "SLMRec", "DualGNN", "DRAGON", "COHESION", "MENTOR", "SMORE"]
