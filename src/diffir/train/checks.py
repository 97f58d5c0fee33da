"""Config checks that need the network: built (on the meta device, no memory) when the config is loaded.

A bad override (``dim: -8``), a patch the network cannot take, a ×2 degradation for a ×4 model or a device
that does not exist is reported as one line naming the config key before any data is read, instead of as a
traceback (or a silently wrong run) minutes later.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from diffir.archs.base import ModelDescriptor
from diffir.errors import ConfigError, DiffIRError

if TYPE_CHECKING:
    from diffir.train.config import DatasetSection, TrainConfig

Where = Callable[[str], str]  # config key -> "<config file>: <key>" (or "--set <key>")


def check_against_model(cfg: TrainConfig, where: Where) -> ModelDescriptor:
    """Validate what depends on the network; returns its descriptor."""
    desc = model_descriptor(cfg, where)
    check_device(cfg.train.device, where("train.device"))
    for name in ("train", "val"):
        section = getattr(cfg.data, name)
        if section is not None:
            _check_dataset(section, f"data.{name}", desc, cfg.model.preset, where)
    prog = cfg.train.progressive
    if prog is not None:
        for patch in prog.patch_sizes:
            _check_patch(patch, desc, cfg.model.preset, where("train.progressive.patch_sizes"))
        loader_patch = cfg.data.train.patch_size
        if loader_patch is not None and max(prog.patch_sizes) > loader_patch:
            raise ConfigError(f"{where('train.progressive.patch_sizes')}: {max(prog.patch_sizes)} is larger than "
                              f"data.train.patch_size {loader_patch}, which the progressive windows are cut from")
    return desc


def model_descriptor(cfg: TrainConfig, where: Where) -> ModelDescriptor:
    from diffir.registry import create_model, get_config

    try:
        get_config(cfg.model.preset)
    except DiffIRError as exc:
        raise ConfigError(f"{where('model.preset')}: {exc}") from None
    overrides = cfg.model_overrides()
    key = "model.overrides" if cfg.diffusion.timesteps is None else "model.overrides / diffusion.timesteps"
    try:
        with torch.device("meta"):  # shapes only: no memory, no time
            model = create_model(cfg.model.preset, **overrides)
    except (ValueError, TypeError) as exc:  # ConfigError is a ValueError
        raise ConfigError(f"{where(key)}: {exc}") from None
    except Exception:  # noqa: BLE001 - some construction step may not run on "meta": build it for real
        try:
            model = create_model(cfg.model.preset, **overrides)
        except Exception as exc:  # noqa: BLE001 - a network that cannot be built is a config error here
            raise ConfigError(f"{where(key)}: the network cannot be built with these values "
                              f"({type(exc).__name__}: {exc})") from None
    return model.descriptor


def check_device(name: str, where: str) -> None:
    """The device must exist on this machine (the trainer resolves it with pipelines.precision.resolve_device)."""
    text = name.strip().lower()
    if text == "auto":
        return
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"{where}: unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{where}: CUDA is not available on this machine; use device: cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"{where}: {name} does not exist, only {torch.cuda.device_count()} CUDA device(s) "
                              "are visible; use device: cuda or auto")
    if device.type == "mps":
        backend = getattr(torch.backends, "mps", None)
        if not (backend and backend.is_available()):
            raise ConfigError(f"{where}: MPS is not available on this machine; use device: cpu or auto")


def _check_dataset(section: DatasetSection, key: str, desc: ModelDescriptor, preset: str, where: Where) -> None:
    if section.kind == "inpaint" and desc.task != "inpaint":
        raise ConfigError(f"{where(key + '.kind')}: 'inpaint' data needs an inpainting model, but {preset} does "
                          f"{desc.task}")
    deg = section.degradation if section.kind == "folder" else None
    if deg is not None:
        _check_degradation(deg.name, deg.options, key + ".degradation", desc, preset, where)
    if section.patch_size is None:
        return
    patch = section.patch_size
    if deg is not None and deg.name.strip().lower().startswith("realesrgan") and deg.options.get("gt_size"):
        # Real-ESRGAN crops its own gt_size window out of the degraded patch: that crop is what the network sees
        gt_size = deg.options["gt_size"]
        if not isinstance(gt_size, int) or isinstance(gt_size, bool) or gt_size <= 0:
            raise ConfigError(f"{where(key + '.degradation.options.gt_size')}: {gt_size!r} must be a positive "
                              "integer")
        _check_patch(min(patch, gt_size), desc, preset, where(key + ".degradation.options.gt_size"))
        if patch < desc.scale * desc.size_multiple:
            _check_patch(patch, desc, preset, where(key + ".patch_size"))
        return
    _check_patch(patch, desc, preset, where(key + ".patch_size"))


def _check_patch(patch: int, desc: ModelDescriptor, preset: str, where: str) -> None:
    """A GT patch must give a whole LQ patch (÷ scale) that the network takes (a multiple of its size multiple)."""
    step = desc.scale * desc.size_multiple
    if patch <= 0 or patch % step:
        near = max(step, round(patch / step) * step)
        why = (f"the scale {desc.scale} × the size multiple {desc.size_multiple} of {preset}" if desc.scale > 1
               else f"the size multiple of {preset}")
        raise ConfigError(f"{where}: {patch} must be a positive multiple of {step} ({why}), e.g. {near}")


def degradation_scale(name: str, options: dict) -> int | None:
    """The LQ downscale a degradation applies (None: unknown name)."""
    from diffir.data.degradations import DEGRADATIONS

    key = name.strip().lower()
    if key not in DEGRADATIONS:
        return None
    m = re.search(r"_x(\d+)$", key)
    if m:
        return int(m.group(1))
    return options.get("scale", 1) if key == "diffbir" else 1


def _check_degradation(name: str, options: dict, key: str, desc: ModelDescriptor, preset: str,
                       where: Where) -> None:
    from diffir.data.degradations import list_degradations

    scale = degradation_scale(name, options)
    if scale is None:
        import difflib

        near = difflib.get_close_matches(name.strip().lower(), list_degradations(), n=1)
        hint = f"did you mean {near[0]!r}? " if near else ""
        raise ConfigError(f"{where(key + '.name')}: unknown degradation {name!r}; {hint}choose one of "
                          f"{', '.join(list_degradations())}")
    if not isinstance(scale, int) or isinstance(scale, bool) or scale <= 0:
        raise ConfigError(f"{where(key + '.options.scale')}: {scale!r} must be a positive integer")
    if scale != desc.scale:
        same = [d for d in list_degradations() if d.startswith(name.strip().lower().split("_x")[0] + "_x")
                and d.endswith(f"_x{desc.scale}")]
        fix = f"use {same[0]}" if same else f"use a degradation of scale {desc.scale}"
        raise ConfigError(f"{where(key + '.name')}: {name} makes ×{scale} pairs but {preset} is a ×{desc.scale} "
                          f"model; {fix} (or a ×{scale} preset)")


__all__ = ["check_against_model", "check_device", "degradation_scale", "model_descriptor"]
