"""Device choice, reduced precision and the failure modes that come with them (NaN/Inf, out of memory).

Reduced precision uses ``torch.autocast`` rather than casting the weights: the float32 weights stay
available, so an output with NaN/Inf (the classic "black image in fp16") is simply recomputed in float32.
Weights cast to bf16 were measured too (2-core AVX-512-BF16 CPU without AMX, fast path): no faster than bf16
autocast (both ×0.72-0.80 the speed of fp32 there) and less accurate (1.85 vs 1.30/255 max error of the bundled
×4 model on Set5); docs/restore.md, "Precision and devices", has the numbers.

``precision="auto"`` (:func:`calibrate`) measures instead of guessing: the model's restoration network runs on a
small bundled image (``assets/calibration.png``: a 96×96 synthetic test pattern — 1/f colour texture, discs, a
stripe patch, sensor noise — made by ``calibration_pattern`` in tests/test_precision.py, which checks the file
against it; no third-party content) in each precision the device offers,
alternating, and the fastest whose output is finite and within ``MAX_ERROR`` of float32 is kept, once per model
and device in a process.  ``torch.compile`` of the network is opt-in (:class:`CompiledNetwork`).
"""

from __future__ import annotations

import contextlib
import hashlib
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from diffir.errors import DiffIRError

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
#: ``precision="auto"``: largest accepted difference from the float32 output (max over pixels, values in [0, 1]).
MAX_ERROR = 2 / 255
#: A reduced precision must be this much faster than float32 to be chosen (closer is a tie: within timing noise,
#: and float32 is the more accurate).
MIN_GAIN = 1.03
CALIBRATION_IMAGE = Path(__file__).resolve().parents[1] / "assets" / "calibration.png"
#: LQ side of the calibration crop: ×2/×4 SR nets work on 4-16× more output pixels per input pixel.
CALIBRATION_SIDE = {1: 96, 2: 64, 4: 64}


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
        raise DiffIRError(f"unknown precision {name!r}; use one of {', '.join(PRECISIONS)} or auto")
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


# ---------------------------------------------------------------------------------------------- precision="auto"
def candidate_precisions(device: torch.device) -> list[str]:
    """What ``auto`` tries on ``device``: CPU fp32, bf16; CUDA fp32, bf16 (if supported), fp16; MPS fp32, fp16."""
    if device.type == "cuda":
        return ["fp32", *(["bf16"] if torch.cuda.is_bf16_supported() else []), "fp16"]
    if device.type == "mps":
        return ["fp32", "fp16"]
    if device.type == "cpu":
        return ["fp32", "bf16"]
    return ["fp32"]


@dataclass(frozen=True)
class Trial:
    """One candidate precision in a calibration."""

    precision: str
    max_error: float  #: max |output − float32 output| over the clamped pixels, in [0, 1] units; inf if not finite
    seconds: tuple[float, ...] = ()  #: timed runs (none when rejected for accuracy)

    @property
    def accepted(self) -> bool:
        return self.max_error <= MAX_ERROR

    @property
    def median(self) -> float | None:
        return statistics.median(self.seconds) if self.seconds else None


@dataclass(frozen=True)
class Calibration:
    """The outcome of :func:`calibrate`: the chosen precision and what every candidate measured."""

    choice: str
    trials: tuple[Trial, ...]
    size: tuple[int, int]  #: (H, W) of the LQ calibration input

    @property
    def dtype(self) -> torch.dtype:
        return PRECISIONS[self.choice]

    def trial(self, precision: str) -> Trial:
        return next(t for t in self.trials if t.precision == precision)

    def speedup(self, precision: str | None = None) -> float | None:
        """float32 median time / ``precision``'s (default: the choice's); None if either was not timed."""
        base, other = self.trial("fp32").median, self.trial(precision or self.choice).median
        return None if base is None or other is None else base / other

    def describe(self) -> str:
        """One line for a log: ``precision auto → bf16 (×1.40 faster than fp32, max error 0.9/255)``."""
        chosen = self.trial(self.choice)
        if self.choice != "fp32":
            return (f"precision auto → {self.choice} (×{self.speedup():.2f} faster than fp32, "
                    f"max error {chosen.max_error * 255:.1f}/255)")
        others = []
        for t in self.trials:
            if t.precision == "fp32":
                continue
            if t.max_error == float("inf"):
                others.append(f"{t.precision} NaN/Inf")
            elif not t.accepted:
                others.append(f"{t.precision} max error {t.max_error * 255:.1f}/255 > {MAX_ERROR * 255:.0f}/255")
            else:
                speed = self.speedup(t.precision) or 0.0
                gain = f" (under ×{MIN_GAIN})" if speed > 1 else ""
                others.append(f"{t.precision} ×{speed:.2f} the speed of fp32{gain}, "
                              f"max error {t.max_error * 255:.1f}/255")
        return "precision auto → fp32" + (f" ({'; '.join(others)})" if others else "")


_CALIBRATIONS: dict[tuple[str, str], Calibration] = {}


def calibration_input(model: nn.Module, image: np.ndarray | None = None) -> torch.Tensor:
    """The (1, C, H, W) float32 LQ input of a calibration: a centre crop of the bundled calibration image (or of
    ``image``, H×W×3 uint8) sized for the model's scale, padded to its size multiple; inpainting models get a
    centred square hole."""
    from PIL import Image

    from diffir.nn.padding import pad_to_multiple

    c = model.descriptor  # type: ignore[attr-defined]
    if image is None:
        with Image.open(CALIBRATION_IMAGE) as im:
            image = np.asarray(im.convert("RGB"))
    side = CALIBRATION_SIDE.get(c.scale if c.task == "sr" else 1, 64)
    h, w = min(side, image.shape[0]), min(side, image.shape[1])
    top, left = (image.shape[0] - h) // 2, (image.shape[1] - w) // 2
    rgb = torch.from_numpy(image[top: top + h, left: left + w].astype(np.float32) / 255).permute(2, 0, 1)[None]
    inpaint = c.task == "inpaint"
    colour = c.in_channels - int(inpaint)
    if colour == 1:
        rgb = (rgb * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    elif colour != 3:
        rgb = rgb[:, :1].expand(-1, colour, -1, -1)
    if inpaint:
        hole = torch.zeros(1, 1, h, w)
        hole[..., h // 4: h - h // 4, w // 4: w - w // 4] = 1
        rgb = torch.cat([rgb * (1 - hole), hole], dim=1)
    return pad_to_multiple(rgb.contiguous(), c.size_multiple)


def weights_key(model: nn.Module) -> str:
    """A process-local identity of a model's architecture and weights (two loads of one file share it)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(type(model).__name__.encode())
    config = getattr(model, "config", None)
    if hasattr(config, "to_json"):
        digest.update(config.to_json().encode())
    tensors = [(name, t) for name, t in model.state_dict().items() if t.is_floating_point()]
    for name, t in tensors:
        digest.update(f"{name}{tuple(t.shape)}".encode())
    if tensors:
        with torch.no_grad():  # two weighted sums per tensor (float32: MPS has no float64)
            sums = []
            for _, t in tensors:
                flat = t.detach().flatten().float()
                ramp = torch.linspace(1, 2, flat.numel(), device=flat.device)
                sums += [flat.sum(), (flat * ramp).sum()]
        digest.update(torch.stack(sums).cpu().numpy().tobytes())
    return digest.hexdigest()


def _seconds(precision: str, run: Callable[[], torch.Tensor], device: torch.device) -> float:
    """Wall time of one ``run()`` in ``precision`` (the device synchronised around it)."""
    _synchronize(device)
    t0 = time.perf_counter()
    run()
    _synchronize(device)
    return time.perf_counter() - t0


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps" and hasattr(torch, "mps"):
        torch.mps.synchronize()


def calibrate(model: nn.Module, device: torch.device, *, candidates: list[str] | None = None, rounds: int = 3,
              image: np.ndarray | None = None, cache: bool = True) -> Calibration:
    """Choose the precision of ``model``'s restoration network on ``device`` by measurement.

    Condition and prior are computed once in float32 (as the Restorer does); then the network runs once per
    candidate (warm-up: oneDNN/cuDNN set-up, and the output checked against float32: finite and within
    ``MAX_ERROR``), then ``rounds`` more times per accepted candidate, alternating so that a change of machine load
    hits all alike.  The choice is the candidate with the least median time; a reduced precision has to beat
    float32 by ``MIN_GAIN``.  Cached per process by (model weights, device) unless ``cache=False`` or
    ``candidates``/``image`` are given.
    """
    candidates = candidates or candidate_precisions(device)
    if candidates[0] != "fp32":
        raise ValueError("the first candidate must be fp32 (the reference)")
    default = cache and image is None and candidates == candidate_precisions(device)
    key = (weights_key(model), str(device)) if default else ("", "")
    if default and key in _CALIBRATIONS:
        return _CALIBRATIONS[key]
    lq = calibration_input(model, image)
    param_dtype = next(model.parameters()).dtype
    lq = lq.to(device, param_dtype)
    with torch.no_grad():
        prior = model.sample_prior(model.condition_of(lq), torch.Generator().manual_seed(0))  # type: ignore[operator]

    def runner(name: str) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            with torch.no_grad(), autocast(device, PRECISIONS[name]):
                return model.restore(lq, prior)  # type: ignore[operator]
        return run

    runs = {name: runner(name) for name in candidates}
    reference = runs["fp32"]().float()
    if not all_finite(reference):
        raise DiffIRError("the model produced NaN/Inf even in float32 (broken or mismatched weights?)")
    reference = reference.clamp(0, 1)
    errors = {"fp32": 0.0}
    for name in candidates[1:]:
        out = runs[name]().float()
        errors[name] = float((out.clamp(0, 1) - reference).abs().max()) if all_finite(out) else float("inf")
    timed = [name for name in candidates if errors[name] <= MAX_ERROR]
    seconds: dict[str, list[float]] = {name: [] for name in candidates}
    if len(timed) > 1:
        for _ in range(rounds):
            for name in timed:
                seconds[name].append(_seconds(name, runs[name], device))
    trials = tuple(Trial(name, errors[name], tuple(seconds[name])) for name in candidates)
    choice = "fp32"
    if len(timed) > 1:
        base = statistics.median(seconds["fp32"])
        best = min(timed, key=lambda n: statistics.median(seconds[n]))
        if best != "fp32" and base >= MIN_GAIN * statistics.median(seconds[best]):
            choice = best
    result = Calibration(choice, trials, (int(lq.shape[-2]), int(lq.shape[-1])))
    if default:
        _CALIBRATIONS[key] = result
    return result


def clear_calibrations() -> None:
    """Forget every cached ``auto`` choice of this process."""
    _CALIBRATIONS.clear()


# ---------------------------------------------------------------------------------------------- torch.compile
class CompiledNetwork:
    """``fn`` (the restoration network) under ``torch.compile``, falling back to ``fn`` itself if that fails.

    Compilation happens on the first call; its time is printed once on stderr.  If torch.compile is unavailable,
    or a compiled call raises while the plain call succeeds (no C compiler, an unsupported operation ...), one
    warning is given and every later call runs uncompiled; an error of the plain call too is the model's own and
    is raised.  Out-of-memory errors are passed on untouched (the Restorer's tile halving handles them).
    """

    def __init__(self, fn: Callable[..., torch.Tensor]) -> None:
        self.eager = fn
        self.compile_seconds: float | None = None
        self.failed: str | None = None
        try:
            self.compiled: Callable[..., torch.Tensor] | None = torch.compile(fn)
        except Exception as exc:  # noqa: BLE001 - any failure to set up means: run uncompiled
            self._give_up(exc)

    def __call__(self, *args: torch.Tensor) -> torch.Tensor:
        if self.compiled is None:
            return self.eager(*args)
        t0 = time.perf_counter()
        try:
            out = self.compiled(*args)
        except Exception as exc:  # noqa: BLE001 - classified below
            if is_out_of_memory(exc):
                raise
            out = self.eager(*args)  # raises if the model itself fails
            self._give_up(exc)
            return out
        if self.compile_seconds is None:
            self.compile_seconds = time.perf_counter() - t0
            print(f"diffir: torch.compile: the restoration network compiled in {self.compile_seconds:.1f} s "
                  "(first call, including its run)", file=sys.stderr, flush=True)
        return out

    def _give_up(self, exc: BaseException) -> None:
        self.compiled = None
        self.failed = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
        warnings.warn(f"torch.compile failed ({self.failed}); running the network uncompiled", stacklevel=3)
