"""Knowledge augmentation: LLM knowledge turned into user/item vectors attached as node features of the CIKG.

Methods (each an :class:`~cikg.augment.base.Augmenter` producing :class:`~cikg.augment.base.NodeFeatures`):

* :mod:`cikg.augment.kar` — KAR (Xi et al., arXiv 2306.10933): factorisation prompting, reasoning and
  factual knowledge, hybrid-expert adaptor;
* :mod:`cikg.augment.reki` — REKI (Xi et al., arXiv 2408.10520): individual and collective (clustered)
  extraction, the same expert adaptor;
* :mod:`cikg.augment.llmcf` — LLM-CF (Sun et al., arXiv 2403.17688), a package of one-job modules;
* :mod:`cikg.augment.coco` — CoCo (Mu et al., arXiv 2510.14257), likewise.

The expert adaptor (:mod:`cikg.models.experts`) and the fusion layer (:mod:`cikg.models.fusion`) are shared.
Helpers REKI, LLM-CF and CoCo share are in :mod:`cikg.augment._shared`; the ``cikg augment`` CLI of all four
is :mod:`cikg.augment.commands`.
Submodules are imported on use (this package import stays light).
"""
from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .base import FEATURES_FILE, Augmenter, NodeFeatures, features_path

__all__ = [
    "Augmenter", "FEATURES_FILE", "NodeFeatures", "features_path",
]
__getattr__, __dir__ = lazy_exports(__name__, __file__, __all__)
