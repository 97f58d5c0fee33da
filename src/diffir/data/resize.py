"""Resizing for degradations: MATLAB-compatible bicubic and torch's interpolation modes."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

TORCH_MODES: tuple[str, ...] = ("area", "bilinear", "bicubic")


def matlab_bicubic(
    x: torch.Tensor, scale: float, output_shape: tuple[int, int], round_uint8: bool = False
) -> torch.Tensor:
    """MATLAB ``imresize(x, scale, 'bicubic')`` of a (B, C, H, W) float tensor.

    ``output_shape`` is passed explicitly because ceil(H·(1/3)) can be off by one in floating point.
    ``round_uint8`` mimics MATLAB on uint8 images (rounded after each 1-D pass).
    """
    from diffir.data.imresize import imresize_torch

    return imresize_torch(x, scale=scale, size=tuple(output_shape), round_uint8=round_uint8)


def resize(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """Resize (B, C, H, W) to ``size`` with a torch mode ("area", "bilinear", "bicubic", "nearest").

    Bilinear/bicubic use ``align_corners=False`` and no antialiasing, as the Real-ESRGAN recipe does with
    ``F.interpolate``; bicubic can overshoot, so callers clamp afterwards.
    """
    size = (max(1, int(size[0])), max(1, int(size[1])))
    if tuple(x.shape[-2:]) == size:
        return x
    if mode in ("bilinear", "bicubic"):
        return F.interpolate(x, size=size, mode=mode, align_corners=False)
    return F.interpolate(x, size=size, mode=mode)


def scaled_size(h: int, w: int, factor: float) -> tuple[int, int]:
    """int(h·factor), int(w·factor) floored at 1 (the truncation the reference pipeline uses)."""
    return max(1, int(h * factor)), max(1, int(w * factor))


def ceil_div_size(h: int, w: int, scale: int) -> tuple[int, int]:
    return math.ceil(h / scale), math.ceil(w / scale)
