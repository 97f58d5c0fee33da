"""The bundled trained model: loads by name, and restores real images better than bicubic."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import diffir
from conftest import require_shared
from diffir.bundled import DEFAULT_MODEL, bundled_path, list_bundled
from diffir.data.imresize import imresize
from diffir.metrics import calculate_psnr


def test_default_model_is_bundled_and_loads() -> None:
    assert DEFAULT_MODEL in list_bundled()
    model = diffir.load_model(bundled_path(DEFAULT_MODEL))
    assert (model.config.task, model.config.scale, model.config.stage) == ("sr", 4, 2)


@pytest.mark.parametrize("name", ["bird", "butterfly"])
def test_bundled_sr_beats_bicubic_on_set5(name: str) -> None:
    root = require_shared("data", "sr", "Set5")
    hr = np.asarray(Image.open(root / "HR" / f"{name}.png").convert("RGB"))
    lr = np.asarray(Image.open(root / "LR_bicubic" / "X4" / f"{name}x4.png").convert("RGB"))
    hr = hr[: lr.shape[0] * 4, : lr.shape[1] * 4]
    sr = diffir.Restorer(seed=0, device="cpu").restore(lr)
    assert sr.shape == hr.shape and sr.dtype == np.uint8
    bicubic = imresize(lr, 4)  # MATLAB bicubic, uint8 in -> uint8 out
    psnr_sr = calculate_psnr(sr, hr, crop_border=4, test_y_channel=True)
    psnr_bic = calculate_psnr(bicubic, hr, crop_border=4, test_y_channel=True)
    assert psnr_sr > psnr_bic + 1.0, (psnr_sr, psnr_bic)
