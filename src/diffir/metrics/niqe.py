"""NIQE (Mittal et al., 2013), MATLAB-compatible, with the pristine model shipped by BasicSR.

Conventions (those of the MATLAB release and BasicSR's ``calculate_niqe``): the image is converted to MATLAB Y
(0..255) and **rounded**, ``crop_border`` removed, cut to whole 96×96 blocks (no overlap); features are
measured at full and half resolution (MATLAB bicubic ``imresize`` with antialiasing, on the unrounded float
image); 7×7 Gaussian local normalisation with replicated borders and ``sigma + 1`` in the denominator;
18 AGGD/GGD features per scale.  Lower is better.  Needs two whole blocks (96×192) after cropping.
Flat (e.g. saturated) blocks are handled as BasicSR and MATLAB do (see ``_aggd`` and ``_quality``).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from diffir.bundled import asset_path
from diffir.data.imresize import imresize
from diffir.metrics.color import rgb_to_y

__all__ = ["calculate_niqe", "niqe_features"]

_BLOCK = 96
# Products of the normalised image with its neighbour along these (row, col) shifts (circular, like circshift).
_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))
# |pixel - local mean| below this (on the 0..255 scale) is floating-point noise of the 7x7 filter, not signal.
_ROUNDING = 1e-9


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
    """Asymmetric generalised Gaussian fit: (shape, left scale, right scale).

    Degenerate blocks (flat, e.g. saturated: all zero after normalisation; or values of one sign only) are
    handled as MATLAB's ``min`` and BasicSR's ``np.argmin`` do: the moment ratio is NaN, every candidate's
    distance is NaN, and the first candidate shape (0.2) is taken; the missing side's scale stays NaN.  The
    caller's ``nanmean`` then still counts that shape, as the reference implementations do.
    """
    v = values.ravel()
    neg, pos = v[v < 0], v[v > 0]
    # float64 scalars, not Python floats: a scale that underflows to 0 gives inf/NaN, not ZeroDivisionError.
    left = np.sqrt(np.mean(neg**2)) if neg.size else np.float64("nan")
    right = np.sqrt(np.mean(pos**2)) if pos.size else np.float64("nan")
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        gamma_hat = left / right
        r_hat = np.mean(np.abs(v)) ** 2 / np.mean(v**2)
        r_norm = r_hat * (gamma_hat**3 + 1) * (gamma_hat + 1) / (gamma_hat**2 + 1) ** 2
    shapes, ratio = _ggd_table()
    alpha = float(shapes[np.argmin((ratio - r_norm) ** 2)]) if np.isfinite(r_norm) else float(shapes[0])
    k = math.sqrt(math.gamma(1 / alpha) / math.gamma(3 / alpha))
    return alpha, float(left) * k, float(right) * k


def _block_features(block: np.ndarray) -> list[float]:
    alpha, bl, br = _aggd(block)
    feats = [alpha, (bl + br) / 2]
    for shift in _SHIFTS:
        a, bl, br = _aggd(block * np.roll(block, shift, axis=(0, 1)))
        feats += [a, (br - bl) * (math.gamma(2 / a) / math.gamma(1 / a)), bl, br]
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
        centred = img - mu
        # In a flat area (e.g. saturated) img - mu is rounding noise (~1e-13, its sign set by the summation order):
        # make it the exact 0 it is, so a flat block is degenerate the same way whatever computed the filter.
        centred[np.abs(centred) < _ROUNDING] = 0.0
        norm = centred / (sigma + 1)
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
    if not np.isfinite(arr).all():
        raise ValueError("NIQE needs finite pixel values; the image has NaN/Inf")
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
    if rows * cols < 2:  # the feature covariance needs two blocks
        raise ValueError(f"NIQE needs at least two {_BLOCK}x{_BLOCK} blocks ({_BLOCK}x{2 * _BLOCK} pixels after "
                         f"crop_border), got {arr.shape[1]}x{arr.shape[0]} (W x H)")
    feats = niqe_features(arr[: rows * _BLOCK, : cols * _BLOCK])
    return _quality(feats)


def _quality(feats: np.ndarray) -> float:
    """Distance of the blocks' feature Gaussian to the pristine one (BasicSR's / MATLAB's aggregation).

    Mean over the blocks ignoring NaN features (``nanmean``); covariance over the blocks with no NaN feature
    (MATLAB ``nancov``).  A flat or saturated block has NaN scales, so it counts in the mean of its other
    features only and not in the covariance.
    """
    mu_pris, cov_pris, _ = _pristine()
    complete = feats[~np.isnan(feats).any(axis=1)]
    if len(complete) < 2:
        # The covariance needs two blocks: without them NIQE is undefined (pinv would fail or give NaN).
        raise ValueError(f"NIQE is undefined here: {len(feats) - len(complete)} of the {len(feats)} "
                         f"{_BLOCK}x{_BLOCK} blocks are flat (e.g. saturated); it needs at least 2 textured blocks")
    mu = np.nanmean(feats, axis=0)
    cov = np.cov(complete, rowvar=False)
    diff = mu_pris - mu
    quality = diff @ np.linalg.pinv((cov_pris + cov) / 2) @ diff
    return float(np.sqrt(quality))
