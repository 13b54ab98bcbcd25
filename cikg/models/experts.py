"""The hybrid-expert adaptor of KAR (Xi et al., arXiv 2306.10933) and REKI (Xi et al., arXiv 2408.10520).

Knowledge comes in several *types* (KAR: user preference *reasoning* and item *factual* knowledge; REKI adds
collective variants of both). Each type ``k`` has its own ``n_dedicated`` experts, all types share
``n_shared`` experts, and a gating network per type mixes the experts it sees:

.. math::
    \\mathcal{E}_k = \\{E^s_1, \\dots, E^s_{S}\\} \\cup \\{E^k_1, \\dots, E^k_{D}\\}, \\qquad
    g_k(x) = \\mathrm{softmax}(W_k x + b_k) \\in \\Delta^{S + D}, \\qquad
    \\hat{x} = \\sum_{j} g_{k,j}(x)\\, E_j(x)

with every expert an MLP ``Linear(d_in, hidden) -> ReLU -> Dropout -> Linear(hidden, d_out)``. Shared
experts let the types exchange what they have in common; dedicated experts keep what is type-specific.
The adaptor is trained jointly with the backbone (through :class:`cikg.models.fusion.FeatureFusion`).

One implementation serves KAR and REKI (and anything else whose features carry named knowledge blocks).
"""
from __future__ import annotations

from typing import Dict, List, Mapping

import torch
from torch import Tensor, nn

from ..errors import ConfigError


class MLPExpert(nn.Module):
    """One expert: ``[n, d_in] -> [n, d_out]`` through one hidden ReLU layer."""

    def __init__(self, d_in: int, d_out: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, d_out))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for layer in self.net:
            if isinstance(layer, nn.Linear):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class HybridExpertAdaptor(nn.Module):
    """Shared + dedicated MLP experts with a softmax gate per knowledge type.

    Args:
        in_dims: knowledge type name -> input width (``{"reasoning": 384, "factual": 384}``). With
            ``n_shared > 0`` every type must have the same width (the shared experts read them all).
        out_dim: width of the augmented vectors.
        n_shared: experts shared by every type (``S``).
        n_dedicated: experts of each type (``D``); ``S + D >= 1``.
        hidden: hidden width of every expert.
        dropout: dropout inside the experts.

    Shapes:
        ``forward(x [n, in_dims[kind]], kind) -> [n, out_dim]``; ``gates(x, kind) -> [n, S + D]``.
    """

    def __init__(self, in_dims: Mapping[str, int], out_dim: int, n_shared: int = 2, n_dedicated: int = 2,
                 hidden: int = 128, dropout: float = 0.0):
        super().__init__()
        if not in_dims:
            raise ConfigError("the expert adaptor needs at least one knowledge type", "features.adaptor")
        if n_shared < 0 or n_dedicated < 0 or n_shared + n_dedicated < 1:
            raise ConfigError(f"need n_shared + n_dedicated >= 1 (both >= 0), got {n_shared} + {n_dedicated}",
                              "features.n_shared")
        widths = set(in_dims.values())
        if n_shared > 0 and len(widths) > 1:
            raise ConfigError(f"shared experts need knowledge types of one width, got {dict(in_dims)}; use "
                              "n_shared=0 or one encoder for every type", "features.n_shared")
        self.in_dims: Dict[str, int] = dict(in_dims)
        self.out_dim, self.n_shared, self.n_dedicated = out_dim, n_shared, n_dedicated
        any_width = next(iter(widths))
        self.shared = nn.ModuleList(MLPExpert(any_width, out_dim, hidden, dropout) for _ in range(n_shared))
        self.dedicated = nn.ModuleDict({
            kind: nn.ModuleList(MLPExpert(d, out_dim, hidden, dropout) for _ in range(n_dedicated))
            for kind, d in self.in_dims.items()})
        self.gate = nn.ModuleDict({kind: nn.Linear(d, n_shared + n_dedicated) for kind, d in self.in_dims.items()})
        self.reset_parameters()

    @property
    def kinds(self) -> List[str]:
        return list(self.in_dims)

    def reset_parameters(self) -> None:
        for expert in self.shared:
            expert.reset_parameters()
        for experts in self.dedicated.values():
            for expert in experts:
                expert.reset_parameters()
        for gate in self.gate.values():
            nn.init.xavier_uniform_(gate.weight)
            nn.init.zeros_(gate.bias)

    def _check(self, x: Tensor, kind: str) -> None:
        if kind not in self.in_dims:
            raise KeyError(f"unknown knowledge type {kind!r}; the adaptor has {self.kinds}")
        if x.dim() != 2 or x.size(1) != self.in_dims[kind]:
            raise ValueError(f"knowledge {kind!r} must be [n, {self.in_dims[kind]}], got {tuple(x.shape)}")

    def gates(self, x: Tensor, kind: str) -> Tensor:
        """Softmax weights of ``kind``'s gate over its shared then dedicated experts ``[n, S + D]``."""
        self._check(x, kind)
        return torch.softmax(self.gate[kind](x), dim=-1)

    def forward(self, x: Tensor, kind: str) -> Tensor:
        weights = self.gates(x, kind)
        experts = list(self.shared) + list(self.dedicated[kind])
        outputs = torch.stack([expert(x) for expert in experts], dim=1)  # [n, S + D, out]
        return (weights.unsqueeze(-1) * outputs).sum(dim=1)

    def __repr__(self) -> str:
        return (f"HybridExpertAdaptor(kinds={self.in_dims}, out_dim={self.out_dim}, n_shared={self.n_shared}, "
                f"n_dedicated={self.n_dedicated})")


__all__ = ["HybridExpertAdaptor", "MLPExpert"]
