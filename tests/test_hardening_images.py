"""Bad images, masks and option values end in one line naming the file or option; nothing half-done."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import diffir
from conftest import tiny_model
from diffir.cli import main
from diffir.errors import ImageError

RNG = np.random.default_rng(0)


@pytest.fixture(scope="module")
def sr_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "tiny_sr.safetensors"
    diffir.save_model(tiny_model("diffir_sr_x4_s2"), path)
    return path


@pytest.fixture(scope="module")
def inpaint_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "tiny_inpaint.safetensors"
    diffir.save_model(tiny_model("diffir_inpaint_celeba_s2"), path)
    return path


def _main(argv: list[str]) -> int:
    """``diffir.cli.main``'s exit code, also when argparse refuses an option value (it exits)."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def _lines(capsys, prefix: str) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith(prefix)]


def _photo(path: Path, size: int = 16) -> Path:
    Image.fromarray((RNG.random((size, size, 3)) * 255).astype(np.uint8)).save(path)
    return path


def _hole(size: int = 16) -> np.ndarray:
    hole = np.zeros((size, size), bool)
    hole[3:9, 4:12] = True
    return hole


def _inpaint(tmp_path, weights, mask: Path, *extra: str) -> tuple[int, Path]:
    image = tmp_path / "face.png"
    if not image.exists():
        _photo(image)
    out = tmp_path / f"out_{mask.stem}_{len(extra)}"
    code = _main(["restore", "-i", str(image), "--mask", str(mask), "-m", str(weights), "-o", str(out), "-q",
                  *extra])
    return code, out / "face_out.png"


# ------------------------------------------------------------------------------------------------ masks
@pytest.mark.parametrize("kind", ["black", "red", "white"])
def test_mask_selecting_no_pixel_or_every_pixel_warns_naming_the_mask(tmp_path, inpaint_weights, capsys,
                                                                       kind) -> None:
    mask = tmp_path / f"{kind}.png"
    colour = {"black": (0, 0, 0), "red": (255, 0, 0), "white": (255, 255, 255)}[kind]
    Image.new("RGB", (16, 16), colour).save(mask)  # red: channel mean 1/3, under the 0.5 threshold
    code, result = _inpaint(tmp_path, inpaint_weights, mask)
    warnings = _lines(capsys, "diffir: warning:")
    assert code == 0 and result.is_file()
    expected = "selects every pixel" if kind == "white" else "selects no pixel"
    assert len(warnings) == 1 and warnings[0].startswith(f"diffir: warning: {mask}: the mask {expected}")
    if kind != "white":  # nothing to fill: the image comes back as it was
        assert np.array_equal(np.asarray(Image.open(result)), np.asarray(Image.open(tmp_path / "face.png")))


def test_holes_only_in_the_alpha_channel_are_read_from_the_alpha(tmp_path, inpaint_weights, capsys) -> None:
    hole = _hole()
    white = tmp_path / "white.png"
    Image.fromarray(np.where(hole, 255, 0).astype(np.uint8)).save(white)
    erased = np.zeros((16, 16, 4), np.uint8)  # colour constant (black); the holes are transparent (default)
    erased[..., 3] = np.where(hole, 0, 255)
    Image.fromarray(erased, "RGBA").save(tmp_path / "erased.png")
    painted = np.full((16, 16, 4), 255, np.uint8)  # the holes are opaque: --mask-hole black
    painted[..., 3] = np.where(hole, 255, 0)
    Image.fromarray(painted, "RGBA").save(tmp_path / "painted.png")

    reference = _inpaint(tmp_path, inpaint_weights, white)[1]
    erased_out = _inpaint(tmp_path, inpaint_weights, tmp_path / "erased.png")[1]
    painted_out = _inpaint(tmp_path, inpaint_weights, tmp_path / "painted.png", "--mask-hole", "black")[1]
    assert not _lines(capsys, "diffir: warning:")
    expected = np.asarray(Image.open(reference))
    assert not np.array_equal(expected, np.asarray(Image.open(tmp_path / "face.png")))
    assert np.array_equal(np.asarray(Image.open(painted_out)), expected)
    assert np.array_equal(np.asarray(Image.open(erased_out)), expected)


def test_16bit_mask_holding_8bit_values_is_read_as_8bit(tmp_path, inpaint_weights, capsys) -> None:
    hole = _hole()
    Image.fromarray(np.where(hole, 255, 0).astype(np.uint8)).save(tmp_path / "m8.png")
    Image.fromarray(np.where(hole, 255, 0).astype(np.uint16)).save(tmp_path / "m16.png")
    assert Image.open(tmp_path / "m16.png").mode.startswith("I")  # really a 16-bit file
    a = _inpaint(tmp_path, inpaint_weights, tmp_path / "m8.png")[1]
    b = _inpaint(tmp_path, inpaint_weights, tmp_path / "m16.png")[1]
    assert not _lines(capsys, "diffir: warning:")  # 255 read as a hole, not as 255/65535
    assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))


@pytest.mark.parametrize("value", ["nan", "2", "-1", "0", "1", "inf"])
def test_mask_threshold_out_of_range_is_one_line(tmp_path, inpaint_weights, capsys, value) -> None:
    Image.fromarray(np.where(_hole(), 255, 0).astype(np.uint8)).save(tmp_path / "m.png")
    code, result = _inpaint(tmp_path, inpaint_weights, tmp_path / "m.png", "--mask-threshold", value)
    errors = _lines(capsys, "diffir:")
    assert code == 2 and len(errors) == 1
    assert errors[0].startswith("diffir: error: diffir restore: argument --mask-threshold: expected a number between "
                                f"0 and 1 (exclusive), e.g. 0.5, got '{value}'")
    assert not result.parent.exists()


# ------------------------------------------------------------------------------------------------ animated
def test_animated_image_warns_that_only_the_first_frame_is_restored(tmp_path, sr_weights, capsys) -> None:
    frames = [Image.new("RGB", (8, 8), c) for c in ("red", "green", "blue")]
    gif = tmp_path / "anim.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100)
    out = tmp_path / "out"
    assert main(["restore", "-i", str(gif), "-o", str(out), "-m", str(sr_weights), "-q"]) == 0
    warnings = _lines(capsys, "diffir: warning:")
    assert warnings == [f"diffir: warning: {gif}: animated image with 3 frames; only the first frame is restored"]
    assert (out / "anim_out.png").is_file()


# ------------------------------------------------------------------------------------------------ resources
def test_output_pixel_limit_is_checked_from_the_header_before_decoding(tmp_path, sr_weights, capsys,
                                                                        monkeypatch) -> None:
    import diffir.io.images

    image = _photo(tmp_path / "big.png", 64)  # x4: 256x256 = 65,536 output pixels

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although the output is over the limit")

    monkeypatch.setattr(diffir.io.images, "read_image", no_decoding)
    out = tmp_path / "out"
    code = main(["restore", "-i", str(image), "-o", str(out), "-m", str(sr_weights), "-q",
                 "--max-output-pixels", "10000"])
    errors = _lines(capsys, "diffir: error:")
    assert code == 1 and len(errors) == 1
    assert errors[0].startswith(f"diffir: error: {image}: restoring this 64x64 image makes a 256x256 = 65,536-pixel "
                                "output, over the limit of 10,000 output pixels (raise it with --max-output-pixels N")
    assert list(out.iterdir()) == []


def test_restorer_refuses_a_huge_output_before_any_work() -> None:
    from diffir.pipelines import restorer

    r = restorer.Restorer(tiny_model("diffir_sr_x4_s2"), device="cpu", max_output_pixels=1000)
    with pytest.raises(ImageError, match="max_output_pixels=N"):
        r.restore(np.zeros((20, 20, 3), np.uint8))


@pytest.mark.parametrize("option,value,expected", [
    *(("-s/--outscale", v, "a finite scale above 0 and at most 64") for v in ("inf", "nan", "0", "-2", "1e6")),
    ("--seed", str(2**70), "a whole number up to 2**64-1"),
    ("--max-pixels", "-1", "a number of pixels (0 or 'none': no limit)"),
    ("--max-output-pixels", "-5", "a number of pixels (0 or 'none': no limit)"),
    *(("--quality", v, "a JPEG/WebP quality from 0 to 100") for v in ("101", "-1")),
    ("--tile-overlap", "-1", "an overlap in pixels of at least 0"),
    ("--batch-size", "0", "a number of tiles of at least 1"),
    ("-t/--tile", "-5", "a tile size in pixels (0 = whole image) must be >= 0"),
])
def test_absurd_option_values_are_refused_up_front(tmp_path, sr_weights, capsys, option, value, expected) -> None:
    image = _photo(tmp_path / "x.png", 8)
    out = tmp_path / "out"
    flag = option.split("/")[-1]
    code = _main(["restore", "-i", str(image), "-o", str(out), "-m", str(sr_weights), "-q", f"{flag}={value}"])
    errors = _lines(capsys, "diffir:")
    assert code == 2 and len(errors) == 1, errors
    assert errors[0].startswith(f"diffir: error: diffir restore: argument {option}: ") and expected in errors[0]
    assert f"got '{value}'" in errors[0] and not out.exists()


def test_negative_seed_is_random_and_zero_pixel_limit_is_none(tmp_path, sr_weights, capsys) -> None:
    image = _photo(tmp_path / "x.png", 8)
    assert main(["restore", "-i", str(image), "-o", str(tmp_path / "o"), "-m", str(sr_weights), "-q",
                 "--seed", "-1", "--max-pixels", "0", "--max-output-pixels", "none"]) == 0
    assert "seed random" in capsys.readouterr().err and (tmp_path / "o" / "x_out.png").is_file()


def test_restorer_checks_the_same_ranges_as_the_command_line() -> None:
    from diffir.pipelines import restorer

    for kwargs in ({"outscale": float("inf")}, {"seed": 2**64}, {"mask_threshold": float("nan")},
                   {"max_output_pixels": -1}):
        with pytest.raises(diffir.errors.DiffIRError):
            restorer.Restorer(tiny_model("diffir_sr_x4_s2"), device="cpu", **kwargs)


def test_eval_option_values(tmp_path, capsys) -> None:
    for option, value in (("--tile", "x"), ("--seed", str(2**64)), ("--seed", "-1"), ("--limit", "-1"),
                          ("--grid-crop", "0")):
        assert _main(["eval", "--data", str(tmp_path), "--task", "sr", f"{option}={value}"]) == 2
        errors = _lines(capsys, "diffir:")
        assert len(errors) == 1 and errors[0].startswith(f"diffir: error: diffir eval: argument {option}: ")
        assert f"got '{value}'" in errors[0]


# ------------------------------------------------------------------------------------------------ permissions
def _deny_folder(monkeypatch, folder: Path) -> None:
    listing = Path.iterdir

    def iterdir(self):
        if self == folder:
            raise PermissionError(13, "Permission denied", str(folder))
        return listing(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)


def test_unreadable_input_folder_is_one_line(tmp_path, sr_weights, capsys, monkeypatch) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    _photo(folder / "a.png", 8)
    _deny_folder(monkeypatch, folder)
    out = tmp_path / "out"
    assert main(["restore", "-i", str(folder), "-o", str(out), "-m", str(sr_weights), "-q"]) == 2
    errors = _lines(capsys, "diffir:")
    assert len(errors) == 1 and errors[0].startswith(f"diffir: error: {folder}: permission denied; check the folder")
    assert not out.exists()


def test_unreadable_file_in_a_mixed_folder(tmp_path, sr_weights, capsys, monkeypatch) -> None:
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    good, locked = _photo(folder / "good.png", 8), _photo(folder / "locked.png", 8)
    opener = Image.open

    def open_(fp, *args, **kwargs):
        if Path(fp) == locked:
            raise PermissionError(13, "Permission denied", str(locked))
        return opener(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", open_)
    assert main(["restore", "-i", str(folder), "-o", str(out), "-m", str(sr_weights), "-q"]) == 1
    errors = _lines(capsys, "diffir: error:")
    assert errors == [f"diffir: error: {locked}: permission denied; check the file's permissions"]
    assert [p.name for p in out.iterdir()] == [f"{good.stem}_out.png"]


# ------------------------------------------------------------------------------------------------ temporaries
def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_restore_removes_what_a_killed_run_left_but_not_a_live_writers_file(tmp_path, sr_weights) -> None:
    out = tmp_path / "out"
    out.mkdir()
    stale = out / f".x_out.png.{_dead_pid()}-0123abcd.tmp.png"
    live = out / f".y_out.png.{os.getpid()}-4567cdef.tmp.png"
    stale.write_bytes(b"half an image")
    live.write_bytes(b"being written")
    image = _photo(tmp_path / "x.png", 8)
    assert main(["restore", "-i", str(image), "-o", str(out), "-m", str(sr_weights), "-q"]) == 0
    assert not stale.exists() and live.exists() and (out / "x_out.png").is_file()


def test_eval_removes_stale_temporaries_and_writes_with_the_umask(tmp_path, capsys) -> None:
    gt, out = tmp_path / "gt", tmp_path / "res"
    gt.mkdir()
    _photo(gt / "a.png", 32)
    (out / "grids").mkdir(parents=True)
    stale = out / "grids" / f".a.png.{_dead_pid()}-0123abcd.tmp.png"
    stale.write_bytes(b"half a grid")
    old = os.umask(0o027)
    try:
        assert main(["eval", "--gt", str(gt), "--degrade", "bicubic_x2", "--metrics", "psnr", "-o", str(out),
                     "--save-images", "--grid-crop", "16"]) == 0
    finally:
        os.umask(old)
    capsys.readouterr()
    assert not stale.exists()
    written = list(out.rglob("*.png"))
    assert written and all(p.stat().st_mode & 0o777 == 0o640 for p in written)


@pytest.mark.parametrize("ext", ["png", "jpg", "webp", "tif"])
def test_restored_files_follow_the_umask_for_every_format(tmp_path, sr_weights, ext) -> None:
    image = _photo(tmp_path / "x.png", 8)
    old = os.umask(0o027)
    try:
        assert main(["restore", "-i", str(image), "-o", str(tmp_path / "o"), "-m", str(sr_weights), "-q",
                     "--ext", ext]) == 0
    finally:
        os.umask(old)
    assert (tmp_path / "o" / f"x_out.{ext}").stat().st_mode & 0o777 == 0o640


# ------------------------------------------------------------------------------------------------ one reader
def test_one_image_reader_and_one_listing(tmp_path) -> None:
    from diffir.data import files
    from diffir.evaluation import items
    from diffir.io import images

    assert files.list_images is images.list_images and files.IMAGE_EXTENSIONS is images.IMAGE_EXTENSIONS
    assert items.list_images is images.list_images and not hasattr(items, "IMAGE_EXTENSIONS")
    # Training reads through the same reader: EXIF orientation applied, 16-bit precision kept.
    rotated = Image.fromarray(np.arange(6 * 4 * 3, dtype=np.uint8).reshape(6, 4, 3))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to show upright
    rotated.save(tmp_path / "r.jpg", exif=exif, quality=100)
    assert files.read_image(tmp_path / "r.jpg").shape == (3, 4, 6)
    deep = np.array([[1, 65535], [300, 40000]], np.uint16)
    Image.fromarray(deep).save(tmp_path / "d.png")
    assert np.allclose(files.read_image(tmp_path / "d.png")[0].numpy(), deep / 65535, atol=1e-7)
    # Hidden files (an interrupted run's temporaries, ._ companions) are not images of a folder.
    (tmp_path / ".r.jpg.123-0123abcd.tmp.png").write_bytes(b"")
    assert [p.name for p in images.list_images(tmp_path)] == ["d.png", "r.jpg"]


def test_permission_error_is_never_called_damaged(tmp_path, monkeypatch) -> None:
    from diffir.io.images import read_image

    path = _photo(tmp_path / "p.png", 4)

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(Image, "open", denied)
    with pytest.raises(ImageError) as err:
        read_image(path)
    assert str(err.value) == f"{path}: permission denied; check the file's permissions"


def test_library_restorer_reads_alpha_holes_like_the_cli() -> None:
    from diffir.pipelines.restorer import Restorer

    r = Restorer(tiny_model("diffir_inpaint_celeba_s2"), device="cpu")
    image = (RNG.random((16, 16, 3)) * 255).astype(np.uint8)
    gray = np.where(_hole(), 255, 0).astype(np.uint8)
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., 3] = 255 - gray  # transparent = hole
    assert np.array_equal(r.restore(image, mask=rgba), r.restore(image, mask=gray))
    assert not np.array_equal(r.restore(image, mask=gray), image)


def test_a_flipped_byte_in_a_png_is_an_error_not_a_wrong_picture(tmp_path, sr_weights, capsys) -> None:
    good = _photo(tmp_path / "good.png", 16).read_bytes()
    idat = good.index(b"IDAT") + 8  # inside the compressed image data, which Pillow decodes without its CRC
    bad = bytearray(good)
    bad[idat] ^= 0x01
    path, out = tmp_path / "flipped.png", tmp_path / "out"
    path.write_bytes(bytes(bad))
    assert _main(["restore", "-i", str(path), "-o", str(out), "-m", str(sr_weights), "-q"]) == 1
    errors = _lines(capsys, "diffir: error:")
    assert len(errors) == 1 and errors[0].startswith(f"diffir: error: {path}: cannot decode image (broken PNG file")
    assert list(out.iterdir()) == []


def test_folder_without_a_single_image_name_is_one_line_for_the_folder(tmp_path, sr_weights, capsys) -> None:
    folder = tmp_path / "folder.png"
    folder.mkdir()
    (folder / "notes.txt").write_text("x")
    out = tmp_path / "out"
    assert _main(["restore", "-i", str(folder), "-o", str(out), "-m", str(sr_weights), "-q"]) == 2
    errors = _lines(capsys, "diffir:")
    assert errors == [f"diffir: error: input folder {folder}: none of its 1 file(s) is named like an image (e.g. "
                      f"notes.txt; looked for .bmp, .gif, .jpeg, .jpg, .png, .tif, .tiff, .webp); pass the files "
                      "themselves or a quoted glob to restore other names"]
    assert not out.exists()
