"""MATLAB-compatible bicubic ``imresize`` (numpy and batched torch).

Benchmark LR images (Set5/Set14/B100 ``LR_bicubic``) were made with MATLAB's
``imresize(img, 1/s, 'bicubic')``, which widens the cubic kernel by ``1/s`` when downscaling (antialiasing)
and mirrors the border.  ``cv2.resize`` and ``PIL.Image.resize`` do not do the same thing, and PSNR numbers
computed against LR made with them are not comparable with the field's tables.  This module re-derives
MATLAB's algorithm from its documented behaviour:

* Keys' cubic kernel with ``a = -0.5``;
* output pixel ``x`` (1-based) samples input coordinate ``u = x / s + 0.5 * (1 - 1 / s)``;
* when ``s < 1`` and antialiasing is on, the kernel is ``s * cubic(s * t)`` with width ``4 / s``;
* weights are normalised to sum to one; out-of-range taps are mirrored (``symmetric``: 1 2 3 | 3 2 1);
* the dimension with the smaller scale is resized first (rows first for equal scales);
* uint8 input is rounded back to uint8 after *each* 1-D pass, as MATLAB does for integer classes.

Each 1-D pass is a dense ``(out, in)`` weight matrix applied with a matmul: simple, exact and fast at the
image sizes used for evaluation and on-the-fly training LR generation.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

__all__ = ["cubic", "resize_matrix", "imresize", "imresize_torch", "output_size"]


def cubic(t: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with ``a = -0.5`` (MATLAB's ``'bicubic'``)."""
    at = np.abs(t)
    at2, at3 = at * at, at * at * at
    near = (1.5 * at3 - 2.5 * at2 + 1.0) * (at <= 1)
    far = (-0.5 * at3 + 2.5 * at2 - 4.0 * at + 2.0) * ((at > 1) & (at <= 2))
    return near + far


def output_size(in_size: int, scale: float) -> int:
    """MATLAB's output length: ``ceil(in * scale)`` (exact for the integer factors used in benchmarks)."""
    # Guard against 64/(1/4) style rounding noise producing ceil(16.000000000000004) = 17.
    return int(math.ceil(round(in_size * scale, 9)))


@lru_cache(maxsize=64)
def resize_matrix(in_size: int, out_size: int, scale: float, antialiasing: bool = True) -> np.ndarray:
    """The ``(out_size, in_size)`` float64 matrix of one 1-D MATLAB bicubic pass (rows sum to 1)."""
    kernel_width = 4.0
    if scale < 1 and antialiasing:
        kernel_width /= scale
    x = np.arange(1, out_size + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - kernel_width / 2.0)
    taps = int(math.ceil(kernel_width)) + 2
    idx = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]  # 1-based input positions
    dist = u[:, None] - idx
    weights = scale * cubic(scale * dist) if (scale < 1 and antialiasing) else cubic(dist)
    weights /= weights.sum(axis=1, keepdims=True)
    # Symmetric mirroring of 1-based positions onto [1, in_size]: period 2 * in_size, 1..n then n..1.
    period = 2 * in_size
    pos = np.mod(idx.astype(np.int64) - 1, period)
    pos = np.where(pos < in_size, pos, period - 1 - pos)
    matrix = np.zeros((out_size, in_size), dtype=np.float64)
    rows = np.repeat(np.arange(out_size), taps)
    np.add.at(matrix, (rows, pos.ravel()), weights.ravel())
    matrix.setflags(write=False)
    return matrix


def _scales_and_sizes(
    shape_hw: tuple[int, int], scale: float | tuple[float, float] | None, size: tuple[int, int] | None
) -> tuple[tuple[float, float], tuple[int, int]]:
    h, w = shape_hw
    if size is not None:
        out_h, out_w = int(size[0]), int(size[1])
        scales = (out_h / h, out_w / w) if scale is None else _pair(scale)
        return scales, (out_h, out_w)
    if scale is None:
        raise ValueError("imresize needs either scale or size")
    sh, sw = _pair(scale)
    return (sh, sw), (output_size(h, sh), output_size(w, sw))


def _pair(scale: float | tuple[float, float]) -> tuple[float, float]:
    if isinstance(scale, (tuple, list)):
        return float(scale[0]), float(scale[1])
    return float(scale), float(scale)


def _pass_order(scales: tuple[float, float]) -> tuple[int, int]:
    # MATLAB sorts dimensions by scale (stable): smaller factor first, rows first on ties.
    return (0, 1) if scales[0] <= scales[1] else (1, 0)


def imresize(
    img: np.ndarray,
    scale: float | tuple[float, float] | None = None,
    size: tuple[int, int] | None = None,
    antialiasing: bool = True,
) -> np.ndarray:
    """MATLAB ``imresize(img, scale, 'bicubic')`` on an ``HW`` or ``HWC`` array.

    ``uint8`` in → ``uint8`` out (rounded after each pass, like MATLAB); float in → float64 out, unclipped.
    Give ``scale`` (e.g. ``1/4``) or ``size=(out_h, out_w)``.
    """
    arr = np.asarray(img)
    if arr.ndim not in (2, 3):
        raise ValueError(f"imresize expects an HW or HWC array, got shape {arr.shape}")
    is_uint8 = arr.dtype == np.uint8
    scales, out_hw = _scales_and_sizes(arr.shape[:2], scale, size)
    out = arr.astype(np.float64)
    for axis in _pass_order(scales):
        mat = resize_matrix(out.shape[axis], out_hw[axis], scales[axis], antialiasing)
        out = np.tensordot(mat, out, axes=([1], [axis]))  # resized axis moves to the front
        out = np.moveaxis(out, 0, axis)
        if is_uint8:
            # MATLAB rounds half away from zero (np.round rounds half to even); values are >= 0 here.
            out = np.floor(np.clip(out, 0, 255) + 0.5)
    return out.astype(np.uint8) if is_uint8 else out


def imresize_torch(
    x,
    scale: float | tuple[float, float] | None = None,
    size: tuple[int, int] | None = None,
    antialiasing: bool = True,
    round_uint8: bool = False,
):
    """Batched MATLAB bicubic resize of a ``(..., H, W)`` float tensor (e.g. ``NCHW`` in [0, 1]).

    Runs in the tensor's dtype/device and is differentiable.  ``round_uint8=True`` quantises to 1/255 after
    each pass, reproducing MATLAB's uint8 behaviour for inputs that are exact multiples of 1/255.
    """
    import torch

    if x.ndim < 2:
        raise ValueError(f"imresize_torch expects (..., H, W), got shape {tuple(x.shape)}")
    scales, out_hw = _scales_and_sizes((x.shape[-2], x.shape[-1]), scale, size)
    dtype = x.dtype if x.is_floating_point() else torch.float32
    # In uint8 mode work on the 0..255 grid, so that MATLAB's exact .5 ties stay exact in floating point.
    out = torch.round(x.to(dtype) * 255.0) if round_uint8 else x.to(dtype)
    for axis in _pass_order(scales):
        dim = out.ndim - 2 + axis
        weights = resize_matrix(out.shape[dim], out_hw[axis], scales[axis], antialiasing)
        mat = torch.from_numpy(np.array(weights)).to(device=out.device, dtype=dtype)
        out = out @ mat.T if axis == 1 else mat @ out
        if round_uint8:
            out = torch.floor(torch.clamp(out, 0, 255) + 0.5)
    return out / 255.0 if round_uint8 else out
