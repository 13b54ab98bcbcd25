"""Where a run trained, in words, for the tables that report its figures (issue 17: hardware per row)."""
from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Optional

import torch


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else :func:`platform.processor`), or ``"CPU"``."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name") and ":" in line:
                return " ".join(line.split(":", 1)[1].split())
    return platform.processor() or "CPU"


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one, else every core)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def describe_hardware(device: torch.device, world_size: int = 1, threads: Optional[int] = None) -> str:
    """``"CPU: AMD EPYC 9R14 (2 cores, 1 torch thread)"`` or ``"GPU: NVIDIA H100 80GB HBM3"``, prefixed with
    ``"4 x "`` for a run over ``world_size`` processes; ``threads`` (default: this process's torch threads) is
    the intra-op thread count the work ran with."""
    if device.type == "cuda":
        where = f"GPU: {torch.cuda.get_device_name(device)}"
    else:
        threads = threads or torch.get_num_threads()
        where = (f"CPU: {cpu_name()} ({usable_cores()} cores, {threads} torch thread{'s' if threads > 1 else ''})"
                 if device.type == "cpu" else device.type)
    return f"{world_size} x {where}" if world_size > 1 else where


__all__ = ["cpu_name", "describe_hardware", "usable_cores"]
