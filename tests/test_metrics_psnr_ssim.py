"""PSNR/SSIM against independently computed reference values (scikit-image 0.26), and BasicSR conventions.

The constants were produced once with scikit-image 0.26.0 (an implementation that shares no code with ours):
``skimage.color.rgb2ycbcr(img)[..., 0]`` for MATLAB Y, ``peak_signal_noise_ratio(..., data_range=255)`` and
``structural_similarity(..., data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``
(+ ``channel_axis=-1`` for RGB), on float64 arrays cropped by ``crop_border`` first.
If scikit-image is installed, the same comparison also runs live, on random arrays and on real images
(Set5 bicubic x4 and a greyscale Set14 image).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import require_shared, shared_dir
from diffir.data.imresize import imresize
from diffir.metrics import calculate_psnr, calculate_psnr_pt, calculate_ssim, calculate_ssim_pt, rgb2ycbcr

PSNR_TOL = 1e-3  # dB, the acceptance bar
SSIM_TOL = 1e-4


def synthetic_pair() -> tuple[np.ndarray, np.ndarray]:
    """A smooth RGB pattern and a copy with coloured high-frequency error (uint8, 48x40x3)."""
    y, x = np.mgrid[0:48, 0:40].astype(np.float64)
    a = np.stack([128 + 100 * np.sin(x / 5 + c) * np.cos(y / 7 - c) for c in range(3)], -1)
    b = a + 20 * np.sin(3 * x + 2 * y)[..., None] * np.array([1.0, 0.5, -0.25])
    return (np.clip(np.round(v), 0, 255).astype(np.uint8) for v in (a, b))


# (crop_border, test_y_channel) -> (psnr, ssim) from scikit-image
SYNTHETIC_REFERENCE = {
    (0, False): (28.694398818042405, 0.876546947611153),
    (3, True): (31.392850094290168, 0.8522745495306765),
}

# Set5 HR vs MATLAB-bicubic x4 upsampling of LR_bicubic/X4, Y channel, crop 4 (scikit-image values).
SET5_BICUBIC_X4 = {
    "baby": (31.784188104486518, 0.857536029160681),
    "bird": (30.181497678906986, 0.8735718239999772),
    "butterfly": (22.099610970613032, 0.73745552622319),
    "head": (31.613252093380897, 0.7546141882551226),
    "woman": (26.466536001057726, 0.8324996141267316),
}


@pytest.mark.parametrize("crop, y", list(SYNTHETIC_REFERENCE))
def test_synthetic_matches_reference(crop, y):
    a, b = synthetic_pair()
    ref_psnr, ref_ssim = SYNTHETIC_REFERENCE[(crop, y)]
    assert abs(calculate_psnr(a, b, crop, test_y_channel=y) - ref_psnr) < PSNR_TOL
    assert abs(calculate_ssim(a, b, crop, test_y_channel=y) - ref_ssim) < SSIM_TOL


def test_set5_bicubic_x4_matches_reference_and_published():
    root = require_shared("data", "sr", "Set5")
    psnrs, ssims = [], []
    for name, (ref_psnr, ref_ssim) in SET5_BICUBIC_X4.items():
        hr = np.array(Image.open(root / "HR" / f"{name}.png").convert("RGB"))
        hr = hr[: hr.shape[0] // 4 * 4, : hr.shape[1] // 4 * 4]
        lr = np.array(Image.open(root / "LR_bicubic" / "X4" / f"{name}x4.png").convert("RGB"))
        sr = imresize(lr, 4)
        psnrs.append(calculate_psnr(sr, hr, 4, test_y_channel=True))
        ssims.append(calculate_ssim(sr, hr, 4, test_y_channel=True))
        assert abs(psnrs[-1] - ref_psnr) < PSNR_TOL, name
        assert abs(ssims[-1] - ref_ssim) < SSIM_TOL, name
    # The number every SR paper prints for bicubic on Set5 x4 is 28.42 / 0.8104.
    assert abs(np.mean(psnrs) - 28.42) < 0.02
    assert abs(np.mean(ssims) - 0.8104) < 0.002


def _skimage_psnr_ssim(out: np.ndarray, gt: np.ndarray, crop: int, y: bool) -> tuple[float, float]:
    """PSNR/SSIM computed by scikit-image only (its own rgb2ycbcr, PSNR and Gaussian SSIM)."""
    metrics = pytest.importorskip("skimage.metrics", reason="the live cross-check needs scikit-image")
    color = pytest.importorskip("skimage.color")
    a, b = (color.rgb2ycbcr(v)[..., 0] for v in (out, gt)) if y else (out.astype(float), gt.astype(float))
    if crop:
        a, b = a[crop:-crop, crop:-crop], b[crop:-crop, crop:-crop]
    kw = dict(data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    ssim = metrics.structural_similarity(b, a, **kw, **({} if y else {"channel_axis": -1}))
    return metrics.peak_signal_noise_ratio(b, a, data_range=255), ssim


def test_live_against_scikit_image_random():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (37, 45, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-30, 31, a.shape), 0, 255).astype(np.uint8)
    for crop, y in ((2, True), (0, False)):
        ref_psnr, ref_ssim = _skimage_psnr_ssim(a, b, crop, y)
        assert abs(calculate_psnr(a, b, crop, test_y_channel=y) - ref_psnr) < 1e-9
        assert abs(calculate_ssim(a, b, crop, test_y_channel=y) - ref_ssim) < 1e-9


def _skimage_photo_cases() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Without the shared folder: scikit-image's bundled public-domain / CC0 photographs, bicubic x4 down and up."""
    data = pytest.importorskip("skimage.data", reason="the live cross-check needs scikit-image")
    cases = []
    for name in ("astronaut", "coffee", "chelsea", "camera"):  # camera is greyscale: read as grey x 3
        img = getattr(data, name)()
        img = np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img
        gt = img[: img.shape[0] // 4 * 4, : img.shape[1] // 4 * 4]
        cases.append((name, imresize(imresize(gt, 1 / 4), 4), gt))
    return cases


def test_live_against_scikit_image_on_real_images():
    """Set5 (bicubic x4 of the MATLAB LR files) and a greyscale Set14 image, Y/crop 4 and RGB/crop 0; without the
    shared folder, scikit-image's own photographs instead (colour and greyscale)."""
    if not (shared_dir() / "data").is_dir():
        cases = _skimage_photo_cases()
    else:
        set5 = require_shared("data", "sr", "Set5")
        cases = []
        for name in SET5_BICUBIC_X4:
            hr = np.array(Image.open(set5 / "HR" / f"{name}.png").convert("RGB"))
            lr = np.array(Image.open(set5 / "LR_bicubic" / "X4" / f"{name}x4.png").convert("RGB"))
            cases.append((name, imresize(lr, 4), hr[: lr.shape[0] * 4, : lr.shape[1] * 4]))
        bridge = require_shared("data", "sr", "Set14", "HR", "bridge.png")  # mode "L": read as grey x 3
        grey = np.repeat(np.array(Image.open(bridge))[..., None], 3, axis=2)[:508, :508]
        cases.append(("bridge", imresize(imresize(grey, 1 / 4), 4), grey))
    for name, out, gt in cases:
        for crop, y in ((4, True), (0, False)):
            ref_psnr, ref_ssim = _skimage_psnr_ssim(out, gt, crop, y)
            # Measured: <= 1e-14 dB and <= 1e-14; the acceptance bar is 1e-3 dB / 1e-4.
            assert abs(calculate_psnr(out, gt, crop, test_y_channel=y) - ref_psnr) < 1e-9, (name, crop, y)
            assert abs(calculate_ssim(out, gt, crop, test_y_channel=y) - ref_ssim) < 1e-9, (name, crop, y)


def test_basicsr_conventions():
    a, b = synthetic_pair()
    assert calculate_psnr(a, a, 0) == float("inf")
    assert calculate_ssim(a, a, 4, test_y_channel=True) == pytest.approx(1.0)
    # CHW input order gives the same numbers; float input on 0..255 is the same as uint8.
    chw = calculate_psnr(a.transpose(2, 0, 1), b.transpose(2, 0, 1), 2, input_order="CHW", test_y_channel=True)
    assert chw == pytest.approx(calculate_psnr(a.astype(np.float32), b, 2, test_y_channel=True), abs=1e-9)
    # Cropping really removes the border: an error only in the border vanishes.
    c = a.copy()
    c[:2] = 0
    assert calculate_psnr(a, c, 2) == float("inf")
    # MATLAB rgb2ycbcr: white -> Y 235, black -> Y 16, and Y is not rounded.
    assert rgb2ycbcr(np.array([[[255, 255, 255]]], np.uint8), y_only=True)[0, 0] == pytest.approx(235.0)
    assert rgb2ycbcr(np.array([[[0, 0, 0]]], np.uint8), y_only=True)[0, 0] == pytest.approx(16.0)
    with pytest.raises(ValueError):
        calculate_psnr(a, b[:-1], 0)


def test_torch_versions_agree_with_numpy():
    a, b = synthetic_pair()
    ta = torch.from_numpy(np.stack([a, b])).permute(0, 3, 1, 2).float() / 255
    tb = torch.from_numpy(np.stack([b, b])).permute(0, 3, 1, 2).float() / 255
    for crop, y in SYNTHETIC_REFERENCE:
        p = calculate_psnr_pt(ta, tb, crop, test_y_channel=y)
        s = calculate_ssim_pt(ta, tb, crop, test_y_channel=y)
        assert p.shape == (2,) and torch.isinf(p[1])
        assert abs(float(p[0]) - calculate_psnr(a, b, crop, test_y_channel=y)) < 1e-6
        assert abs(float(s[0]) - calculate_ssim(a, b, crop, test_y_channel=y)) < 1e-6
