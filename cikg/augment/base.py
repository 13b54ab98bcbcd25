"""The contract every knowledge-augmentation method follows: an :class:`Augmenter` produces :class:`NodeFeatures`.

A method (KAR, REKI, LLM-CF, CoCo) turns LLM knowledge into user and/or item vectors once (pre-storing);
the vectors are saved as one artifact, attached to the CIKG as ``graph['user'].x`` / ``graph['item'].x``
with their provenance in ``graph.meta['features']``, and consumed by every model through one fusion layer
(:class:`cikg.models.fusion.FeatureFusion`)::

    features = KAR(KARConfig(), backend, encoder).fit(dataset)   # NodeFeatures
    features.save("runs/kar-dbbook2014")                         # runs/kar-dbbook2014/features.pt
    graph = features.attach(build_cikg(dataset))                 # graph['user'].x: [n_users, d_u]
    # or: cikg train run.yaml data.features=runs/kar-dbbook2014 model.features.mode=add

**Blocks.** A node type's features may be the concatenation of several named *knowledge blocks* (KAR: the
user's ``reasoning`` block, the item's ``factual`` block; REKI: individual and collective blocks).
``blocks[node_type]`` is the ordered ``{name: width}`` of the columns of ``x``; the expert adaptor splits
``x`` along it and treats each block name as one knowledge type. A node type without declared blocks is
one block named after the method.
"""
from __future__ import annotations

import enum
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

import torch
from torch import Tensor

from .._io import torch_save_atomic
from ..errors import CheckpointError, GraphError
from ..graph import attach_features

logger = logging.getLogger(__name__)

FEATURES_FILE = "features.pt"
FEATURES_VERSION = 1
FEATURE_NODE_TYPES = ("user", "item")
PROVENANCE_KEYS = ("method", "llm_model", "backend", "not_an_llm", "template_version", "encoder", "n_calls",
                   "prompt_tokens", "completion_tokens", "seconds")


def features_path(path: Union[str, Path]) -> Path:
    """``path`` itself when it names a file, else ``path/features.pt`` (a run's output directory)."""
    path = Path(path)
    return path if path.suffix == ".pt" else path / FEATURES_FILE


def _plain(value: Any) -> Any:
    """Provenance values as plain Python (str/int/float/bool/None, lists, dicts) for ``weights_only`` loads."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, Path):
        return str(value)
    if torch.is_tensor(value) and value.numel() == 1:
        return value.item()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


@dataclass
class NodeFeatures:
    """User and item feature matrices of one augmentation run, with their block layout and provenance.

    Attributes:
        user: ``[n_users, d_user]`` float tensor, or ``None``.
        item: ``[n_items, d_item]`` float tensor, or ``None``.
        blocks: node type -> ordered ``{block name: width}``; the widths sum to the node type's ``x`` width.
            Filled with one block named ``provenance['method']`` where not given.
        provenance: ``method``, ``llm_model``, ``backend``, ``not_an_llm``, ``template_version``, ``encoder``,
            ``n_calls``, ``prompt_tokens``, ``completion_tokens``, ``seconds`` and anything method-specific
            (group counts, factor lists ...). Plain values only.
    """

    user: Optional[Tensor] = None
    item: Optional[Tensor] = None
    blocks: Dict[str, Dict[str, int]] = field(default_factory=dict)
    provenance: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.user is None and self.item is None:
            raise GraphError("NodeFeatures needs user or item features (both are None)")
        self.provenance = _plain(dict(self.provenance))
        self.provenance.setdefault("method", "features")
        blocks = {}
        for node_type in FEATURE_NODE_TYPES:
            x = getattr(self, node_type)
            if x is None:
                if node_type in self.blocks:
                    raise GraphError(f"blocks given for {node_type!r} but it has no features")
                continue
            if not torch.is_tensor(x) or x.dim() != 2 or x.size(1) < 1:
                raise GraphError(f"{node_type} features must be a 2-D tensor [n, d >= 1], got "
                                 f"{getattr(x, 'shape', type(x).__name__)}")
            x = x.detach().float().contiguous()
            if not torch.isfinite(x).all():
                bad = int((~torch.isfinite(x)).any(dim=1).nonzero()[0])
                raise GraphError(f"{node_type} features hold a non-finite value (first at {node_type} {bad})")
            setattr(self, node_type, x)
            layout = {str(k): int(v) for k, v in (self.blocks.get(node_type) or
                                                   {self.provenance["method"]: x.size(1)}).items()}
            if any(v < 1 for v in layout.values()) or sum(layout.values()) != x.size(1):
                raise GraphError(f"{node_type} blocks {layout} do not add up to its {x.size(1)} feature columns")
            blocks[node_type] = layout
        unknown = set(self.blocks) - set(FEATURE_NODE_TYPES)
        if unknown:
            raise GraphError(f"blocks for unknown node type(s) {sorted(unknown)}; expected {FEATURE_NODE_TYPES}")
        self.blocks = blocks

    # ------------------------------------------------------------------ views
    @property
    def node_types(self) -> List[str]:
        return [t for t in FEATURE_NODE_TYPES if getattr(self, t) is not None]

    def block(self, node_type: str, name: str) -> Tensor:
        """The columns of block ``name`` of ``node_type`` ``[n, width]``."""
        layout = self.blocks.get(node_type, {})
        if name not in layout:
            raise KeyError(f"{node_type} has no block {name!r}; it has {list(layout)}")
        start = 0
        for block_name, width in layout.items():
            if block_name == name:
                return getattr(self, node_type)[:, start:start + width]
            start += width
        raise AssertionError("unreachable")

    def as_dict(self) -> Dict[str, Tensor]:
        return {t: getattr(self, t) for t in self.node_types}

    # ------------------------------------------------------------------ graph
    def attach(self, graph: Any) -> Any:
        """Set ``graph['user'].x`` / ``graph['item'].x`` (row ``i`` = node id ``i``) and their provenance.

        Raises:
            GraphError: when a feature matrix's row count differs from the graph's node count.
        """
        for node_type in self.node_types:
            provenance = dict(self.provenance, blocks=dict(self.blocks[node_type]))
            attach_features(graph, node_type, getattr(self, node_type), provenance)
        return graph

    # ------------------------------------------------------------------ files
    def save(self, path: Union[str, Path]) -> Path:
        """Write the artifact to ``path`` (a ``.pt`` file, or a directory that gets ``features.pt``), atomically."""
        target = features_path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        torch_save_atomic({"version": FEATURES_VERSION, "user": self.user, "item": self.item,
                           "blocks": self.blocks, "provenance": self.provenance}, target)
        return target

    @classmethod
    def load(cls, path: Union[str, Path]) -> "NodeFeatures":
        """Read an artifact written by :meth:`save` (``weights_only``: no code runs while loading)."""
        target = features_path(path)
        if not target.is_file():
            raise CheckpointError(f"{target}: no such node-features file (write one with `cikg augment`)")
        try:
            payload = torch.load(target, map_location="cpu", weights_only=True)
        except Exception as err:
            raise CheckpointError(f"{target}: cannot read node features ({type(err).__name__}: {str(err)[:200]})"
                                  ) from None
        if not isinstance(payload, dict) or payload.get("version") != FEATURES_VERSION:
            version = payload.get("version") if isinstance(payload, dict) else type(payload).__name__
            raise CheckpointError(f"{target}: node-features version {version} is not {FEATURES_VERSION}")
        try:
            return cls(payload.get("user"), payload.get("item"), dict(payload.get("blocks") or {}),
                       dict(payload.get("provenance") or {}))
        except GraphError as err:
            raise CheckpointError(f"{target}: {err}") from None

    def __repr__(self) -> str:
        shapes = ", ".join(f"{t}={tuple(getattr(self, t).shape)}" for t in self.node_types)
        p = self.provenance
        return (f"NodeFeatures({shapes}, method={p.get('method')!r}, backend={p.get('backend')!r}, "
                f"n_calls={p.get('n_calls')})")


class Augmenter(ABC):
    """A knowledge-augmentation method: :meth:`fit` computes the features once, :meth:`attach` puts them on a graph.

    Subclasses set :attr:`name` and implement :meth:`fit`, which stores its result in ``self.features``
    and returns it.
    """

    name: str = "augmenter"
    features: Optional[NodeFeatures] = None

    @abstractmethod
    def fit(self, dataset: Any, graph: Any = None) -> NodeFeatures:
        """Extract knowledge for ``dataset`` (``graph`` optional: a built CIKG some methods read) and encode it."""

    @staticmethod
    def check_graph(dataset: Any, graph: Any) -> None:
        """Refuse a ``graph`` (optional) whose user or item count is not ``dataset``'s, before any LLM call."""
        if graph is None:
            return
        for node_type, expected in (("user", dataset.n_users), ("item", dataset.n_items)):
            if node_type in graph.node_types and graph[node_type].num_nodes != expected:
                raise GraphError(f"the graph has {graph[node_type].num_nodes} {node_type}s, {dataset.name} has "
                                 f"{expected}")

    def _keep_user_features(self, user: Tensor, provenance: Dict[str, Any], normalize: bool,
                            out_dir: Union[str, Path, None]) -> NodeFeatures:
        """Store user-only features as ``self.features`` (L2-normalised rows when ``normalize``; saved in
        ``out_dir`` when given) and return them."""
        if normalize:
            user = torch.nn.functional.normalize(user, dim=1)
        self.features = NodeFeatures(user=user, provenance=dict(provenance, normalized=normalize))
        if out_dir is not None:
            self.features.save(out_dir)
        return self.features

    def attach(self, graph: Any) -> Any:
        """Attach the fitted features to ``graph`` (see :meth:`NodeFeatures.attach`)."""
        if self.features is None:
            raise GraphError(f"{type(self).__name__}.attach called before fit")
        return self.features.attach(graph)


__all__ = ["Augmenter", "FEATURES_FILE", "NodeFeatures", "PROVENANCE_KEYS", "features_path"]
