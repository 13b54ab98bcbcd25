"""Recommenders over the CIKG: BPR-MF, LightGCN (any view), SimGCL / SGL, KGIN, CIKGRec, and the propagation they share.

Every model follows :class:`~cikg.models.base.Recommender`; every config dataclass validates itself and
builds its model with ``config.build(graph)`` (a :class:`~cikg.graph.GraphViews`). :data:`MODEL_CONFIGS` maps the model names used in
YAML files to their config classes; models of your own join it through :func:`register_model`, ``cikg train
--import MODULE`` or a ``cikg.models`` entry point (:mod:`cikg.models.registry`).
"""
from typing import Dict

from .base import AuxiliaryTask, BPRBatch, LossTerms, Recommender, bpr_loss, l2_reg
from .bprmf import BPRMF, BPRMFConfig
from .cikgrec import CIKGRec, CIKGRecConfig, info_nce, mask_rate_schedule, sce_loss
from .kgat import KGAT, KGATConfig
from .kgin import KGIN, KGINConfig
from .lightgcn import LightGCN, LightGCNCIKGConfig, LightGCNConfig
from .propagation import (
    EdgeDropout,
    LGPropagation,
    SparseMM,
    SymmetricSpMM,
    drop_edges,
    simgcl_noise,
    spmm,
)
from .registry import import_model_modules, load_entry_point_models, register_model
from .simgcl import SimGCL, SimGCLConfig

MODEL_CONFIGS: Dict[str, type] = {
    "bprmf": BPRMFConfig,
    "lightgcn": LightGCNConfig,
    "lightgcn-cikg": LightGCNCIKGConfig,
    "cikgrec": CIKGRecConfig,
    "simgcl": SimGCLConfig,
    "kgin": KGINConfig,
    "kgat": KGATConfig,
}

__all__ = [
    "AuxiliaryTask", "BPRBatch", "BPRMF", "BPRMFConfig", "CIKGRec", "CIKGRecConfig",
    "EdgeDropout", "KGAT", "KGATConfig", "KGIN", "KGINConfig", "LGPropagation", "LightGCN", "LightGCNCIKGConfig", "LightGCNConfig", "LossTerms",
    "MODEL_CONFIGS", "Recommender", "SimGCL", "SimGCLConfig", "SparseMM", "SymmetricSpMM", "bpr_loss", "drop_edges",
    "import_model_modules", "info_nce", "l2_reg", "load_entry_point_models", "mask_rate_schedule", "register_model",
    "sce_loss", "simgcl_noise", "spmm",
]
