"""The peak memory a run used, for the one summary line of ``diffir restore``: the process's resident set on the
CPU (what the machine had to provide, weights included), the allocator's peak on a GPU."""

from __future__ import annotations

import sys

import torch


def peak_memory_mib(device: torch.device) -> float | None:
    """Peak MiB of ``device`` so far in this process (None where it cannot be read: e.g. RSS on Windows)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    if device.type == "mps":
        return torch.mps.driver_allocated_memory() / 2**20  # MPS keeps no peak: the current driver allocation
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def describe_peak(device: torch.device) -> str:
    """``"peak memory 1,234 MiB (process RSS)"``, or "" if unknown."""
    mib = peak_memory_mib(device)
    if mib is None:
        return ""
    where = "process RSS" if device.type == "cpu" else f"allocated on {device}"
    return f"peak memory {mib:,.0f} MiB ({where})"
