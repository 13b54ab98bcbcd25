"""One fusion layer through which every model consumes node features (``graph['user'].x``, ``graph['item'].x``).

The features of a node type (``[n, d_feat]``, e.g. encoded LLM knowledge from :mod:`cikg.augment`) are
mapped to the embedding width by an adaptor and fused with that type's ID embeddings *before*
propagation:

.. math::
    e^{(0)}_v = \\begin{cases}
        e^{id}_v & \\text{mode none} \\\\
        e^{id}_v + g_{\\tau(v)} \\odot A_{\\tau(v)}(x_v) & \\text{mode add} \\\\
        A_{\\tau(v)}(x_v) & \\text{mode features}
    \\end{cases}

The adaptor :math:`A` is ``linear`` (one ``Linear(d_feat, dim)`` per node type, with dropout on its input) or
``experts``: the hybrid-expert adaptor of KAR/REKI (:class:`cikg.models.experts.HybridExpertAdaptor`), which
splits ``x`` into its knowledge blocks (``blocks[node_type]``), passes each through the shared experts and
the block's dedicated experts under the block's gate, and sums the block outputs. The adaptor trains with
the backbone's loss. Node types without features keep their ID embeddings.

The gate :math:`g_\\tau \\in \\mathbb{R}^{dim}` is 1 (no gate) or, with ``gate=True``, a learnable vector per
node type initialised at **zero** (ReZero, Bachlechner et al., arXiv 2003.04887): training starts from the plain
model, and the knowledge enters only as far as the loss asks for it instead of dominating the ID embedding
from the first step.

Shapes: ``forward(ego [n_nodes, dim]) -> [n_nodes, dim]`` over a global node index (LightGCN, CIKGRec);
``fuse(node_type, emb [m, dim], index [m]) -> [m, dim]`` for per-type tables (BPR-MF).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Dict, Mapping, Optional, Tuple

import torch
from torch import Tensor, nn

from .. import checks
from ..errors import ConfigError
from .experts import HybridExpertAdaptor


class FusionMode(checks.Choice):
    """How node features meet the ID embedding."""

    NONE = "none"  # no features: the plain model
    ADD = "add"  # ego = ID embedding + adapted features
    FEATURES = "features"  # ego = adapted features alone


class Adaptor(checks.Choice):
    """What maps the features to the embedding size."""

    LINEAR = "linear"
    EXPERTS = "experts"  # KAR's hybrid-expert adaptor


FUSION_MODES = tuple(m.value for m in FusionMode)
ADAPTORS = tuple(a.value for a in Adaptor)


@dataclass
class FusionConfig:
    """How a model consumes node features (YAML: ``model.features``).

    Attributes:
        mode: ``none`` (ignore features: the plain model), ``add`` (ID embedding + adapted features) or
            ``features`` (adapted features replace the ID embeddings of featured node types).
        adaptor: ``linear`` or ``experts`` (hybrid experts, KAR/REKI).
        node_types: which featured node types to fuse (those without features are skipped).
        hidden: hidden width of every expert MLP.
        n_shared: shared experts (``experts`` only).
        n_dedicated: dedicated experts per knowledge block (``experts`` only).
        dropout: dropout on the features (linear) or inside the experts.
        gate: ``add`` only: scale the adapted features by a learnable per-node-type vector that starts at zero,
            so the model starts as the plain backbone and learns how much knowledge to let in.
        reduce: when > 0, each knowledge block is first reduced to its top ``reduce`` principal components
            (an SVD of the centred block, computed once when the model is built; fixed, not trained). It
            makes the experts cheap: they run over every featured node in every batch.
    """

    mode: FusionMode = FusionMode.NONE
    adaptor: Adaptor = Adaptor.LINEAR
    node_types: Tuple[str, ...] = ("user", "item")
    hidden: int = 128
    n_shared: int = 2
    n_dedicated: int = 2
    dropout: float = 0.0
    gate: bool = False
    reduce: int = 0

    CONSTRAINTS: ClassVar[checks.Constraints] = (
        checks.choice(FusionMode, "mode"), checks.choice(Adaptor, "adaptor"), checks.positive_int("hidden"),
        checks.non_negative_int("n_shared", "n_dedicated", "reduce"), checks.probability("dropout"))

    def __post_init__(self) -> None:
        checks.check(self)
        for node_type in self.node_types:
            if node_type not in ("user", "item"):
                raise ConfigError(f"expected user and/or item, got {node_type!r}", "node_types")
        if self.adaptor is Adaptor.EXPERTS and self.n_shared + self.n_dedicated < 1:
            raise ConfigError("the experts adaptor needs n_shared + n_dedicated >= 1", "n_shared")
        if self.gate and self.mode != "add":
            raise ConfigError(f"gate applies to mode 'add' (a zero gate in mode {self.mode!r} would zero the "
                              "embeddings)", "gate")

    @property
    def enabled(self) -> bool:
        return self.mode != "none"


class FeatureFusion(nn.Module):
    """Adapt node features to ``dim`` and fuse them with ID embeddings (see the module docstring).

    Args:
        config: :class:`FusionConfig` (``mode`` must not be ``none``).
        features: node type -> ``[count, d_feat]`` features (rows are node ids of that type). Stored as
            non-persistent buffers: checkpoints hold the adaptor's parameters, the features come from
            their artifact (``data.features``).
        dim: the embedding width.
        blocks: node type -> ordered ``{block: width}`` (for ``experts``; one block per type if absent).
        offsets: node type -> first row of the type in a global ego table (for :meth:`forward`).
    """

    def __init__(self, config: FusionConfig, features: Mapping[str, Tensor], dim: int,
                 blocks: Optional[Mapping[str, Mapping[str, int]]] = None,
                 offsets: Optional[Mapping[str, int]] = None):
        super().__init__()
        if not config.enabled:
            raise ConfigError("FeatureFusion built with mode 'none'", "features.mode")
        self.config = config
        self.dim = dim
        self.node_types = [t for t in config.node_types if t in features]
        if not self.node_types:
            raise ConfigError(f"features.mode={config.mode!r} but the graph has no features for "
                              f"{list(config.node_types)} (attach them, e.g. data.features=PATH)", "features.mode")
        blocks = dict(blocks or {})
        self.blocks: Dict[str, Dict[str, int]] = {}
        self.offsets = {t: int((offsets or {}).get(t, 0)) for t in self.node_types}
        for node_type in self.node_types:
            x = features[node_type].detach().float()
            layout = dict(blocks.get(node_type) or {node_type: int(x.size(1))})
            if sum(layout.values()) != x.size(1):
                raise ConfigError(f"{node_type} blocks {layout} do not add up to its {x.size(1)} feature columns",
                                  "features")
            if config.reduce:
                x, layout = _reduce_blocks(x, layout, config.reduce)
            self.blocks[node_type] = layout
            self.register_buffer(f"x_{node_type}", x, persistent=False)
        self.dropout = nn.Dropout(config.dropout)
        if config.adaptor == "linear":
            self.linear = nn.ModuleDict({t: nn.Linear(self.features(t).size(1), dim) for t in self.node_types})
            self.experts = None
        else:
            kinds: Dict[str, int] = {}
            for node_type in self.node_types:
                for name, width in self.blocks[node_type].items():
                    if kinds.setdefault(name, width) != width:
                        raise ConfigError(f"knowledge block {name!r} has widths {kinds[name]} and {width}",
                                          "features")
            self.linear = None
            self.experts = HybridExpertAdaptor(kinds, dim, config.n_shared, config.n_dedicated, config.hidden,
                                               config.dropout)
        self.gate = (nn.ParameterDict({t: nn.Parameter(torch.empty(dim)) for t in self.node_types})
                     if config.gate else None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.linear is not None:
            for layer in self.linear.values():
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)
        else:
            self.experts.reset_parameters()
        if self.gate is not None:
            for scale in self.gate.values():
                nn.init.zeros_(scale)

    def features(self, node_type: str) -> Tensor:
        return getattr(self, f"x_{node_type}")

    def project(self, node_type: str, index: Optional[Tensor] = None) -> Tensor:
        """Adapted features of ``node_type`` ``[count or len(index), dim]``."""
        x = self.features(node_type)
        if index is not None:
            x = x[index]
        if self.linear is not None:
            return self.linear[node_type](self.dropout(x))
        out, start = None, 0
        for name, width in self.blocks[node_type].items():
            part = self.experts(x[:, start:start + width], name)
            out = part if out is None else out + part
            start += width
        return out

    def fuse(self, node_type: str, emb: Tensor, index: Optional[Tensor] = None) -> Tensor:
        """ID embeddings ``emb`` of ``node_type`` (rows ``index``, or all) fused with their adapted features."""
        if node_type not in self.node_types:
            return emb
        projected = self.project(node_type, index)
        if self.config.mode == "features":
            return projected
        return emb + (projected if self.gate is None else self.gate[node_type] * projected)

    def forward(self, ego: Tensor) -> Tensor:
        """The global ego table ``[n_nodes, dim]`` with each featured type's rows fused (out of place)."""
        pieces, cursor = [], 0
        for node_type in sorted(self.node_types, key=lambda t: self.offsets[t]):
            start = self.offsets[node_type]
            end = start + self.features(node_type).size(0)
            pieces += [ego[cursor:start], self.fuse(node_type, ego[start:end])]
            cursor = end
        pieces.append(ego[cursor:])
        return torch.cat(pieces, dim=0)

    def extra_repr(self) -> str:
        shapes = {t: tuple(self.features(t).shape) for t in self.node_types}
        gate = ", gate=True" if self.gate is not None else ""
        return f"mode={self.config.mode}, adaptor={self.config.adaptor}{gate}, features={shapes}, dim={self.dim}"


def _reduce_blocks(x: Tensor, layout: Mapping[str, int], k: int) -> Tuple[Tensor, Dict[str, int]]:
    """Each block of ``x`` projected on its top-``k`` principal components (fewer when the block is narrower)."""
    parts, out_layout, start = [], {}, 0
    for name, width in layout.items():
        block = x[:, start:start + width]
        start += width
        centred = block - block.mean(dim=0, keepdim=True)
        keep = min(k, width, block.size(0))
        _, _, vh = torch.linalg.svd(centred, full_matrices=False)
        parts.append(centred @ vh[:keep].t())
        out_layout[name] = keep
    return torch.cat(parts, dim=1).contiguous(), out_layout


def build_fusion(config: Optional[FusionConfig], views, dim: int) -> Optional[FeatureFusion]:
    """The fusion layer of a model built over ``views`` (``None`` for mode ``none``: the plain model).

    ``views`` is a :class:`cikg.graph.GraphViews` whose ``features`` / ``feature_blocks`` were filled from
    the graph's ``x`` slots by :func:`cikg.graph.build_views`.
    """
    if config is None or not config.enabled:
        return None
    if views is None:
        raise ConfigError(f"features.mode={config.mode!r} needs a graph with node features", "features.mode")
    counts = views.counts
    for node_type, x in views.features.items():
        if x.size(0) != counts[node_type]:
            raise ConfigError(f"{node_type} features have {x.size(0)} rows but the graph has {counts[node_type]} "
                              f"{node_type}s", "features")
    return FeatureFusion(config, views.features, dim, views.feature_blocks, views.offsets)


__all__ = ["ADAPTORS", "Adaptor", "FUSION_MODES", "FeatureFusion", "FusionConfig", "FusionMode", "build_fusion"]
