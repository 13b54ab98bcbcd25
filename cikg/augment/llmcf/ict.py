"""The in-context chain-of-thought (ICT) module: a transformer encoder over retrieved examples and the user."""
from __future__ import annotations

import torch
from torch import Tensor, nn


class ICTModule(nn.Module):
    """The in-context chain-of-thought module: a transformer encoder over retrieved examples and the user.

    Args:
        text_dim: size of CoT and history embeddings (384 for MiniLM).
        cf_dim: size of the CF features.
        dim, heads, layers, dropout: the transformer (``norm_first`` pre-LN layers).
        k: examples per user.

    Shapes:
        ``forward(ctx_cot [B, K, text_dim], ctx_user_cf [B, K, cf_dim], ctx_item_cf [B, K, cf_dim],
        ctx_label [B, K] (long, -1 = empty slot), user_text [B, text_dim], user_cf [B, cf_dim]) -> [B, dim]``;
        :meth:`logits` scores ``[B, dim]`` user features against ``[B, cf_dim]`` item CF features.
    """

    def __init__(self, text_dim: int, cf_dim: int, dim: int = 64, heads: int = 4, layers: int = 2,
                 dropout: float = 0.1, k: int = 4):
        super().__init__()
        self.k = k
        self.rec = nn.Linear(2 * cf_dim, dim)
        self.cot = nn.Linear(text_dim, dim)
        self.query = nn.Linear(text_dim + cf_dim, dim)
        self.label = nn.Embedding(2, dim)
        self.kind = nn.Embedding(3, dim)  # 0: example features, 1: example CoT, 2: current user
        self.rank = nn.Embedding(k + 1, dim)
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=2 * dim, dropout=dropout,
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.item = nn.Linear(cf_dim, dim)
        self.bias = nn.Parameter(torch.zeros(1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in (self.rec, self.cot, self.query, self.item):
            module.reset_parameters()
        for emb in (self.label, self.kind, self.rank):
            nn.init.normal_(emb.weight, std=0.02)
        for layer in self.encoder.layers:
            for sub in layer.modules():
                if sub is not layer and hasattr(sub, "_reset_parameters"):
                    sub._reset_parameters()
                elif sub is not layer and isinstance(sub, (nn.Linear, nn.LayerNorm)):
                    sub.reset_parameters()
        self.norm.reset_parameters()
        nn.init.zeros_(self.bias)

    def forward(self, ctx_cot: Tensor, ctx_user_cf: Tensor, ctx_item_cf: Tensor, ctx_label: Tensor,
                user_text: Tensor, user_cf: Tensor) -> Tensor:
        batch, k = ctx_label.shape
        empty = ctx_label < 0
        rank = self.rank.weight[:k].unsqueeze(0)
        rec = self.rec(torch.cat([ctx_user_cf, ctx_item_cf], -1)) + self.label(ctx_label.clamp(min=0)) \
            + self.kind.weight[0] + rank
        cot = self.cot(ctx_cot) + self.kind.weight[1] + rank
        tokens = torch.stack([rec, cot], dim=2).reshape(batch, 2 * k, -1)  # r_1, m_1, r_2, m_2, ...
        current = self.query(torch.cat([user_text, user_cf], -1)) + self.kind.weight[2] + self.rank.weight[k]
        tokens = torch.cat([tokens, current.unsqueeze(1)], dim=1)
        pad = torch.cat([empty.repeat_interleave(2, dim=1), torch.zeros(batch, 1, dtype=torch.bool,
                                                                         device=empty.device)], dim=1)
        out = self.encoder(tokens, src_key_padding_mask=pad)
        return self.norm(out[:, -1])

    def logits(self, user_features: Tensor, item_cf: Tensor) -> Tensor:
        """:math:`h_u^\\top W_i f^i + b` for aligned rows ``[B, dim]``, ``[B, cf_dim]`` → ``[B]``."""
        return (user_features * self.item(item_cf)).sum(-1) + self.bias

    def __repr__(self) -> str:
        return (f"ICTModule(dim={self.rec.out_features}, k={self.k}, layers={len(self.encoder.layers)}, "
                f"heads={self.encoder.layers[0].self_attn.num_heads})")
