"""DiffBIRDataset on real images (Set5 HR; stand-ins without the shared folder): crops, ranges, reproducibility."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import shared_data
from diffir.data.diffbir_dataset import DiffBIRDataset, center_crop, random_crop
from diffir.errors import ConfigError, ImageError


@pytest.fixture(scope="module")
def set5():
    return shared_data("sr", "Set5", "HR")


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a - b) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(1 / mse)


def test_items_are_reproducible_and_distinct(set5) -> None:
    ds = DiffBIRDataset(set5, out_size=96, crop_type="random", seed=3)
    first, again = ds[1], DiffBIRDataset(set5, out_size=96, crop_type="random", seed=3)[1]
    assert torch.equal(first["gt"], again["gt"]) and torch.equal(first["lq"], again["lq"])
    assert not torch.equal(first["lq"], DiffBIRDataset(set5, out_size=96, crop_type="random", seed=4)[1]["lq"])
    ds.set_epoch(1)
    assert not torch.equal(first["lq"], ds[1]["lq"])
    ds.set_epoch(0)
    assert torch.equal(first["lq"], ds[1]["lq"])


def test_shapes_ranges_and_degradation(set5) -> None:
    ds = DiffBIRDataset(set5, out_size=128, crop_type="center", seed=0)
    assert len(ds) == 5
    for i in range(2):
        item = ds[i]
        gt, lq = item["gt"], item["lq"]
        assert gt.shape == lq.shape == (3, 128, 128) and gt.dtype == lq.dtype == torch.float32
        assert gt.min() >= -1 and gt.max() <= 1 and lq.min() >= 0 and lq.max() <= 1
        assert item["prompt"] == "" and item["path"].endswith(".png")
        hq = (gt + 1) / 2
        assert _psnr(hq, hq) == float("inf")
        assert _psnr(lq, hq) < 40  # blurred, downsampled, noisy, JPEG-compressed, upsampled
        assert lq.std() < hq.std() + 0.05  # the blur and resizing remove detail rather than add it


def test_center_crop_gives_the_official_pixels(set5) -> None:
    """gt is 2·u8/255 − 1 of the guided-diffusion centre crop (BOX halving, bicubic short side, centre)."""
    path = sorted(set5.glob("*.png"))[0]
    u8 = np.asarray(Image.open(path).convert("RGB"))
    crop = center_crop(u8, 64)
    assert crop.shape == (64, 64, 3)
    item = DiffBIRDataset([path], out_size=64, crop_type="center")[0]
    expected = torch.from_numpy((crop / 255.0 * 2 - 1).astype(np.float32)).permute(2, 0, 1)
    assert torch.allclose(item["gt"], expected, atol=1e-6)


def test_random_crop_size_and_determinism() -> None:
    u8 = np.random.default_rng(0).integers(0, 256, (150, 200, 3), dtype=np.uint8)
    a = random_crop(u8, 64, np.random.default_rng(5))
    assert a.shape == (64, 64, 3)
    assert np.array_equal(a, random_crop(u8, 64, np.random.default_rng(5)))


def test_crop_none_and_file_list(set5, tmp_path) -> None:
    paths = sorted(set5.glob("*.png"))
    size = Image.open(paths[0]).size
    listing = tmp_path / "files.list"
    listing.write_text(f"{paths[0]}\n\n")
    ds = DiffBIRDataset(listing, out_size=None, crop_type="none")
    assert len(ds) == 1 and ds[0]["gt"].shape == (3, size[1], size[0])
    with pytest.raises(ImageError):
        DiffBIRDataset(listing, out_size=size[0] + 1, crop_type="none")[0]
    with pytest.raises(ConfigError):
        DiffBIRDataset(listing, crop_type="middle")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.png").symlink_to(paths[0])
    listing.write_text("sub/a.png\n")  # relative to the list's folder
    assert DiffBIRDataset(listing, out_size=32, crop_type="center").files == [tmp_path / "sub" / "a.png"]
    listing.write_text("missing.png\n")
    with pytest.raises(ImageError):
        DiffBIRDataset(listing)
