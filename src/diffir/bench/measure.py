"""One timed forward and the process counters read around it.

What is timed is a model's stage-2 inference on one LQ image, as :class:`diffir.Restorer` runs it on an untiled
image: ``restore(lq, sample_prior(condition_of(lq), generator))`` under ``torch.inference_mode()``, the condition
and the prior in the weights' precision, the restoration network under autocast when a reduced precision is
chosen.  The input is already on the device; the output stays there (the device is synchronised before the clock
stops).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from diffir.pipelines.precision import autocast
from diffir.runtime import reference_path

try:  # POSIX only; elsewhere the memory and page-fault counters are reported as unavailable
    import resource
except ImportError:  # pragma: no cover - Windows
    resource = None  # type: ignore[assignment]

PATHS = ("fast", "reference")


@dataclass(frozen=True)
class Run:
    """One timed forward."""

    seconds: float
    minflt: int | None  #: minor page faults of the process during the forward (ru_minflt delta)
    majflt: int | None  #: major page faults during the forward
    maxrss: int | None  #: bytes: ru_maxrss of the process after the forward (its peak resident set so far)
    device_peak: int | None = None  #: bytes: torch.cuda.max_memory_allocated during the forward (CUDA only)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Run:
        return cls(**{k: data.get(k) for k in ("seconds", "minflt", "majflt", "maxrss", "device_peak")})


def _usage() -> tuple[int, int, int] | None:
    """(minor faults, major faults, max RSS in bytes) of this process."""
    if resource is None:  # pragma: no cover
        return None
    u = resource.getrusage(resource.RUSAGE_SELF)
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return u.ru_minflt, u.ru_majflt, u.ru_maxrss * scale


def maxrss_bytes() -> int | None:
    usage = _usage()
    return None if usage is None else usage[2]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps" and hasattr(torch, "mps"):
        torch.mps.synchronize()


def reset_memory_high_water() -> bool:
    """Give freed heap back to the system (``malloc_trim``) and reset the process's peak RSS to its current RSS
    (Linux ``/proc/self/clear_refs``), so that ru_maxrss from now on is the peak of what runs next.  False where
    the peak cannot be reset (it then stays the process's peak since it started)."""
    gc.collect()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            return True
        except OSError:
            return False
    return False


def make_input(model: nn.Module, height: int, width: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    """A random (1, C, H, W) LQ image in the weights' dtype on ``device``; inpainting models get RGB·(1−hole) ⊕
    hole with a centred square hole."""
    c = model.descriptor  # type: ignore[attr-defined]
    dtype = next(model.parameters()).dtype
    g = torch.Generator().manual_seed(seed)
    if c.task == "inpaint":
        hole = torch.zeros(1, 1, height, width)
        hole[..., height // 4: height - height // 4, width // 4: width - width // 4] = 1
        rgb = torch.rand(1, c.in_channels - 1, height, width, generator=g)
        lq = torch.cat([rgb * (1 - hole), hole], dim=1)
    else:
        lq = torch.rand(1, c.in_channels, height, width, generator=g)
    return lq.to(device, dtype).contiguous()


def make_forward(model: nn.Module, lq: torch.Tensor, device: torch.device, dtype: torch.dtype, path: str,
                 seed: int = 0) -> Callable[[], torch.Tensor]:
    """The timed work for one path: condition, prior (seeded, on a CPU generator) and restoration network."""
    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")
    reference = path == "reference"

    def forward() -> torch.Tensor:
        generator = torch.Generator(device="cpu").manual_seed(seed)
        with torch.inference_mode(), reference_path(reference):
            prior = model.sample_prior(model.condition_of(lq), generator)  # type: ignore[operator]
            with autocast(device, dtype):
                return model.restore(lq, prior)  # type: ignore[operator]

    return forward


def timed(forward: Callable[[], torch.Tensor], device: torch.device) -> Run:
    """Run ``forward`` once; wall time, page faults and memory peaks around it."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    synchronize(device)
    collecting = gc.isenabled()
    gc.disable()  # no collector pause inside the timed region (as timeit does)
    try:
        before = _usage()
        t0 = time.perf_counter()
        out = forward()
        synchronize(device)
        seconds = time.perf_counter() - t0
        after = _usage()
        del out
    finally:
        if collecting:
            gc.enable()
    device_peak = int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None
    if before is None or after is None:  # pragma: no cover
        return Run(seconds, None, None, None, device_peak)
    return Run(seconds, after[0] - before[0], after[1] - before[1], after[2], device_peak)
