"""CoCo's modules: the VQ soft-prompt selector, the soft-prompted LM encoder, and :class:`CoCoModel`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor, nn

from .config import CoCoConfig


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
