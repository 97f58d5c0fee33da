"""PSNR and SSIM with BasicSR's conventions and call signatures.

Conventions (the ones behind the published DiffIR / SwinIR / HAT numbers):

* images are on a **0..255 scale** (uint8 or float), ``HWC`` (or ``CHW`` with ``input_order='CHW'``), **RGB**
  (BasicSR reads BGR with OpenCV; we read RGB, the Y channel is the same);
* ``crop_border`` pixels are removed from every side (SR convention: ``crop_border = scale``);
* ``test_y_channel=True`` measures MATLAB ``rgb2ycbcr`` Y (16..235, *not* rounded), otherwise all channels;
* everything is computed in float64; PSNR uses peak 255 and returns ``inf`` for identical images;
* SSIM is Wang et al.'s: 11×11 Gaussian window σ = 1.5, C1 = (0.01·255)², C2 = (0.03·255)²,
  ``valid`` filtering (no padding), mean over the map, then mean over channels.

``calculate_psnr_pt`` / ``calculate_ssim_pt`` are the batched torch equivalents (NCHW, [0, 1]) for validation
during training; they agree with the numpy functions to ~1e-10.
"""

from __future__ import annotations

import math

import numpy as np

from diffir.metrics.color import rgb_to_y

__all__ = [
    "calculate_psnr",
    "calculate_ssim",
    "calculate_psnr_pt",
    "calculate_ssim_pt",
    "gaussian_window_1d",
]

_SSIM_SIZE = 11
_SSIM_SIGMA = 1.5
_C1 = (0.01 * 255.0) ** 2
_C2 = (0.03 * 255.0) ** 2


def _prepare(img: np.ndarray, img2: np.ndarray, crop_border: int, input_order: str, test_y_channel: bool):
    a, b = np.asarray(img), np.asarray(img2)
    if a.shape != b.shape:
        raise ValueError(f"image shapes differ: {a.shape} vs {b.shape}")
    if input_order not in ("HWC", "CHW"):
        raise ValueError(f"input_order must be 'HWC' or 'CHW', got {input_order!r}")
    if input_order == "CHW" and a.ndim == 3:
        a, b = a.transpose(1, 2, 0), b.transpose(1, 2, 0)
    a, b = a.astype(np.float64), b.astype(np.float64)
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    if crop_border:
        a = a[crop_border:-crop_border, crop_border:-crop_border]
        b = b[crop_border:-crop_border, crop_border:-crop_border]
    if test_y_channel:
        a, b = rgb_to_y(a)[..., None], rgb_to_y(b)[..., None]
    return a, b


def calculate_psnr(
    img: np.ndarray,
    img2: np.ndarray,
    crop_border: int,
    input_order: str = "HWC",
    test_y_channel: bool = False,
    **kwargs,
) -> float:
    """PSNR in dB between two images on a 0..255 scale (BasicSR ``calculate_psnr``)."""
    a, b = _prepare(img, img2, crop_border, input_order, test_y_channel)
    mse = float(np.mean((a - b) ** 2))
    if mse == 0:
        return float("inf")
    return 10.0 * math.log10(255.0 * 255.0 / mse)


def gaussian_window_1d(size: int = _SSIM_SIZE, sigma: float = _SSIM_SIGMA) -> np.ndarray:
    """Normalised 1-D Gaussian (the 2-D SSIM window is its outer product)."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x**2) / (2.0 * sigma * sigma))
    return g / g.sum()


def _filter_valid(img: np.ndarray, g: np.ndarray) -> np.ndarray:
    # Separable 'valid' correlation: the window never leaves the image, so no border convention is involved.
    rows = np.lib.stride_tricks.sliding_window_view(img, g.size, axis=0) @ g
    return np.lib.stride_tricks.sliding_window_view(rows, g.size, axis=1) @ g


def _ssim_single(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(_ssim_map(a, b)))


def _ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """SSIM of every 11x11 window that fits in the image: (H - 10, W - 10), window centres at [5:-5, 5:-5]."""
    g = gaussian_window_1d()
    mu_a, mu_b = _filter_valid(a, g), _filter_valid(b, g)
    var_a = _filter_valid(a * a, g) - mu_a**2
    var_b = _filter_valid(b * b, g) - mu_b**2
    cov = _filter_valid(a * b, g) - mu_a * mu_b
    num = (2 * mu_a * mu_b + _C1) * (2 * cov + _C2)
    den = (mu_a**2 + mu_b**2 + _C1) * (var_a + var_b + _C2)
    return num / den


def calculate_ssim(
    img: np.ndarray,
    img2: np.ndarray,
    crop_border: int,
    input_order: str = "HWC",
    test_y_channel: bool = False,
    **kwargs,
) -> float:
    """SSIM between two images on a 0..255 scale (BasicSR ``calculate_ssim``): mean over channels."""
    a, b = _prepare(img, img2, crop_border, input_order, test_y_channel)
    if min(a.shape[:2]) < _SSIM_SIZE:
        raise ValueError(f"SSIM needs >= {_SSIM_SIZE} px per side after cropping, got {a.shape[:2]}")
    return float(np.mean([_ssim_single(a[..., c], b[..., c]) for c in range(a.shape[2])]))


def _hole_pixels(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    hole = np.asarray(mask) > 0
    if hole.shape != tuple(shape[:2]):
        raise ValueError(f"mask {hole.shape} does not match the image {tuple(shape[:2])}")
    if not hole.any():
        raise ValueError("the mask has no hole pixel")
    return hole


def calculate_psnr_hole(img: np.ndarray, img2: np.ndarray, mask: np.ndarray, **kwargs) -> float:
    """PSNR (dB, peak 255) over the hole pixels only (``mask > 0``), all RGB channels: a filled-in region's own
    score, not diluted by the known pixels every method keeps."""
    a, b = _prepare(img, img2, 0, "HWC", False)
    hole = _hole_pixels(mask, a.shape)
    mse = float(np.mean((a[hole] - b[hole]) ** 2))
    return float("inf") if mse == 0 else 10.0 * math.log10(255.0 * 255.0 / mse)


def calculate_ssim_hole(img: np.ndarray, img2: np.ndarray, mask: np.ndarray, **kwargs) -> float:
    """SSIM (as :func:`calculate_ssim`, RGB) averaged over the windows centred on hole pixels."""
    a, b = _prepare(img, img2, 0, "HWC", False)
    hole = _hole_pixels(mask, a.shape)
    half = _SSIM_SIZE // 2
    centres = hole[half:-half, half:-half]
    if not centres.any():
        raise ValueError("no hole pixel lies 5 px or more inside the image (SSIM window)")
    return float(np.mean([_ssim_map(a[..., c], b[..., c])[centres].mean() for c in range(a.shape[2])]))


# ------------------------------------------------------------------------------------------------------------
# torch (batched NCHW, [0, 1]) versions for validation inside training loops


def _prepare_pt(img, img2, crop_border: int, test_y_channel: bool):
    import torch

    if img.shape != img2.shape:
        raise ValueError(f"tensor shapes differ: {tuple(img.shape)} vs {tuple(img2.shape)}")
    a, b = img.to(torch.float64), img2.to(torch.float64)
    if crop_border:
        a = a[..., crop_border:-crop_border, crop_border:-crop_border]
        b = b[..., crop_border:-crop_border, crop_border:-crop_border]
    if test_y_channel and a.shape[1] == 3:
        w = torch.tensor([65.481, 128.553, 24.966], dtype=torch.float64, device=a.device).view(1, 3, 1, 1)
        a = (a * w).sum(1, keepdim=True) + 16.0
        b = (b * w).sum(1, keepdim=True) + 16.0
    else:
        a, b = a * 255.0, b * 255.0
    return a, b


def calculate_psnr_pt(img, img2, crop_border: int, test_y_channel: bool = False, **kwargs):
    """Per-image PSNR (tensor of shape ``N``) of NCHW tensors in [0, 1]."""
    import torch

    a, b = _prepare_pt(img, img2, crop_border, test_y_channel)
    mse = ((a - b) ** 2).mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(255.0**2 / mse)


def calculate_ssim_pt(img, img2, crop_border: int, test_y_channel: bool = False, **kwargs):
    """Per-image SSIM (tensor of shape ``N``) of NCHW tensors in [0, 1]."""
    import torch
    import torch.nn.functional as F

    a, b = _prepare_pt(img, img2, crop_border, test_y_channel)
    g = torch.from_numpy(gaussian_window_1d()).to(a)
    window = torch.outer(g, g).expand(a.shape[1], 1, _SSIM_SIZE, _SSIM_SIZE)

    def filt(x):
        return F.conv2d(x, window, groups=a.shape[1])  # no padding: 'valid', as in the numpy version

    mu_a, mu_b = filt(a), filt(b)
    var_a = filt(a * a) - mu_a**2
    var_b = filt(b * b) - mu_b**2
    cov = filt(a * b) - mu_a * mu_b
    num = (2 * mu_a * mu_b + _C1) * (2 * cov + _C2)
    den = (mu_a**2 + mu_b**2 + _C1) * (var_a + var_b + _C2)
    return (num / den).mean(dim=(1, 2, 3))
