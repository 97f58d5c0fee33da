"""``diffir restore`` end to end on real images with tiny random-weight models."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import diffir
from conftest import shared_data, tiny_model
from diffir.cli import main


@pytest.fixture(scope="module")
def sr_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "tiny_sr.safetensors"
    diffir.save_model(tiny_model("diffir_sr_x4_s2"), path)
    return path


def _crop_copy(src, dst, size: int = 32) -> None:
    with Image.open(src) as im:
        im.crop((0, 0, size, size)).save(dst)


def _no_temp_files(folder) -> bool:
    return not [p for p in folder.iterdir() if p.name.startswith(".")]


def test_folder_with_bad_files_mixed_in(tmp_path, sr_weights, capsys) -> None:
    lr = shared_data("realsr", "RealSR", "LR")
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    for name in ("Canon_001_LR4.png", "Canon_002_LR4.png"):
        _crop_copy(lr / name, inp / name)
    (inp / "readme.txt").write_text("not an image")
    good = (inp / "Canon_001_LR4.png").read_bytes()
    (inp / "broken.png").write_bytes(good[: len(good) // 2])
    code = main(["restore", "-i", str(inp), "-o", str(out), "-m", str(sr_weights), "-q"])
    err = capsys.readouterr().err
    assert code == 1
    assert sorted(p.name for p in out.iterdir()) == ["Canon_001_LR4_out.png", "Canon_002_LR4_out.png"]
    assert Image.open(out / "Canon_001_LR4_out.png").size == (128, 128)
    errors = [line for line in err.splitlines() if line.startswith("diffir: error:")]
    assert len(errors) == 2 and any("readme.txt" in e for e in errors) and any("broken.png" in e for e in errors)
    assert "2 restored" in err and "2 failed" in err
    assert _no_temp_files(out)

    # A second run skips what exists; --overwrite redoes it.
    assert main(["restore", "-i", str(inp / "Canon_001_LR4.png"), "-o", str(out), "-m", str(sr_weights), "-q"]) == 0
    assert "1 skipped" in capsys.readouterr().err
    assert main(["restore", "-i", str(inp / "*.png"), "-o", str(out), "-m", str(sr_weights), "-q",
                 "--overwrite", "--suffix", "", "--ext", "jpg", "-s", "2"]) == 1  # broken.png still fails
    assert Image.open(out / "Canon_002_LR4.jpg").size == (64, 64)


def test_bit_depth_gray_and_alpha_are_kept(tmp_path, sr_weights) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((12, 10)) * 65535).astype(np.uint16)).save(inp / "deep.png")
    Image.fromarray((rng.random((12, 10)) * 255).astype(np.uint8)).save(inp / "gray.png")
    Image.fromarray((rng.random((12, 10, 4)) * 255).astype(np.uint8), mode="RGBA").save(inp / "alpha.png")
    assert main(["restore", "-i", str(inp), "-o", str(out), "-m", str(sr_weights), "-q"]) == 0
    deep, gray, alpha = (Image.open(out / f"{n}_out.png") for n in ("deep", "gray", "alpha"))
    assert deep.mode == "I;16" and np.asarray(deep).max() > 255 and deep.size == (40, 48)
    assert gray.mode == "L" and alpha.mode == "RGBA" and alpha.size == (40, 48)


def _inpaint_run_dirs(tmp_path):
    """A tiny inpainting model file, empty images/ and masks/ folders, and the output folder path."""
    model = tmp_path / "inpaint.safetensors"
    diffir.save_model(tiny_model("diffir_inpaint_celeba_s2"), model)
    images, masks, out = tmp_path / "images", tmp_path / "masks", tmp_path / "out"
    images.mkdir()
    masks.mkdir()
    return model, images, masks, out


def test_inpainting_folder_with_masks_and_a_wrong_size_mask(tmp_path, capsys) -> None:
    fixtures = shared_data("inpaint", "fixtures", "EC_celeba")
    model, images, masks, out = _inpaint_run_dirs(tmp_path)
    for name in ("celeba_01.png", "celeba_02.png"):
        _crop_copy(fixtures / "images" / name, images / name, 48)
        _crop_copy(fixtures / "masks" / name, masks / name, 48)
    shutil.copy(images / "celeba_01.png", images / "odd.png")
    _crop_copy(fixtures / "masks" / "celeba_03.png", masks / "odd_mask.png", 40)
    code = main(["restore", "-i", str(images), "-o", str(out), "-m", str(model), "--mask", str(masks), "-q"])
    err = capsys.readouterr().err
    assert code == 1
    assert sorted(p.name for p in out.iterdir()) == ["celeba_01_out.png", "celeba_02_out.png"]
    assert f"odd.png: mask {masks / 'odd_mask.png'} is 40x40 but the image is 48x48; give a mask" in err
    restored = np.asarray(Image.open(out / "celeba_01_out.png"))
    original = np.asarray(Image.open(images / "celeba_01.png").convert("RGB"))
    known = np.asarray(Image.open(masks / "celeba_01.png").convert("L")) <= 127
    assert np.array_equal(restored[known], original[known])


def test_a_mask_is_never_borrowed_from_an_image_with_a_longer_name(tmp_path, capsys) -> None:
    # face1 has no mask; face10_mask.png belongs to face10 and must not be used for face1.
    model, images, masks, out = _inpaint_run_dirs(tmp_path)
    for name in ("face1", "face10"):
        Image.new("RGB", (16, 16), "gray").save(images / f"{name}.png")
    Image.new("L", (16, 16), 255).save(masks / "face10_mask.png")
    assert main(["restore", "-i", str(images), "-o", str(out), "-m", str(model), "--mask", str(masks), "-q"]) == 1
    err = capsys.readouterr().err
    assert "face1.png: no mask in" in err
    assert [p.name for p in out.iterdir()] == ["face10_out.png"]


def test_warnings_are_single_lines_and_unexpected_errors_do_not_stop_the_run(tmp_path, sr_weights, capsys,
                                                                            monkeypatch) -> None:
    from diffir.pipelines.restorer import Restorer

    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    Image.new("RGBA", (8, 8)).save(inp / "a.png")
    Image.new("RGB", (8, 8)).save(inp / "b.png")
    restore = Restorer.restore

    def flaky(self, image, mask=None):
        if image.shape[2] == 3:
            raise ValueError("something unexpected\nwith a second line")
        return restore(self, image, mask)

    monkeypatch.setattr(Restorer, "restore", flaky)
    code = main(["restore", "-i", str(inp), "-o", str(out), "-m", str(sr_weights), "-q", "--ext", "jpg"])
    err = capsys.readouterr().err.splitlines()
    assert code == 1
    assert [p.name for p in out.iterdir()] == ["a_out.jpg"]  # the first file is written despite the second
    assert any(line.startswith("diffir: warning: a_out.jpg: JPEG has no alpha channel") for line in err)
    assert any(line.endswith("b.png: ValueError: something unexpected\\nwith a second line") for line in err)
    assert not any("Traceback" in line or "warnings.warn" in line for line in err)
    assert len(err) == 4  # header, warning, error, summary


@pytest.mark.parametrize("extra,message", [
    (["-m", "no_such_model"], "diffir convert"),
    (["-m", "weights/missing.pth"], "no such file or folder"),
])
def test_model_errors_are_one_line(tmp_path, capsys, extra, message, monkeypatch) -> None:
    monkeypatch.setenv("DIFFIR_MODELS", str(tmp_path / "models"))
    image = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(image)
    code = main(["restore", "-i", str(image), "-o", str(tmp_path / "out"), *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("diffir: error:") and message in err[0]


def test_unwritable_output_and_missing_input(tmp_path, sr_weights, capsys) -> None:
    image = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(image)
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["restore", "-i", str(image), "-o", str(blocker / "out"), "-m", str(sr_weights)]) == 2
    assert "cannot create output folder" in capsys.readouterr().err
    assert main(["restore", "-i", str(tmp_path / "none*.png"), "-o", str(tmp_path), "-m", str(sr_weights)]) == 2
    assert "no file matches" in capsys.readouterr().err


def test_lama_layout_images_and_masks_in_one_folder(tmp_path, capsys) -> None:
    fixtures = shared_data("inpaint", "fixtures", "EC_celeba")
    model = tmp_path / "inpaint.safetensors"
    diffir.save_model(tiny_model("diffir_inpaint_celeba_s2"), model)
    folder, out = tmp_path / "pairs", tmp_path / "out"
    folder.mkdir()
    _crop_copy(fixtures / "images" / "celeba_04.png", folder / "face.png", 32)
    _crop_copy(fixtures / "masks" / "celeba_04.png", folder / "face_mask001.png", 32)
    assert main(["restore", "-i", str(folder), "--mask", str(folder), "-o", str(out), "-m", str(model), "-q"]) == 0
    assert [p.name for p in out.iterdir()] == ["face_out.png"]


# ------------------------------------------------------------------------------------ walkthrough findings
def test_run_folder_as_model_and_training_state_refused(tmp_path, sr_weights, capsys) -> None:
    image = tmp_path / "photo.png"
    Image.new("RGB", (8, 8), "gray").save(image)
    run = tmp_path / "runs" / "tiny_sr_x4_s2"
    (run / "checkpoints" / "iter_00000050").mkdir(parents=True)
    shutil.copy(sr_weights, run / "model.safetensors")
    state = run / "checkpoints" / "iter_00000050" / "state.pt"
    torch.save({"iteration": 50, "optimizers": {}, "rng": {"torch": torch.get_rng_state()}}, state)
    assert main(["restore", "-i", str(image), "-o", str(tmp_path / "o"), "-m", str(run), "-q"]) == 0
    assert (tmp_path / "o" / "photo_out.png").is_file()
    capsys.readouterr()
    assert main(["restore", "-i", str(image), "-o", str(tmp_path / "o"), "-m", str(state)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "this is a training state" in err[-1] and "model.safetensors" in err[-1]


def test_output_that_looks_like_a_file_name_is_refused_up_front(tmp_path, sr_weights, capsys) -> None:
    image = tmp_path / "photo.png"
    Image.new("RGB", (8, 8)).save(image)
    assert main(["restore", "-i", str(image), "-o", str(tmp_path / "sr_out.png"), "-m", str(sr_weights)]) == 2
    err = capsys.readouterr().err
    assert "-o takes a folder" in err and "--suffix/--ext" in err
    assert not (tmp_path / "sr_out.png").exists()
    (tmp_path / "odd.png").mkdir()  # an existing folder with such a name is a folder
    assert main(["restore", "-i", str(image), "-o", str(tmp_path / "odd.png"), "-m", str(sr_weights), "-q"]) == 0


def test_restoring_into_the_input_folder_twice_does_not_restore_the_outputs(tmp_path, sr_weights, capsys) -> None:
    folder = tmp_path / "io"
    folder.mkdir()
    Image.new("RGB", (8, 8), "gray").save(folder / "a.png")
    for _ in range(2):
        assert main(["restore", "-i", str(folder), "-o", str(folder), "-m", str(sr_weights), "-q"]) == 0
    assert sorted(p.name for p in folder.iterdir()) == ["a.png", "a_out.png"]
    summary = capsys.readouterr().err.strip().splitlines()[-1]
    assert "1 not restored (named *_out.*: outputs of an earlier run in the input folder)" in summary
    # a sub-folder of the input folder counts as well (a recursive glob sees the outputs there)
    assert main(["restore", "-i", str(folder / "**" / "*.png"), "-o", str(folder / "res"), "-m", str(sr_weights),
                 "-q"]) == 0
    assert main(["restore", "-i", str(folder / "**" / "*.png"), "-o", str(folder / "res"), "-m", str(sr_weights),
                 "-q"]) == 0
    assert sorted(p.name for p in (folder / "res").iterdir()) == ["a_out.png"]


def test_no_progress_bars_when_stderr_is_not_a_terminal(tmp_path, sr_weights, capsys) -> None:
    image = tmp_path / "photo.png"
    Image.new("RGB", (32, 32), "gray").save(image)
    # not -q, and tiled (8-px tiles): the image bar and both tile bars would print if enabled
    assert main(["restore", "-i", str(image), "-o", str(tmp_path / "o"), "-m", str(sr_weights), "-t", "8"]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and "it/s" not in err and "img/s" not in err
    assert len(err.strip().splitlines()) == 2  # header and summary only


def test_folder_of_subfolders_suggests_a_recursive_glob(tmp_path, sr_weights, capsys) -> None:
    (tmp_path / "Set5" / "HR").mkdir(parents=True)
    (tmp_path / "Set5" / "LR_bicubic").mkdir()
    assert main(["restore", "-i", str(tmp_path / "Set5"), "-o", str(tmp_path / "x"), "-m", str(sr_weights)]) == 2
    err = capsys.readouterr().err
    assert "not recursive" in err and f"'{tmp_path / 'Set5'}/**/*.png'" in err


def test_max_pixels_counts_pixels_and_help_shows_defaults(tmp_path, sr_weights, capsys) -> None:
    image = tmp_path / "photo.png"
    Image.new("RGB", (128, 128)).save(image)
    assert main(["restore", "-i", str(image), "-o", str(tmp_path / "o"), "-m", str(sr_weights), "-q",
                 "--max-pixels", "1000"]) == 1
    assert "128x128 = 16,384 pixels exceeds the limit of 1,000 pixels" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["restore", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for default in ("default: 100,000,000", "default: 32", "default: 0.5", "default: white", "default: results"):
        assert default in text, default


def test_mask_and_name_collision_messages(tmp_path, sr_weights, capsys) -> None:
    from diffir.pipelines.files import find_mask

    (tmp_path / "masks").mkdir()
    with pytest.raises(diffir.errors.ImageError, match=r"looked for face\.\*, face_mask\.\* and face_mask\*\.\*"):
        find_mask(tmp_path / "face.png", tmp_path / "masks")
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / sub / "x.png")
    (tmp_path / "a" / "zero.png").write_bytes(b"")
    assert main(["restore", "-i", str(tmp_path / "*" / "*.png"), "-o", str(tmp_path / "o"), "-m", str(sr_weights),
                 "-q"]) == 1
    err = capsys.readouterr().err
    collision = next(line for line in err.splitlines() if "already written" in line)
    assert str(tmp_path / "a" / "x.png") in collision and str(tmp_path / "b" / "x.png") in collision
    assert "--ext" not in collision
    assert f"{tmp_path / 'a' / 'zero.png'}: empty file" in err


def test_mask_hole_black(tmp_path, capsys) -> None:
    model = tmp_path / "inpaint.safetensors"
    diffir.save_model(tiny_model("diffir_inpaint_celeba_s2"), model)
    images, white, black = tmp_path / "images", tmp_path / "white", tmp_path / "black"
    for d in (images, white, black):
        d.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((16, 16, 3)) * 255).astype(np.uint8)).save(images / "face.png")
    hole = np.zeros((16, 16), np.uint8)
    hole[3:9, 4:12] = 255
    Image.fromarray(hole).save(white / "face.png")
    Image.fromarray(255 - hole).save(black / "face.png")
    base = ["restore", "-i", str(images), "-m", str(model), "-q"]
    assert main([*base, "--mask", str(white), "-o", str(tmp_path / "o1")]) == 0
    assert main([*base, "--mask", str(black), "--mask-hole", "black", "-o", str(tmp_path / "o2")]) == 0
    a, b = (np.asarray(Image.open(tmp_path / o / "face_out.png")) for o in ("o1", "o2"))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, np.asarray(Image.open(images / "face.png")))
