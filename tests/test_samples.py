"""The sample images in samples/: listed in its README, readable, reproducible, and the SR one restores."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import diffir
from conftest import REPO
from diffir.io.images import read_image

SAMPLES = REPO / "samples"
README = SAMPLES / "README.md"


def listed_files() -> list[str]:
    """Every ``samples/...png|jpg`` path named in samples/README.md, in order, without repeats."""
    found = re.findall(r"samples/[\w./-]+?\.(?:png|jpe?g)\b", README.read_text(encoding="utf-8"))
    return list(dict.fromkeys(found))


def image_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.suffix.lower() in (".png", ".jpg"))


def test_readme_lists_every_sample_and_each_opens() -> None:
    listed = listed_files()
    assert listed, "samples/README.md names no sample file"
    for rel in listed:
        path = REPO / rel
        assert path.is_file(), f"{rel} is listed in samples/README.md but missing"
        pixels = read_image(path).pixels
        assert pixels.dtype == np.uint8 and pixels.shape[2] in (1, 3), (rel, pixels.shape, pixels.dtype)
        assert path.stat().st_size < 120_000, f"{rel} is {path.stat().st_size} bytes"
    on_disk = {f"samples/{rel}" for rel in image_files(SAMPLES)}
    assert on_disk == set(listed), f"not listed in samples/README.md: {sorted(on_disk - set(listed))}"


def test_inpaint_mask_matches_its_image() -> None:
    image = read_image(SAMPLES / "inpaint" / "astronaut.png").pixels
    mask = read_image(SAMPLES / "inpaint" / "astronaut_mask.png").pixels
    assert mask.shape == (*image.shape[:2], 1) and set(np.unique(mask)) == {0, 255}
    assert 0.05 < (mask > 0).mean() < 0.25


def test_make_samples_rebuilds_the_same_pixels(tmp_path: Path) -> None:
    pytest.importorskip("skimage", reason="the samples are rebuilt from scikit-image's photos (test extra)")
    spec = importlib.util.spec_from_file_location("make_samples", SAMPLES / "make_samples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--out", str(tmp_path)]) == 0
    made = image_files(tmp_path)
    assert made == image_files(SAMPLES)
    for rel in made:  # pixels, not bytes: another zlib may compress the same PNG differently
        rebuilt, shipped = (np.asarray(Image.open(root / rel)) for root in (tmp_path, SAMPLES))
        assert np.array_equal(rebuilt, shipped), f"{rel} differs when rebuilt"


def test_sr_sample_restores_with_the_bundled_model() -> None:
    lr = read_image(SAMPLES / "sr_x4" / "chelsea.png").pixels
    sr = diffir.Restorer("diffir_sr_x4_small", device="cpu", seed=0).restore(lr)
    assert sr.dtype == np.uint8
    assert sr.shape == (lr.shape[0] * 4, lr.shape[1] * 4, 3)


def test_readme_first_command_restores_the_realsr_sample_with_the_default_model(tmp_path, monkeypatch, capsys) -> None:
    """The Quick start's command (CI runs it verbatim too): the real-photo sample, no -m, the default model."""
    import shlex

    from diffir.bundled import DEFAULT_MODEL
    from diffir.cli import main

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    first = next(line for line in readme.splitlines() if line.startswith("diffir restore "))
    argv = shlex.split(first.split("#")[0])[1:]
    assert argv[argv.index("-i") + 1] == "samples/realsr_x4/coffee.png" and "-m" not in argv and "--task" not in argv
    argv[argv.index("-o") + 1] = str(tmp_path / "results")
    monkeypatch.chdir(REPO)
    assert main([*argv, "--threads", "1"]) == 0
    out = read_image(tmp_path / "results" / "coffee_out.png").pixels
    lr = read_image(SAMPLES / "realsr_x4" / "coffee.png").pixels
    assert out.shape == (lr.shape[0] * 4, lr.shape[1] * 4, 3)
    expected = diffir.Restorer(DEFAULT_MODEL, device="cpu", seed=0).restore(lr)
    assert np.array_equal(out, expected)  # the default model made it


def test_sample_commands_without_a_model_restore_offline_with_the_bundled_ones(tmp_path, monkeypatch) -> None:
    """samples/README.md's commands that name no model (-m) run as written, on the bundled model of their task;
    one for each task that ships a model (the sample folders are named after the tasks)."""
    import shlex

    from diffir.bundled import BUNDLED, list_bundled
    from diffir.cli import main

    text = README.read_text(encoding="utf-8")
    block = text.split("## Restore them", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0] for line in block.splitlines() if line.startswith("diffir restore ")]
    monkeypatch.chdir(REPO)
    ran = set()
    for n, command in enumerate(c for c in commands if " -m " not in c):
        argv = shlex.split(command)[1:]
        argv[argv.index("-o") + 1] = str(tmp_path / str(n))
        assert main([*argv, "--threads", "1", "-q"]) == 0, command
        source = Path(argv[argv.index("-i") + 1])
        out = read_image(tmp_path / str(n) / f"{source.stem}_out.png").pixels
        lq = read_image(source).pixels
        scale = 4 if source.parent.name.endswith("x4") else 1
        assert out.shape == (lq.shape[0] * scale, lq.shape[1] * scale, 3), command
        ran.add(source.parent.name)
    assert {BUNDLED[name].task for name in list_bundled()} <= ran, ran
