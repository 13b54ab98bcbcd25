"""LLM-CF: in-context chain-of-thought features (Sun et al., CIKM 2024, arXiv 2403.17688).

LLM-CF distils an LLM's reasoning into collaborative filtering in two stages.

**Offline** (:func:`sample_examples`, :func:`generate_cot`, :func:`build_cot_dataset`): sample
``(user, item, label)`` training examples from the train split (positives are train pairs, negatives are
uniform items the user never interacted with; seeded), ask an LLM through :mod:`cikg.llm` for a
chain-of-thought per example with the :data:`LLMCF_COT` template (analyse the history, introduce the target,
judge the fit, reflect on diversity; the label is *not* shown), encode each answer with the cached sentence
encoder and store the *in-context CoT dataset*

.. math::
    \\mathcal{D} = \\{(c_e, f^u_e, f^i_e, y_e)\\}_e,\\quad c_e \\in \\mathbb{R}^{384}\\ (\\text{CoT embedding}),\\;
    f^u_e, f^i_e \\in \\mathbb{R}^{d_{cf}}\\ (\\text{CF features of its user and item}),\\; y_e \\in \\{0, 1\\}

as ``cot_examples.jsonl`` (one line per example: ids, label, answer text, status, source; it is also a
``replay`` file) and ``cot_dataset.pt`` (the tensors).

**Online** (:func:`retrieve`, :class:`ICTModule`): for a user ``u`` with query
:math:`q_u = [w\\, t_u;\\ (1-w)\\, \\hat f^u_u]` (``t_u`` the encoded history titles, :math:`\\hat f` unit-norm CF
features) and example keys :math:`k_e = [c_e;\\ \\hat f^u_e]`, retrieve the top-K (default 4) examples by
:math:`q_u^\\top k_e = w \\cos(t_u, c_e) + (1-w) \\cos(f^u_u, f^u_e)` — exactly, with one matmul and ``topk``
per block of users, never a users × examples matrix in memory; examples of ``u`` itself are masked out.
The in-context chain-of-thought (ICT) module is a small ``torch.nn.TransformerEncoder`` over the sequence

.. math::
    [\\,r_1, m_1, \\dots, r_K, m_K, x_u\\,],\\quad r_e = W_r [f^u_e; f^i_e] + E_y[y_e],\\;
    m_e = W_c c_e,\\; x_u = W_q [t_u; f^u_u]

(plus rank and token-type embeddings); its output at :math:`x_u` is the feature :math:`h_u \\in \\mathbb{R}^d`.

**Adaptation to full ranking.** The paper scores one (user, target item) pair at a time: the current token
holds the pair's features and the ICT output feeds the backbone for that pair, so ranking all items would
run the transformer ``n_items`` times per user. Here the current token carries the *user* only, so one
forward gives one vector per user. The module is pre-trained on the CoT dataset's labels in that form:
for an example ``(u, i, y)``, :math:`\\hat y = \\sigma(h_u^\\top W_i f^i_i + b)` with binary cross-entropy,
``u``'s own examples excluded from its context (it never sees the label it predicts); early stopping on
held-out examples. After pre-training, :math:`h_u / \\lVert h_u \\rVert` of every user is attached as
``graph['user'].x``, and the backbone consumes it through the shared fusion layer (:mod:`cikg.models.fusion`),
where it is fused with the
ID embedding and trained with the backbone's own loss — the per-user analogue of the paper's concatenation
of the ICT output into the backbone's input.

**Offline LLM.** Any backend of :mod:`cikg.llm` answers the prompts. Requests are per example, so their
``user_id`` is ``"<user id>|<item id>"``: a replay file then holds one answer per example and
:class:`~cikg.llm.ReplayBackend` matches it without a server. :class:`CoTProfileBackend` is the offline
stand-in (**not an LLM**): it writes the four reasoning steps from the KG-profile of the user's history
(:class:`~cikg.llm.KGProfileBackend`) and the target item's own KG entities and title words.

**Modules** (one job each): :mod:`.config` (:class:`LLMCFConfig`), :mod:`.examples` (sampling),
:mod:`.prompts` (the CoT template and requests), :mod:`.backend` (the offline :class:`CoTProfileBackend`),
:mod:`.cot` (the answers' JSONL and the CoT dataset), :mod:`.retrieval` (exact blocked top-K),
:mod:`.context` (each user's query and retrieved examples), :mod:`.ict` (the nn module), :mod:`.fit`
(pre-training), :mod:`.pipeline` (:func:`run_llmcf`, :class:`LLMCF`). The CF features (truncated SVD) and the
history text are shared with REKI and CoCo (:mod:`cikg.augment._shared`); the CLI is in
:mod:`cikg.augment.commands`.
"""
from __future__ import annotations

from .._shared import cf_embeddings, check_cf, history_text, item_title, load_cf_file
from .backend import CoTProfileBackend
from .config import LLMCFConfig
from .context import Context, _context_tensors, retrieve_context, user_text_embeddings
from .cot import DATASET_FILE, EXAMPLES_FILE, CoTDataset, CoTRecords, build_cot_dataset, generate_cot
from .examples import Examples, example_id, sample_examples
from .fit import ICTTraining, auc, ict_user_features, pretrain_ict
from .ict import ICTModule
from .pipeline import LLMCF, LLMCFResult, run_llmcf
from .prompts import LLMCF_COT, build_cot_requests
from .retrieval import join_features, retrieve

__all__ = ["DATASET_FILE", "EXAMPLES_FILE", "LLMCF", "LLMCF_COT", "CoTDataset", "CoTProfileBackend", "CoTRecords",
           "Context", "Examples", "ICTModule", "ICTTraining", "LLMCFConfig", "LLMCFResult", "_context_tensors",
           "auc", "build_cot_dataset", "build_cot_requests", "cf_embeddings", "check_cf", "example_id",
           "generate_cot", "history_text", "ict_user_features", "item_title", "join_features", "load_cf_file",
           "pretrain_ict", "retrieve", "retrieve_context", "run_llmcf", "sample_examples", "user_text_embeddings"]
