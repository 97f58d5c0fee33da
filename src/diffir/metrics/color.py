"""MATLAB ``rgb2ycbcr`` (ITU-R BT.601, studio swing): the Y channel SR papers report PSNR/SSIM on."""

from __future__ import annotations

import numpy as np

__all__ = ["rgb2ycbcr", "rgb_to_y"]

# MATLAB's rgb2ycbcr for inputs scaled to [0, 1]: Y in [16, 235], Cb/Cr in [16, 240] (on a 0..255 scale).
_MATRIX = np.array(
    [
        [65.481, 128.553, 24.966],
        [-37.797, -74.203, 112.0],
        [112.0, -93.786, -18.214],
    ],
    dtype=np.float64,
)
_OFFSET = np.array([16.0, 128.0, 128.0], dtype=np.float64)


def rgb2ycbcr(img: np.ndarray, y_only: bool = False) -> np.ndarray:
    """RGB ``HWC`` (uint8 0..255 or float 0..1) → YCbCr float64 on a 0..255 scale, like MATLAB.

    The result is *not* rounded: BasicSR (and hence the published DiffIR numbers) keep the fractional Y.
    """
    rgb = np.asarray(img)
    rgb01 = rgb.astype(np.float64) / 255.0 if rgb.dtype == np.uint8 else rgb.astype(np.float64)
    if y_only:
        return rgb01 @ _MATRIX[0] + _OFFSET[0]
    return rgb01 @ _MATRIX.T + _OFFSET


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """Y (float64, 0..255 scale, shape ``HW``) of an RGB ``HWC`` image given on a 0..255 scale (any dtype).

    This is BasicSR's ``to_y_channel`` contract: float images are *also* taken to be on 0..255.
    A 2-D (grey) image passes through unchanged, as in BasicSR.
    """
    arr = np.asarray(img, dtype=np.float64)
    if arr.ndim == 2:
        return arr
    if arr.shape[-1] == 1:
        return arr[..., 0]
    return rgb2ycbcr(arr / 255.0, y_only=True)
