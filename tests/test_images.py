"""Image files: bit depth, gray/alpha, EXIF orientation, bomb limit, broken files, atomic writes."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from PIL import Image, ImageOps

from diffir.errors import ImageError
from diffir.io.images import read_image, to_8bit, write_image

RNG = np.random.default_rng(0)


def _pixels(channels: int, dtype=np.uint8, h: int = 6, w: int = 9) -> np.ndarray:
    top = 65535 if dtype == np.uint16 else 255
    return RNG.integers(0, top + 1, size=(h, w, channels), dtype=np.int64).astype(dtype)


@pytest.mark.parametrize("ext,channels", [(e, c) for e in (".png", ".tif", ".webp") for c in (1, 2, 3, 4)
                                          if not (e == ".webp" and c < 3)])  # WebP: see the next test
def test_8bit_lossless_roundtrip_keeps_channels(tmp_path, ext: str, channels: int) -> None:
    a = _pixels(channels)
    path = write_image(tmp_path / f"x{ext}", a) if ext != ".webp" else None
    if ext == ".webp":
        Image.fromarray(a if channels > 1 else a[..., 0]).save(tmp_path / "x.webp", lossless=True)
        path = tmp_path / "x.webp"
    rec = read_image(path)
    assert rec.pixels.dtype == np.uint8 and rec.pixels.shape == a.shape
    assert np.array_equal(rec.pixels, a)


@pytest.mark.parametrize("channels", [1, 2])
def test_gray_to_webp_is_written_as_rgb(tmp_path, channels: int) -> None:
    """WebP has no gray mode: gray (+alpha) is written as RGB(A) with three equal colour channels."""
    a = _pixels(channels)
    rec = read_image(write_image(tmp_path / "g.webp", a))
    assert rec.pixels.shape == (*a.shape[:2], channels + 2)
    rgb = rec.pixels[..., :3].astype(int)
    assert np.abs(rgb - rgb[..., :1]).max() <= 2  # lossy YUV coding of a gray image keeps it (almost) gray


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_16bit_gray_keeps_its_depth(tmp_path, ext: str) -> None:
    a = _pixels(1, np.uint16)
    rec = read_image(write_image(tmp_path / f"g{ext}", a))
    assert rec.bit_depth == 16 and np.array_equal(rec.pixels, a)


@pytest.mark.parametrize("ext", [".png", ".tif"])
@pytest.mark.parametrize("channels", [2, 3, 4])
def test_16bit_colour_keeps_its_depth(tmp_path, ext: str, channels: int) -> None:
    pytest.importorskip("cv2")
    a = _pixels(channels, np.uint16)
    rec = read_image(write_image(tmp_path / f"c{ext}", a))
    assert rec.bit_depth == 16
    expected = np.concatenate([a[..., :1]] * 3 + [a[..., 1:]], 2) if channels == 2 else a  # LA stored as RGBA
    assert np.array_equal(rec.pixels, expected)


def test_16bit_colour_without_opencv_is_a_clear_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "cv2", None)  # makes `import cv2` fail
    with pytest.raises(ImageError, match=r"diffir-toolkit\[images\]"):
        write_image(tmp_path / "c.png", _pixels(3, np.uint16))


def test_lossy_and_8bit_only_formats(tmp_path) -> None:
    a = _pixels(4, np.uint16)
    with pytest.warns(UserWarning, match="alpha dropped"):
        path = write_image(tmp_path / "x.jpg", a, quality=100)
    rec = read_image(path)
    assert rec.format == "JPEG" and rec.pixels.dtype == np.uint8 and rec.pixels.shape == (6, 9, 3)
    assert np.array_equal(to_8bit(np.array([0, 257, 65535], np.uint16)), np.array([0, 1, 255], np.uint8))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_like_pillow(tmp_path, orientation: int) -> None:
    a = _pixels(3, h=4, w=7)
    im = Image.fromarray(a)
    exif = im.getexif()
    exif[0x0112] = orientation
    path = tmp_path / "o.jpg"
    im.save(path, exif=exif, quality=100)
    with Image.open(path) as ref_im:
        expected = np.asarray(ImageOps.exif_transpose(ref_im))
    assert np.array_equal(read_image(path).pixels, expected)


def test_decompression_bomb_limit_is_checked_before_decoding(tmp_path) -> None:
    path = write_image(tmp_path / "big.png", np.zeros((100, 100, 3), np.uint8))
    with pytest.raises(ImageError, match="exceeds the limit"):
        read_image(path, max_pixels=5000)
    assert read_image(path, max_pixels=None).pixels.shape == (100, 100, 3)


def test_broken_files_give_one_line_errors(tmp_path) -> None:
    good = write_image(tmp_path / "good.png", _pixels(3, h=64, w=64))
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    for path, reason in [(truncated, "cannot decode"), (text, "not an image"), (tmp_path / "nope.png", "no such")]:
        with pytest.raises(ImageError, match=reason) as err:
            read_image(path)
        assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_palette_and_bilevel_images_are_expanded(tmp_path) -> None:
    Image.fromarray(_pixels(3)).convert("P").save(tmp_path / "p.png")
    Image.fromarray(_pixels(1)[..., 0]).convert("1").save(tmp_path / "b.png")
    assert read_image(tmp_path / "p.png").pixels.shape == (6, 9, 3)
    bilevel = read_image(tmp_path / "b.png").pixels
    assert bilevel.shape == (6, 9, 1) and set(np.unique(bilevel)) <= {0, 255}


def test_failed_write_leaves_neither_partial_file_nor_temp(tmp_path, monkeypatch) -> None:
    target = tmp_path / "out.png"
    target.write_bytes(b"previous result")

    def crash(self, fp, *args, **kwargs):
        with open(fp, "wb") as f:
            f.write(b"half an image")
        raise OSError("No space left on device")

    monkeypatch.setattr(Image.Image, "save", crash)
    with pytest.raises(ImageError, match="No space left"):
        write_image(target, _pixels(3))
    assert target.read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]


def test_written_files_get_normal_permissions(tmp_path) -> None:
    old = os.umask(0o022)
    try:
        path = write_image(tmp_path / "x.png", _pixels(3))
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def test_unknown_output_extension(tmp_path) -> None:
    with pytest.raises(ImageError, match="unknown output extension"):
        write_image(tmp_path / "x.xyz", _pixels(3))


def test_icc_profile_kept_for_rgb_but_not_for_cmyk_converted_to_rgb(tmp_path) -> None:
    from PIL import ImageCms

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.new("RGB", (4, 4), "red").save(tmp_path / "rgb.jpg", icc_profile=srgb)
    assert read_image(tmp_path / "rgb.jpg").icc_profile == srgb
    # A CMYK JPEG's profile describes CMYK; attached to the RGB result it would garble the colours.
    Image.new("CMYK", (4, 4), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", icc_profile=b"fake cmyk profile")
    rec = read_image(tmp_path / "cmyk.jpg")
    assert rec.pixels.shape == (4, 4, 3) and rec.icc_profile is None
