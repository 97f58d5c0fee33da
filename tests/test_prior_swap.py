"""benchmarks/prior_swap.py: restoring with each image's own, another image's and a zero stage-1 prior."""

from __future__ import annotations

import runpy
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import diffir
from conftest import REPO, tiny_model
from diffir.metrics import calculate_psnr


def test_prior_swap_reports_the_three_priors(tmp_path, monkeypatch, capsys) -> None:
    model = tiny_model("diffir_sr_x4_s1")
    path = diffir.save_model(model, tmp_path / "s1.safetensors")
    rng = np.random.default_rng(0)
    (tmp_path / "gt").mkdir()
    (tmp_path / "lq").mkdir()
    own = []
    for name in ("a", "b"):
        gt = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        lq = np.asarray(Image.fromarray(gt).resize((16, 16), Image.BICUBIC))
        Image.fromarray(gt).save(tmp_path / "gt" / f"{name}.png")
        Image.fromarray(lq).save(tmp_path / "lq" / f"{name}.png")
        t = [torch.from_numpy(a.astype(np.float32)).permute(2, 0, 1)[None] / 255 for a in (lq, gt)]
        with torch.no_grad():
            out = model.restore(t[0], model.prior(*t)).clamp(0, 1)[0].permute(1, 2, 0).numpy()
        own.append(calculate_psnr((out * 255).round().astype(np.uint8), gt, crop_border=4, test_y_channel=True))
    monkeypatch.setattr(sys, "argv", ["prior_swap.py", str(path), str(tmp_path / "gt"), str(tmp_path / "lq")])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(REPO / "benchmarks" / "prior_swap.py"), run_name="__main__")
    assert done.value.code == 0
    rows = {line.split("|")[1].strip(): line.split("|")[2:4] for line in capsys.readouterr().out.splitlines()
            if line.startswith("| ") and "prior" in line and "PSNR" not in line}
    assert list(rows) == ["own prior", "next image's prior", "zero prior"]
    assert float(rows["own prior"][0]) == pytest.approx(np.mean(own), abs=1e-3)
    assert rows["own prior"][1].split() == [f"{v:.2f}" for v in own]
