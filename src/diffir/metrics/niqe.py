"""NIQE (Mittal et al., 2013), MATLAB-compatible, with the pristine model shipped by BasicSR.

Conventions (those of the MATLAB release and BasicSR's ``calculate_niqe``): the image is converted to MATLAB Y
(0..255) and **rounded**, ``crop_border`` removed, cut to whole 96×96 blocks (no overlap); features are
measured at full and half resolution (MATLAB bicubic ``imresize`` with antialiasing, on the unrounded float
image); 7×7 Gaussian local normalisation with replicated borders and ``sigma + 1`` in the denominator;
18 AGGD/GGD features per scale.  Lower is better.  Needs images of at least 96×96 after cropping.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from diffir.data.imresize import imresize
from diffir.metrics.color import rgb_to_y
from diffir.metrics.weights import asset_path

__all__ = ["calculate_niqe", "niqe_features"]

_BLOCK = 96
# Products of the normalised image with its neighbour along these (row, col) shifts (circular, like circshift).
_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))


@lru_cache(maxsize=1)
def _pristine() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with np.load(asset_path("niqe_pris_params.npz")) as z:
        return z["mu_pris_param"].ravel(), z["cov_pris_param"], z["gaussian_window"]


@lru_cache(maxsize=1)
def _ggd_table() -> tuple[np.ndarray, np.ndarray]:
    # Shape parameters searched by moment matching, as in the MATLAB code: 0.2:0.001:10.
    shapes = np.arange(0.2, 10.001, 0.001)
    ratio = np.array([math.gamma(2 / a) ** 2 / (math.gamma(1 / a) * math.gamma(3 / a)) for a in shapes])
    return shapes, ratio


def _aggd(values: np.ndarray) -> tuple[float, float, float]:
    """Asymmetric generalised Gaussian fit: (shape, left scale, right scale)."""
    v = values.ravel()
    left = math.sqrt(np.mean(v[v < 0] ** 2)) if np.any(v < 0) else float("nan")
    right = math.sqrt(np.mean(v[v > 0] ** 2)) if np.any(v > 0) else float("nan")
    gamma_hat = left / right
    r_hat = np.mean(np.abs(v)) ** 2 / np.mean(v**2)
    r_norm = r_hat * (gamma_hat**3 + 1) * (gamma_hat + 1) / (gamma_hat**2 + 1) ** 2
    shapes, ratio = _ggd_table()
    alpha = float(shapes[np.argmin((ratio - r_norm) ** 2)]) if np.isfinite(r_norm) else float("nan")
    if not np.isfinite(alpha):
        return float("nan"), float("nan"), float("nan")
    k = math.sqrt(math.gamma(1 / alpha) / math.gamma(3 / alpha))
    return alpha, left * k, right * k


def _block_features(block: np.ndarray) -> list[float]:
    alpha, bl, br = _aggd(block)
    feats = [alpha, (bl + br) / 2]
    for shift in _SHIFTS:
        a, bl, br = _aggd(block * np.roll(block, shift, axis=(0, 1)))
        mean = (br - bl) * (math.gamma(2 / a) / math.gamma(1 / a)) if np.isfinite(a) else float("nan")
        feats += [a, mean, bl, br]
    return feats


def _local_filter(img: np.ndarray, window: np.ndarray) -> np.ndarray:
    # Correlation with replicated borders (MATLAB imfilter 'replicate'); the window is symmetric.
    r = window.shape[0] // 2
    padded = np.pad(img, r, mode="edge")
    views = np.lib.stride_tricks.sliding_window_view(padded, window.shape)
    return np.einsum("ijkl,kl->ij", views, window)


def niqe_features(y: np.ndarray) -> np.ndarray:
    """(blocks, 36) feature matrix of a Y image (float, 0..255, already cut to whole blocks)."""
    _, _, window = _pristine()
    rows, cols = y.shape[0] // _BLOCK, y.shape[1] // _BLOCK
    per_scale = []
    img = y
    for scale in (1, 2):
        mu = _local_filter(img, window)
        sigma = np.sqrt(np.abs(_local_filter(img * img, window) - mu * mu))
        norm = (img - mu) / (sigma + 1)
        size = _BLOCK // scale
        feats = [
            _block_features(norm[r * size : (r + 1) * size, c * size : (c + 1) * size])
            for c in range(cols)  # column-major block order, as MATLAB's blockproc output is read
            for r in range(rows)
        ]
        per_scale.append(np.array(feats))
        if scale == 1:
            img = imresize(img / 255.0, 0.5) * 255.0
    return np.concatenate(per_scale, axis=1)


def calculate_niqe(
    img: np.ndarray, crop_border: int = 0, input_order: str = "HWC", convert_to: str = "y", **kwargs
) -> float:
    """NIQE of one image on a 0..255 scale (RGB ``HWC``, or grey ``HW``).  Lower is better."""
    arr = np.asarray(img, dtype=np.float64)
    if input_order == "CHW" and arr.ndim == 3:
        arr = arr.transpose(1, 2, 0)
    if arr.ndim == 3:
        if convert_to == "y":
            arr = rgb_to_y(arr)
        elif convert_to == "gray":
            arr = arr @ np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])
        else:
            raise ValueError(f"convert_to must be 'y' or 'gray', got {convert_to!r}")
    if crop_border:
        arr = arr[crop_border:-crop_border, crop_border:-crop_border]
    arr = np.round(arr)  # MATLAB works on the uint8 Y image
    rows, cols = arr.shape[0] // _BLOCK, arr.shape[1] // _BLOCK
    if rows == 0 or cols == 0:
        raise ValueError(f"NIQE needs at least {_BLOCK}x{_BLOCK} pixels, got {arr.shape}")
    feats = niqe_features(arr[: rows * _BLOCK, : cols * _BLOCK])
    mu_pris, cov_pris, _ = _pristine()
    mu = np.nanmean(feats, axis=0)
    complete = feats[~np.isnan(feats).any(axis=1)]
    cov = np.cov(complete, rowvar=False)
    diff = mu_pris - mu
    quality = diff @ np.linalg.pinv((cov_pris + cov) / 2) @ diff
    return float(np.sqrt(quality))
