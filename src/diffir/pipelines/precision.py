"""Device choice, reduced precision and the failure modes that come with them (NaN/Inf, out of memory).

Reduced precision uses ``torch.autocast`` rather than casting the weights: the float32 weights stay
available, so an output with NaN/Inf (the classic "black image in fp16") is simply recomputed in float32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from diffir.errors import DiffIRError

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto`` → CUDA if present, else MPS, else CPU; explicit devices are checked to exist."""
    if isinstance(name, torch.device):
        return name
    name = name.strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DiffIRError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DiffIRError("--device cuda: no CUDA GPU visible to this torch build; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise DiffIRError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) visible")
    if device.type == "mps" and not _mps_available():
        raise DiffIRError("--device mps: MPS is not available on this machine; use --device cpu")
    return device


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def resolve_precision(name: str, device: torch.device) -> torch.dtype:
    if name not in PRECISIONS:
        raise DiffIRError(f"unknown precision {name!r}; use one of {', '.join(PRECISIONS)}")
    dtype = PRECISIONS[name]
    if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise DiffIRError("this GPU has no bfloat16 support; use --precision fp16 or fp32")
    return dtype


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    if dtype == torch.float32:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def all_finite(x: torch.Tensor) -> bool:
    return bool(torch.isfinite(x).all())


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA / MPS / XPU out-of-memory errors (CPU allocation failures are not recoverable this way)."""
    oom_type = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower() and "cpu" not in str(exc).lower()


def free_device_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps" and hasattr(torch, "mps"):
        torch.mps.empty_cache()
