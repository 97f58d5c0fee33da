"""The bundled trained models: load by name, each meets its bar on real images, ``--task`` picks them."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import diffir
from conftest import REPO, require_shared
from diffir.bundled import DEFAULT_MODEL, bundled_path, list_bundled
from diffir.data.imresize import imresize
from diffir.metrics import calculate_niqe, calculate_psnr


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
    sr = diffir.Restorer("diffir_sr_x4_small", seed=0, device="cpu").restore(lr)  # the bicubic-task model
    assert sr.shape == hr.shape and sr.dtype == np.uint8
    bicubic = imresize(lr, 4)  # MATLAB bicubic, uint8 in -> uint8 out
    psnr_sr = calculate_psnr(sr, hr, crop_border=4, test_y_channel=True)
    psnr_bic = calculate_psnr(bicubic, hr, crop_border=4, test_y_channel=True)
    assert psnr_sr > psnr_bic + 1.0, (psnr_sr, psnr_bic)


def test_default_realsr_model_sharpens_real_photos_at_bicubic_fidelity() -> None:
    """The bar of the real-world model, on 4 of the 50 RealSR pairs: NIQE at least 2 below bicubic's, Y-PSNR at most
    1 dB under (the bicubic-trained model fails the NIQE half: it stays about as soft as bicubic)."""
    assert DEFAULT_MODEL == "diffir_realsr_x4_small"
    root = require_shared("data", "realsr", "RealSR")
    restorer = diffir.Restorer(DEFAULT_MODEL, seed=0, device="cpu")
    ours, bicubic = [], []
    for name in ("Canon_005_LR4.png", "Canon_020_LR4.png", "Canon_030_LR4.png", "Canon_040_LR4.png"):
        lr = np.asarray(Image.open(root / "LR" / name).convert("RGB"))
        hr = np.asarray(Image.open(root / "HR" / name).convert("RGB"))
        for out, scores in ((restorer.restore(lr), ours), (imresize(lr, 4), bicubic)):
            scores.append((calculate_psnr(out, hr, crop_border=4, test_y_channel=True),
                           calculate_niqe(out, crop_border=4)))
    (psnr, niqe), (psnr_bic, niqe_bic) = np.mean(ours, axis=0), np.mean(bicubic, axis=0)
    assert niqe <= niqe_bic - 2.0 and psnr >= psnr_bic - 1.0, (psnr, niqe, psnr_bic, niqe_bic)


# ------------------------------------------------------------------------------ diffir restore --task
def _png(path, size=(24, 16)) -> None:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)


def test_task_picks_that_tasks_bundled_model(tmp_path, capsys, monkeypatch) -> None:
    from diffir.bundled import BUNDLED, model_for_task
    from diffir.cli import main

    monkeypatch.setattr("diffir.cli.restore.DEFAULT_MODEL", "no_such_model")  # only --task can find the model
    _png(tmp_path / "a.png")
    outputs = {}
    for task in ("sr_x4", "realsr_x4"):
        name = model_for_task(task)
        assert BUNDLED[name].task == task and name in list_bundled()
        assert main(["restore", "-i", str(tmp_path / "a.png"), "-o", str(tmp_path / task), "--task", task,
                     "--threads", "1", "-q"]) == 0
        assert "sr x4" in capsys.readouterr().err
        outputs[task] = np.asarray(Image.open(tmp_path / task / "a_out.png"))
        assert outputs[task].shape == (64, 96, 3)
    assert not np.array_equal(outputs["sr_x4"], outputs["realsr_x4"])  # two different models ran


def test_task_without_a_bundled_model_says_how_to_get_one(tmp_path, capsys, monkeypatch) -> None:
    from diffir import bundled
    from diffir.cli import main

    # a release without a deblurring model (as before one was trained): the task names the way out
    monkeypatch.setattr(bundled, "BUNDLED", {k: m for k, m in bundled.BUNDLED.items() if m.task != "deblur"})
    _png(tmp_path / "a.png")
    assert main(["restore", "-i", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--task", "deblur"]) == 2
    err = capsys.readouterr().err
    assert "no bundled model for --task deblur" in err and "-m" in err and "Traceback" not in err


def test_task_refuses_a_model_that_does_something_else(tmp_path, capsys) -> None:
    from diffir.cli import main

    _png(tmp_path / "a.png")
    assert main(["restore", "-i", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "-m", DEFAULT_MODEL,
                 "--task", "deblur"]) == 2
    assert f"-m {DEFAULT_MODEL} does sr x4, not deblur" in capsys.readouterr().err
    assert not (tmp_path / "out" / "a_out.png").exists()
    # realsr_x4 and sr_x4 are both x4 SR: a bundled model is told apart by its card
    assert main(["restore", "-i", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "-m", "diffir_sr_x4_small",
                 "--task", "realsr_x4"]) == 2
    assert "-m diffir_sr_x4_small is the bundled sr_x4 model, not realsr_x4" in capsys.readouterr().err


def test_every_bundled_model_ships_small_with_a_complete_card() -> None:
    from diffir.bundled import BUNDLED, RESTORE_TASKS

    for name, entry in BUNDLED.items():
        path = bundled_path(name)
        assert path is not None and path.stat().st_size <= 10.5e6, name  # the package stays small
        assert entry.task in RESTORE_TASKS
        for field in ("description", "recipe", "data", "iterations", "train_time", "metrics", "licence"):
            assert getattr(entry, field).strip(), (name, field)
        assert "diffir train -c configs/" in entry.recipe and "diffir eval" in entry.metrics
        model = diffir.load_model(name)
        task, scale = RESTORE_TASKS[entry.task]
        assert (model.descriptor.task, model.descriptor.scale, model.descriptor.stage) == (task, scale, 2), name
        for config in entry.recipe.split("-c ")[1:]:
            assert (REPO / config.split()[0]).is_file(), config  # the recipe's configs are in the repository
