"""What a new user meets first: the distribution name, model names resolved the same everywhere, thread options,
and commands that behave in logs (plain progress lines) and do not silently overwrite results."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image

import diffir
from conftest import REPO, shared_data, tiny_model
from diffir.cli import main
from diffir.errors import DiffIRError


def test_the_distribution_name_is_ours_and_used_in_every_install_hint() -> None:
    pyproject = (REPO / "pyproject.toml").read_text()  # (tomllib needs Python 3.11)
    assert re.search(r'^name = "diffir-toolkit"$', pyproject, re.M)  # `diffir` on PyPI is an unrelated project
    assert re.search(r'^diffir = "diffir.cli:main"$', pyproject, re.M)
    from diffir.install import pip_extra

    assert pip_extra("train") == "pip install 'diffir-toolkit[train]' (in a checkout: pip install -e '.[train]')"
    for path in [*(REPO / "src").rglob("*.py"), REPO / "README.md", *(REPO / "docs").glob("*.md")]:
        text = path.read_text()
        assert "install diffir[" not in text and "'diffir[" not in text and '"diffir[' not in text, path


def test_gitignore_covers_outputs() -> None:
    lines = (REPO / ".gitignore").read_text().split()
    assert "results/" in lines and "runs/" in lines


# ----------------------------------------------------------------------------------- one model resolver
@pytest.fixture
def models(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFIR_MODELS", str(tmp_path / "models"))
    return tmp_path / "models"


def test_every_entry_point_accepts_the_bundled_name(models, capsys) -> None:
    model = diffir.load_model("diffir_sr_x4_small")
    assert model.descriptor.task == "sr" and model.descriptor.scale == 4
    assert diffir.Restorer("diffir_sr_x4_small").scale == 4
    assert main(["info", "diffir_sr_x4_small", "--no-macs"]) == 0
    assert "(bundled: " in capsys.readouterr().out


def test_installed_weights_win_over_bundled_and_show_in_the_list(models, capsys) -> None:
    mine = tiny_model("diffir_sr_x2_s2")
    diffir.save_model(mine, models / "diffir_sr_x4_small.safetensors")  # the user's file shadows the bundled one
    assert diffir.load_model("diffir_sr_x4_small").descriptor.scale == 2
    diffir.save_model(mine, models / "my_x2.safetensors")
    assert diffir.Restorer("my_x2").scale == 2
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    installed = out[out.index("installed in"):out.index("architecture presets")]
    assert "my_x2" in installed and "x2" in installed


def test_a_preset_name_gives_random_weights_only_when_asked(models, capsys) -> None:
    with pytest.raises(DiffIRError) as info:
        diffir.load_model("diffir_sr_x4_s2")
    text = str(info.value)
    assert "architecture preset" in text and "did you mean" not in text
    assert "diffir convert" in text and "diffir list --official" in text
    with pytest.raises(DiffIRError, match="architecture preset"):
        diffir.Restorer("diffir_sr_x4_s2")
    model = diffir.load_model("diffir_deblur_s2", random_weights=True)
    assert model.descriptor.task == "deblur"
    image = models.parent / "x.png"
    Image.new("RGB", (8, 8)).save(image)
    assert main(["restore", "-i", str(image), "-o", str(models.parent / "out"), "-m", "diffir_sr_x4_s2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did you mean 'diffir_sr_x4_s2'" not in err


def test_suggestions_never_repeat_the_name_typed(models) -> None:
    from diffir.io.locate import _suggestion

    for name in ["diffir_sr_x4_small", "diffir_sr_x4_s2", "hidiff_gopro_s2"]:
        assert repr(name) not in _suggestion(name)
    assert "'diffir_sr_x4_small'" in _suggestion("diffir_sr_x4_smal")


def test_a_missing_official_file_says_where_it_is_published(models, capsys) -> None:
    assert main(["info", "DiffIRS2-GANx4.pth"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "no such file or folder" in err
    assert "Zj-BinXia/DiffIR" in err and f"{models}/diffir_realsr_x4_gan.safetensors" in err


def test_a_missing_folder_is_called_a_folder(tmp_path) -> None:
    with pytest.raises(DiffIRError, match="no such file or folder"):
        diffir.load_model(tmp_path / "runs" / "missing_run/")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DiffIRError, match="folder without model weights"):
        diffir.load_model(tmp_path / "empty")


# ----------------------------------------------------------------------------------------------- threads
@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _sr_folder(root, n=2, size=32):
    hr = root / "hr"
    hr.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8)).save(hr / f"im{i}.png")
    return hr


def test_threads_option_on_restore_eval_and_train(tmp_path, restore_threads, capsys, monkeypatch) -> None:
    hr = _sr_folder(tmp_path)
    torch.set_num_threads(2)
    assert main(["eval", "--task", "sr", "--scale", "4", "--data", str(hr), "--degrade", "bicubic_x4",
                 "--metrics", "psnr", "--no-grids", "-o", str(tmp_path / "e"), "--threads", "1"]) == 0
    assert torch.get_num_threads() == 1
    torch.set_num_threads(2)
    assert main(["restore", "-i", str(hr / "im0.png"), "-o", str(tmp_path / "r"), "--threads", "1"]) == 0
    assert "(1 thread)" in capsys.readouterr().err
    for bad in (["--threads", "0"], ["--threads", "zero"], ["--tile", "x"]):  # argparse: one line, exit 2
        with pytest.raises(SystemExit) as exit_info:
            main(["eval", "--task", "sr", "--data", str(hr), *bad])
        assert exit_info.value.code == 2
    monkeypatch.setenv("DIFFIR_DATA", str(shared_data()))
    torch.set_num_threads(2)
    assert main(["train", "-c", str(REPO / "configs" / "tiny" / "sr_x4_s1.yaml"), "--out", str(tmp_path / "t"),
                 "--set", "train.iters=1", "--set", "val.every=0", "--set", "data.train.patch_size=32",
                 "--threads", "1", "-q"]) == 0
    assert torch.get_num_threads() == 1


# ---------------------------------------------------------------------------------------- output hygiene
def test_eval_refuses_to_overwrite_and_reports_plain_progress(tmp_path, capsys) -> None:
    hr = _sr_folder(tmp_path)
    args = ["eval", "--task", "sr", "--scale", "4", "--data", str(hr), "--degrade", "bicubic_x4", "--metrics",
            "psnr", "--no-grids", "-o", str(tmp_path / "res")]
    assert main(args) == 0
    err = capsys.readouterr().err  # stderr is not a terminal here: one plain line per image, no bar
    assert "diffir eval hr: image 1/2 im0" in err and "diffir eval hr: image 2/2 im1" in err and "\r" not in err
    before = (tmp_path / "res" / "results.md").read_text()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "already holds an evaluation" in err and "--overwrite" in err
    assert (tmp_path / "res" / "results.md").read_text() == before
    assert main([*args, "--overwrite"]) == 0


def test_train_prints_plain_lines_when_not_on_a_terminal(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("DIFFIR_DATA", str(shared_data()))
    assert main(["train", "-c", str(REPO / "configs" / "tiny" / "sr_x4_s1.yaml"), "--out", str(tmp_path / "t"),
                 "--set", "train.iters=2", "--set", "val.every=0", "--set", "log.every=1",
                 "--set", "data.train.patch_size=32"]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("diffir train")]
    assert len(lines) == 2 and "iteration 1/2" in lines[0] and "ETA" in lines[1]
    assert "\r" not in err and "it/s]" not in err  # no progress bar in a log


def test_auto_threads_leave_busy_cores_to_other_programs(monkeypatch, restore_threads) -> None:
    """A core kept busy by another program is not used (a short timing alone misses it); niced work yields."""
    import diffir.runtime.threads as threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    monkeypatch.setattr(threads, "_chosen", None)
    monkeypatch.setattr(threads.time, "sleep", lambda s: None)
    # /proc/stat's first line: user nice system idle iowait irq softirq steal
    samples = iter([(0.0, 0.0), (100.0, 200.0)])  # 100 of 200 jiffies busy over 2 cores: one core busy
    monkeypatch.setattr(threads, "_cpu_times", lambda: next(samples))
    assert threads.busy_cores() == pytest.approx(1.0)
    samples = iter([(0.0, 0.0), (100.0, 200.0)])
    assert threads.choose_threads() == 1
    assert threads.configure_threads("auto") == 1 and torch.get_num_threads() == 1
    monkeypatch.setattr(threads, "_chosen", None)
    samples = iter([(0.0, 0.0), (5.0, 200.0)])  # quiet: both counts are timed, the choice is measured
    assert threads.choose_threads() in (1, 2)


def test_cpu_times_count_niced_work_as_free(tmp_path, monkeypatch) -> None:
    import builtins

    import diffir.runtime.threads as threads

    stat = tmp_path / "stat"
    stat.write_text("cpu  100 900 50 1000 10 1 2 3 0 0\ncpu0 ...\n")
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda f, *a, **k: real_open(stat if f == "/proc/stat" else f, *a, **k))
    busy, total = threads._cpu_times()
    assert busy == 100 + 50 + 1 + 2 + 3 and total == 100 + 900 + 50 + 1000 + 10 + 1 + 2 + 3


def test_an_official_install_name_not_yet_installed_says_which_file_to_get(models) -> None:
    with pytest.raises(DiffIRError) as info:
        diffir.Restorer("diffir_realsr_x4_gan")
    text = str(info.value)
    assert "not installed yet" in text and "DiffIRS2-GANx4.pth" in text and "did you mean" not in text
    assert f"diffir convert DiffIRS2-GANx4.pth {models}/diffir_realsr_x4_gan.safetensors" in text


def test_missing_from_s1_folder_is_called_missing(tmp_path) -> None:
    from diffir.io.runs import resolve_weights

    with pytest.raises(DiffIRError, match="no such file or folder"):
        resolve_weights(tmp_path / "runs" / "never_trained")


def test_eval_reports_a_missing_model_before_an_existing_results_folder(tmp_path, capsys) -> None:
    hr = _sr_folder(tmp_path)
    (tmp_path / "res").mkdir()
    (tmp_path / "res" / "results.md").write_text("earlier")
    assert main(["eval", "-m", str(tmp_path / "nope.safetensors"), "--data", str(hr), "--degrade", "bicubic_x4",
                 "-o", str(tmp_path / "res")]) == 2
    assert "nope.safetensors: no such file or folder" in capsys.readouterr().err
