"""Which models and sizes a benchmark runs: model specs (preset, bundled name, checkpoint, module), LQ sizes
and their validation, parameters and MACs (the count ``diffir info`` prints)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from diffir.archs.base import ModelDescriptor
from diffir.errors import DiffIRError

#: The paper's bicubic ×4 SR network at 128×128 LQ (512×512 output) and its motion-deblurring network at 256×256.
DEFAULT_MODELS = ("diffir_sr_x4_s2", "diffir_deblur_s2")
_SIZE = re.compile(r"^\s*(\d+)\s*(?:[x×X*,]\s*(\d+))?\s*$")


@dataclass
class BenchModel:
    """A model to benchmark: how to load it here, and how a fresh worker process loads it (``source``)."""

    label: str
    load: Callable[[], nn.Module]
    #: {"preset": name} (random weights, seed 0) or {"model": path or name for load_inference_model}; None for an
    #: in-memory module (saved to a temporary file when a worker process needs it).
    source: dict[str, Any] | None
    module: nn.Module | None = None
    descriptor: ModelDescriptor | None = field(default=None, repr=False)


def load_source(source: dict[str, Any]) -> nn.Module:
    """The stage-2 model a worker ``source`` names (presets: random weights drawn with seed 0)."""
    from diffir.pipelines.model_source import load_inference_model

    if "preset" in source:
        from diffir.registry import create_model

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(source.get("seed", 0)))
            return load_inference_model(create_model(source["preset"]))
    return load_inference_model(source["model"])


def resolve_model(spec: str | nn.Module | tuple[str, nn.Module]) -> BenchModel:
    """A name (installed, bundled, else a preset's random weights), a checkpoint path / run folder, an in-memory
    stage-2 module, or (label, module).  Loads it once to check it is a stage-2 model."""
    from diffir.io.locate import locate_model
    from diffir.pipelines.model_source import load_inference_model

    if isinstance(spec, tuple):
        label, module = spec
        bench = BenchModel(label, lambda: module, None, module)
    elif isinstance(spec, nn.Module):
        bench = BenchModel(_label_of(spec), lambda: spec, None, spec)
    else:
        text = str(spec)
        where = locate_model(text, allow_preset=True)  # installed or bundled weights win over a preset's
        if where.source == "preset":
            source: dict[str, Any] = {"preset": text, "seed": 0}
        else:
            path = Path(text).expanduser()
            source = {"model": str(path.resolve()) if path.exists() else text}
        bench = BenchModel(text, lambda: load_source(source), source)
    model = load_inference_model(bench.load())
    bench.descriptor = model.descriptor  # type: ignore[assignment]
    return bench


def _label_of(model: nn.Module) -> str:
    meta = getattr(getattr(model, "config", None), "meta", None) or {}
    name = meta.get("preset") or type(model).__name__
    return f"{name} (custom)" if meta.get("overrides") else str(name)


def parse_size(text: str | int | tuple[int, int]) -> tuple[int, int]:
    """``"128"``, ``"128x96"`` (H×W) or (H, W) → (H, W)."""
    if isinstance(text, tuple):
        h, w = text
    elif isinstance(text, int):
        h = w = text
    else:
        m = _SIZE.match(str(text))
        if not m:
            raise DiffIRError(f"--size {text!r}: use HxW or N (LQ pixels), e.g. 128x128")
        h = int(m.group(1))
        w = int(m.group(2) or h)
    if h < 1 or w < 1:
        raise DiffIRError(f"--size {h}x{w}: height and width must be positive")
    return int(h), int(w)


def default_size(descriptor: ModelDescriptor) -> tuple[int, int]:
    """128×128 LQ for SR ×2/×4 (×4: a 512×512 output), 256×256 for ×1 models; rounded up to the size multiple."""
    side = 128 if descriptor.scale > 1 else 256
    m = descriptor.size_multiple
    side = math.ceil(side / m) * m
    return side, side


def check_size(label: str, descriptor: ModelDescriptor, size: tuple[int, int]) -> None:
    """One-line error unless both sides are multiples of the model's size multiple."""
    h, w = size
    m = descriptor.size_multiple
    if h % m or w % m:
        up = f"{math.ceil(h / m) * m}x{math.ceil(w / m) * m}"
        raise DiffIRError(f"--size {h}x{w} does not fit {label}: height and width must be multiples of {m} "
                          f"(e.g. {up})")


def parameter_count(model: nn.Module) -> int:
    from diffir.profile import parameter_breakdown

    return parameter_breakdown(model)["total"]


@torch.no_grad()
def macs_at(model: nn.Module, height: int, width: int) -> int:
    """MACs of one inference forward at H×W LQ: :func:`diffir.profile.count_macs` (what ``diffir info`` prints)
    for square sizes, the same count with an H×W input otherwise."""
    from diffir.profile import count_macs
    from diffir.runtime.execution import reference_path

    if height == width:
        return count_macs(model, height)
    c = model.descriptor  # type: ignore[attr-defined]
    counter = FlopCounterMode(display=False)
    with counter, reference_path():  # the papers' count, as count_macs
        model(torch.zeros(1, c.in_channels, height, width))
    return counter.get_total_flops() // 2
