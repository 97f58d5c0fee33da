"""Synthesise the LQ side for GT-only folders (``--degrade``), deterministically per image.

* ``bicubic_x2|x3|x4`` — MATLAB bicubic downsampling of the GT cropped (top-left) to a multiple of the scale,
  exactly how the benchmark ``LR_bicubic`` folders were made (bit-exact on Set5).
* ``mask_thick|mask_thin|mask_medium|mask_thick_512|mask_thin_512`` — LaMa's evaluation mask presets
  (``diffir.data.masks``); the LQ is the GT with a hole mask.
* any other name of ``diffir.data.degradations.build_degradation`` (e.g. ``motion_blur``), quantised to uint8.

Image ``i`` always gets the same degradation for a given ``--seed`` (its own generator, seeded with seed and i).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from diffir.data.imresize import imresize
from diffir.errors import ConfigError

__all__ = ["Degraded", "degrade", "degradation_task"]

_BICUBIC = re.compile(r"^bicubic_x(\d)$")
_MASK = re.compile(r"^mask_(thick|thin|medium|thick_512|thin_512|thick_256|thin_256|medium_256)$")


@dataclass
class Degraded:
    lq: np.ndarray  # uint8 HWC
    gt: np.ndarray  # uint8 HWC (possibly cropped)
    mask: np.ndarray | None = None  # uint8 HW, 1 = hole


def degradation_task(name: str) -> tuple[str, int]:
    """(task, scale) implied by a degradation name."""
    m = _BICUBIC.match(name)
    if m:
        return "sr", int(m.group(1))
    if _MASK.match(name):
        return "inpaint", 1
    if name.startswith("realesrgan_x"):
        return "sr", int(name.rsplit("x", 1)[1])
    if name == "motion_blur":
        return "deblur", 1
    return "sr", 1


def _generator(seed: int, index: int):
    import torch

    return torch.Generator().manual_seed(seed * 1_000_003 + index)


def degrade(name: str, gt: np.ndarray, index: int, seed: int = 0) -> Degraded:
    m = _BICUBIC.match(name)
    if m:
        s = int(m.group(1))
        gt = gt[: gt.shape[0] // s * s, : gt.shape[1] // s * s]
        return Degraded(imresize(gt, 1 / s), gt)
    m = _MASK.match(name)
    if m:
        from diffir.data.masks import LamaMaskGenerator

        masks = LamaMaskGenerator.preset(m.group(1))
        hole = masks(gt.shape[0], gt.shape[1], _generator(seed, index))[0].numpy() > 0.5
        return Degraded(gt, gt, hole.astype(np.uint8))
    return _generic(name, gt, index, seed)


def _generic(name: str, gt: np.ndarray, index: int, seed: int) -> Degraded:
    import torch

    try:
        from diffir.data.degradations import build_degradation
    except ImportError as exc:  # pragma: no cover - the data package is part of diffir
        raise ConfigError(f"unknown degradation {name!r}") from exc
    deg = build_degradation(name)
    x = torch.from_numpy(np.array(gt)).permute(2, 0, 1)[None].float() / 255.0  # a writable copy
    with torch.no_grad():
        out = deg(x, _generator(seed, index))
    to_u8 = lambda t: np.rint(t[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype(np.uint8)  # noqa: E731
    mask = out.get("mask")
    hole = None if mask is None else (mask[0, 0].numpy() > 0.5).astype(np.uint8)
    lq = out["lq"][:, :3] if hole is None else out["gt"]
    return Degraded(to_u8(lq), to_u8(out["gt"]), hole)
