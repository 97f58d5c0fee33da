"""Training-curve reading/plotting and the PSNR vs Multi-Adds scatter."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import diffir
from conftest import tiny_model
from diffir.cli import main
from diffir.errors import ConfigError
from diffir.evaluation import EvalOptions, evaluate
from diffir.evaluation.plots import PAPER_REALSR_POINTS, read_training_log


def _run_dir(tmp_path, name="run1"):
    run = tmp_path / name
    run.mkdir()
    lines = [{"iter": i, "loss_pix": 1.0 / i, "lr": 2e-4, "it_s": 3.0, "eta_s": 10.0} for i in range(1, 6)]
    lines.insert(2, {"event": "rollback", "iter": 3, "to": 1, "rollbacks": 1})
    text = "\n".join(json.dumps(x) for x in lines) + "\n{\"iter\": 6, \"loss_p"  # a line still being written
    (run / "log.jsonl").write_text(text)
    (run / "val.jsonl").write_text(json.dumps({"iter": 5, "psnr": 21.5, "ssim": 0.6, "best": True}) + "\n")
    return run


def test_read_training_log(tmp_path):
    log = read_training_log(_run_dir(tmp_path))
    assert log["loss_pix"][0] == (1, 1.0) and len(log["loss_pix"]) == 5
    assert log["val/psnr"] == [(5, 21.5)]
    assert "to" not in log and "eta_s" not in log and "val/best" not in log  # events and flags are not curves
    with pytest.raises(ConfigError, match="no log.jsonl"):
        read_training_log(tmp_path)


def test_plot_training_curves_via_cli(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    runs = [_run_dir(tmp_path, "a"), _run_dir(tmp_path, "b")]
    assert main(["eval", "--curves", *map(str, runs), "-o", str(tmp_path / "plots")]) == 0
    png = tmp_path / "plots" / "training_curves.png"
    assert png.exists() and Image.open(png).size[0] > 300
    assert "training_curves.png" in capsys.readouterr().out


def test_paper_points_and_macs_plot(tmp_path):
    pytest.importorskip("matplotlib")
    diffir_points = [p for p in PAPER_REALSR_POINTS if p.method == "DiffIR_S2"]
    assert {(p.benchmark, p.psnr, p.tmacs) for p in diffir_points} == {("RealSRSet", 27.65, 0.74),
                                                                       ("NTIRE2020-T1", 27.31, 0.74)}
    model = diffir.save_model(tiny_model("diffir_realsr_x4_s2"), tmp_path / "m.safetensors")
    data = tmp_path / "d"
    data.mkdir()
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(data / "a.png")
    out = tmp_path / "o"
    result = evaluate(data, out, model=model, options=EvalOptions(degrade="bicubic_x4", metrics=["psnr"], grids=False))
    from diffir.evaluation.plots import model_tmacs_at_256, plot_psnr_vs_macs

    assert 0 < model_tmacs_at_256(model) < 0.1  # tiny model: far below the real 0.74 T
    path = plot_psnr_vs_macs(result, model, out)
    assert path.exists() and Image.open(path).size[0] > 400
