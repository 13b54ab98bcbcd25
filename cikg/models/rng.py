"""Random draws on a model's device from an optional ``torch.Generator``: the one place models get randomness.

Models take a CPU generator from the trainer (seeded per epoch, so a resumed run draws the same numbers). A CPU
generator cannot draw CUDA tensors; there the global CUDA RNG (seeded by ``torch.manual_seed``) is used
instead, which keeps runs reproducible without a host-to-device copy per draw.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor


def _usable(generator: Optional[torch.Generator], device: torch.device) -> bool:
    return generator is not None and generator.device.type == torch.device(device).type


def uniform_random(shape: Sequence[int], device: torch.device, generator: Optional[torch.Generator] = None,
                   dtype: torch.dtype = torch.float32) -> Tensor:
    """``U[0, 1)`` samples of ``shape`` on ``device``, from ``generator`` when it lives on that device type."""
    if _usable(generator, device):
        return torch.rand(*shape, device=device, dtype=dtype, generator=generator)
    return torch.rand(*shape, device=device, dtype=dtype)


def random_permutation(n: int, device: torch.device, generator: Optional[torch.Generator] = None) -> Tensor:
    """A random permutation of ``0..n-1`` on ``device`` ."""
    if _usable(generator, device):
        return torch.randperm(n, device=device, generator=generator)
    return torch.randperm(n, device=device)


def random_integers(high: int, size: int, device: torch.device, generator: Optional[torch.Generator] = None
                    ) -> Tensor:
    """``size`` integers uniform in ``0..high-1`` on ``device``."""
    if _usable(generator, device):
        return torch.randint(high, (size,), device=device, generator=generator)
    return torch.randint(high, (size,), device=device)
