"""The generated stand-in for ``<shared>/data`` (tests/standin_data.py): deterministic, same layout and sizes."""

from __future__ import annotations

import numpy as np
from PIL import Image

import standin_data
from conftest import shared_data, shared_dir


def test_stand_in_is_deterministic_and_has_the_set5_layout(tmp_path) -> None:
    a = standin_data.build(tmp_path / "a", "sr/Set5")
    b = standin_data.build(tmp_path / "b", "sr/Set5")
    files = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    assert len(files) == 5 * 4 and files == sorted(p.relative_to(b) for p in b.rglob("*.png"))
    for rel in files:
        assert np.array_equal(np.asarray(Image.open(a / rel)), np.asarray(Image.open(b / rel))), rel
    for name, (w, h) in standin_data.SET5.items():
        assert Image.open(a / "HR" / f"{name}.png").size == (w, h)
        for s in (2, 3, 4):
            assert Image.open(a / "LR_bicubic" / f"X{s}" / f"{name}x{s}.png").size == (w // s, h // s)
    assert not (tmp_path / "a" / "train").exists()  # only the part asked for is written


def test_shared_data_is_the_shared_folder_when_present() -> None:
    path = shared_data("sr", "Set5")
    if (shared_dir() / "data").is_dir():
        assert path == shared_dir() / "data" / "sr" / "Set5"
    else:
        assert shared_dir() not in path.parents and (path / "HR" / "baby.png").is_file()


def test_stand_in_images_look_like_photographs() -> None:
    img = standin_data.natural_image(96, 128, seed=0).astype(float)
    assert img.shape == (96, 128, 3) and 40 < img.mean() < 215 and img.std() > 15
    luma, chroma = img.mean(2), img - img.mean(2, keepdims=True)
    grad = lambda x: np.abs(np.diff(x, axis=1)).mean()  # noqa: E731
    assert grad(luma) > 2 * grad(chroma)  # detail in the luminance, colour varies slowly
