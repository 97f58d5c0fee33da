"""NIQE on images with flat (saturated) blocks, against an independent reimplementation of BasicSR's ``niqe``.

A flat block normalises to zeros: its AGGD moment ratio is 0/0.  BasicSR (``np.argmin`` over an all-NaN array)
and MATLAB (``min``) then both take the first candidate shape, 0.2, and leave the scales NaN; the image's feature
mean is a ``nanmean`` (so those 0.2 shapes count) and its covariance uses only the blocks without NaN.  Treating
the shape as NaN too dropped those blocks from the shape means (a saturated photo: 9.51 instead of 8.21).
In a flat area, pixel - local mean is rounding noise whose sign depends on the filter's summation order; both
implementations here make it the exact 0 it is (else the flat blocks' ~1e-31 scales enter the means).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import convolve
from scipy.special import gamma

from conftest import shared_data
from diffir.bundled import asset_path
from diffir.data.imresize import imresize
from diffir.metrics import calculate_niqe
from diffir.metrics.color import rgb_to_y
from diffir.metrics.niqe import _aggd, niqe_features


# ------------------------------------------------------------------------------ BasicSR's algorithm, written anew
def _basicsr_aggd(block: np.ndarray) -> tuple[float, float, float]:
    # Straight from the formulas with no guard at all, as BasicSR computes them (empty means and 0/0 give NaN).
    b = block.ravel()
    shapes = np.arange(0.2, 10.001, 0.001)
    r_gam = gamma(2 / shapes) ** 2 / (gamma(1 / shapes) * gamma(3 / shapes))
    left, right = np.sqrt(np.mean(b[b < 0] ** 2)), np.sqrt(np.mean(b[b > 0] ** 2))
    g = left / right
    r_norm = np.mean(np.abs(b)) ** 2 / np.mean(b**2) * (g**3 + 1) * (g + 1) / (g**2 + 1) ** 2
    alpha = shapes[np.argmin((r_gam - r_norm) ** 2)]
    k = np.sqrt(gamma(1 / alpha) / gamma(3 / alpha))
    return alpha, left * k, right * k


def _basicsr_niqe(y: np.ndarray) -> tuple[float, int]:
    """(NIQE, number of blocks with a NaN feature) of a rounded Y image, by BasicSR's steps (MATLAB resize)."""
    with np.load(asset_path("niqe_pris_params.npz")) as z:
        mu_p, cov_p, window = z["mu_pris_param"].ravel(), z["cov_pris_param"], z["gaussian_window"]
    rows, cols = y.shape[0] // 96, y.shape[1] // 96
    img = y[: rows * 96, : cols * 96]
    scales = []
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # the means of empty slices
        for scale in (1, 2):
            mu = convolve(img, window, mode="nearest")
            sigma = np.sqrt(np.abs(convolve(img * img, window, mode="nearest") - mu * mu))
            centred = img - mu
            centred[np.abs(centred) < 1e-9] = 0  # flat is flat: exact arithmetic, not the filter's rounding noise
            norm = centred / (sigma + 1)
            s = 96 // scale
            feats = []
            for c in range(cols):
                for r in range(rows):
                    block = norm[r * s: (r + 1) * s, c * s: (c + 1) * s]
                    a, bl, br = _basicsr_aggd(block)
                    f = [a, (bl + br) / 2]
                    for shift in ((0, 1), (1, 0), (1, 1), (1, -1)):
                        a, bl, br = _basicsr_aggd(block * np.roll(block, shift, axis=(0, 1)))
                        f += [a, (br - bl) * gamma(2 / a) / gamma(1 / a), bl, br]
                    feats.append(f)
            scales.append(np.array(feats))
            img = imresize(img / 255.0, 0.5) * 255.0
        feats = np.concatenate(scales, axis=1)
        mu = np.nanmean(feats, axis=0)
        degenerate = np.isnan(feats).any(axis=1)
        cov = np.cov(feats[~degenerate], rowvar=False)
    d = mu_p - mu
    return float(np.sqrt(d @ np.linalg.pinv((cov_p + cov) / 2) @ d)), int(degenerate.sum())


def _saturated_upscale() -> np.ndarray:
    """RealSR Canon_001 LR (a real photo; the stand-in image without the shared folder) with its left 48
    columns blown out to white, bicubic ×4: 512×512, the left two block columns (10 of 25 blocks) flat 255."""
    with Image.open(shared_data("realsr", "RealSR", "LR", "Canon_001_LR4.png")) as im:
        lr = np.asarray(im.convert("RGB")).copy()
    lr[:, :48] = 255
    return imresize(lr, 4)


def test_saturated_blocks_are_aggregated_as_basicsr_does():
    up = _saturated_upscale()
    y = np.round(rgb_to_y(up.astype(np.float64)))
    feats = niqe_features(y[:480, :480])
    assert np.isnan(feats).any(axis=1).sum() == 10  # the case: 10 of 25 blocks degenerate
    assert np.all(np.isfinite(feats[:, [0, 2, 6, 10, 14, 18, 20, 24, 28, 32]]))  # every shape is fitted (0.2)
    expected, degenerate = _basicsr_niqe(y)
    assert degenerate == 10
    value = calculate_niqe(up)
    assert value == pytest.approx(expected, rel=1e-6)
    assert math.isfinite(value) and 2 < value < 20  # real photo: 8.21 (unsaturated 9.52)


def test_flat_block_fit_is_the_first_shape():
    for block in (np.zeros((96, 96)), np.full((48, 48), 0.3)):  # flat; one sign only
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            ref = _basicsr_aggd(block)
        got = _aggd(block)
        assert got[0] == ref[0] == pytest.approx(0.2)
        np.testing.assert_allclose(got, ref, rtol=1e-12, equal_nan=True)


def test_undefined_niqe_is_a_clear_error_not_a_linalg_failure():
    with pytest.raises(ValueError, match="25 of the 25 96x96 blocks are flat"):
        calculate_niqe(np.full((480, 480, 3), 255, np.uint8))
    with pytest.raises(ValueError, match="two 96x96 blocks .* got 96x96"):
        calculate_niqe(np.zeros((96, 96, 3), np.uint8))
    bad = np.zeros((96, 192, 3))
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN/Inf"):
        calculate_niqe(bad)
