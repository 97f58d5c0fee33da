"""``diffir export onnx``: the whole stage-2 inference as one ONNX graph (condition encoder, unrolled sampler with
its noise as inputs, restoration network), run with ONNX Runtime at other sizes than the traced one."""

from __future__ import annotations

import sys

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F

import diffir
from conftest import tiny_model
from diffir.cli import main
from diffir.diffusion.sampler import PreDrawnNoise
from diffir.export.onnx import OnnxRestorer, adaptive_avg_pool2d, export_onnx

HIDIFF_TINY = dict(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(1, 1, 2, 2), embed_dim=8,
                   encoder_blocks=1, denoiser_inner_channels=16)
TOL = 1e-4


def _hidiff(preset: str):
    torch.manual_seed(0)
    return diffir.create_model(preset, **HIDIFF_TINY).eval()


def _prior_steered(model):
    """A tiny random DiffIR barely depends on its prior (outputs move ~1e-4 between seeds, the size of the
    tolerance): scale the IPR → modulation kernels so that the noise visibly steers the output (~3e-3)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".kernel." in name:
                p.mul_(30)
    return model


def _torch_out(model, lq: np.ndarray, seed: int) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(lq), generator=torch.Generator().manual_seed(seed)).numpy()


def _dims(value) -> list:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def test_pool_matches_adaptive_avg_pool_with_overlapping_bins() -> None:
    x = torch.randn(2, 3, 13, 22)
    for size in ((1, 1), (4, 4), (3, 5), (13, 22)):
        assert torch.allclose(adaptive_avg_pool2d(x, size), F.adaptive_avg_pool2d(x, size), atol=1e-6)


def test_pre_drawn_noise_reproduces_the_seeded_generator() -> None:
    model = tiny_model("diffir_sr_x4_s2")
    cond = torch.randn(2, 256)
    with torch.no_grad():
        want = model.sample_prior(cond, torch.Generator().manual_seed(7))
        recorder = PreDrawnNoise(generator=torch.Generator().manual_seed(7))
        assert torch.equal(model.sample_prior(cond, recorder), want)
        assert len(recorder.tensors) == model.diffusion.draws_per_sample
        assert torch.equal(model.sample_prior(cond, PreDrawnNoise(recorder.tensors)), want)
        with pytest.raises(ValueError, match="needs more than the 1 pre-drawn"):
            model.sample_prior(cond, PreDrawnNoise(recorder.tensors[:1]))


# (model, trace size, run size, batch): run sizes differ from the trace and give HI-Diff's 4×4 pool overlapping
# bins (H/4 = 6, W/4 = 14).
CASES = {
    "diffir_sr_x4": (lambda: _prior_steered(tiny_model("diffir_sr_x4_s2")), (32, 32), (24, 40), 2),
    "diffir_inpaint": (lambda: _prior_steered(tiny_model("diffir_inpaint_places_s2")), (32, 32), (40, 24), 1),
    "hidiff_gopro": (lambda: _hidiff("hidiff_gopro_s2"), (32, 32), (24, 56), 1),
}


@pytest.mark.parametrize("name", list(CASES))
def test_exported_graph_matches_torch_at_another_size(name, tmp_path) -> None:
    make, trace, size, batch = CASES[name]
    model = make()
    d = model.descriptor
    path = export_onnx(model, tmp_path / f"{name}.onnx", sample_size=trace, check=False)
    graph = onnx.load(str(path)).graph
    inputs = {v.name: _dims(v) for v in graph.input}
    assert inputs["lq"] == ["batch", d.in_channels, "height", "width"]
    assert inputs["noise"] == ["batch", *d.prior_shape]  # x_T is an input, not a constant of the trace
    assert [_dims(v) for v in graph.output] == [["batch", d.out_channels, "out_height", "out_width"]]
    runner = OnnxRestorer(path, threads=1)
    lq = np.random.default_rng(0).random((batch, d.in_channels, *size), dtype=np.float32)
    if d.task == "inpaint":  # [RGB·(1−mask), mask]
        lq[:, 3:] = lq[:, 3:] > 0.7
        lq[:, :3] *= 1 - lq[:, 3:]
    got = runner.run(lq, seed=3)
    want = _torch_out(model, lq, seed=3)
    assert got.shape == (batch, d.out_channels, size[0] * d.scale, size[1] * d.scale)
    assert np.abs(got - want).max() <= TOL
    # the noise drives the prior: another seed, another image, still equal to torch's
    other = runner.run(lq, seed=4)
    assert np.abs(other - got).max() > 10 * TOL
    assert np.abs(other - _torch_out(model, lq, seed=4)).max() <= TOL


def test_per_step_noise_is_an_input_when_the_sampler_adds_it(tmp_path) -> None:
    model = _prior_steered(tiny_model("diffir_deblur_s2"))
    model.set_ablation(reverse_noise=True)  # DiffIR ablation V4: posterior noise added in every reverse step
    path = export_onnx(model, tmp_path / "v4.onnx", sample_size=(32, 32), check=False)
    runner = OnnxRestorer(path, threads=1)
    assert runner.input_names == ["lq", "noise", "step_noise"]
    lq = np.random.default_rng(1).random((1, 3, 24, 16), dtype=np.float32)
    feeds = runner.noise(1, seed=5)
    assert feeds["step_noise"].shape == (model.config.timesteps, 1, 256)
    got = runner.run(lq, noise=feeds)
    assert np.abs(got - _torch_out(model, lq, seed=5)).max() <= TOL
    feeds["step_noise"] = feeds["step_noise"][::-1].copy()
    assert np.abs(runner.run(lq, noise=feeds) - got).max() > 10 * TOL


def test_cli_exports_a_saved_checkpoint(tmp_path, capsys) -> None:
    model = tiny_model("diffir_sr_x4_s2", seed=1)
    ckpt = diffir.save_model(model, tmp_path / "tiny_sr.safetensors")
    out = tmp_path / "out" / "tiny_sr.onnx"
    assert main(["export", "onnx", str(ckpt), str(out), "--size", "32x40", "--opset", "17"]) == 0
    printed = capsys.readouterr().out
    assert "wrote" in printed and "noise (batch, 256)" in printed and "checked against torch" in printed
    assert [p.name for p in out.parent.iterdir()] == ["tiny_sr.onnx"]  # no temporary file left behind
    proto = onnx.load(str(out))
    assert proto.opset_import[0].version == 17
    assert {p.key: p.value for p in proto.metadata_props}["scale"] == "4"
    lq = np.random.default_rng(2).random((3, 29, 35), dtype=np.float32)  # any size: padded and cropped back
    got = OnnxRestorer(out, threads=1).run(lq, seed=0)
    restorer = diffir.Restorer(diffir.load_model(ckpt), seed=0, tile=0)
    want = restorer.restore_float(torch.from_numpy(lq)[None])[0].numpy()
    assert got.shape == (3, 29 * 4, 35 * 4)
    assert np.abs(np.clip(got, 0, 1) - want).max() <= TOL


def _error(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("diffir: error: ")
    return err


def test_cli_errors_are_one_line(tmp_path, capsys, monkeypatch) -> None:
    s1 = diffir.save_model(tiny_model("diffir_sr_x4_s1"), tmp_path / "s1.safetensors")
    s2 = diffir.save_model(tiny_model("diffir_sr_x4_s2"), tmp_path / "s2.safetensors")
    out = tmp_path / "x.onnx"
    assert "stage-1" in _error(["export", "onnx", str(s1), str(out)], capsys)
    assert "unknown export format 'tflite'; supported: onnx" in _error(["export", "tflite", str(s2), str(out)], capsys)
    assert "not a multiple of the model's size multiple 8" in _error(
        ["export", "onnx", str(s2), str(out), "--size", "30x32"], capsys)
    assert "opset 9 is not supported: choose 13..20" in _error(["export", "onnx", str(s2), str(out), "--opset", "9"],
                                                              capsys)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    assert "pip install 'diffir-toolkit[onnx]'" in _error(["export", "onnx", str(s2), str(out)], capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s1.safetensors", "s2.safetensors"]


def test_failed_export_leaves_no_file(tmp_path, monkeypatch) -> None:
    def broken(model, args, f, **kwargs):
        with open(f, "wb") as fh:
            fh.write(b"half a graph")
        raise RuntimeError("exporter crashed")

    monkeypatch.setattr(torch.onnx, "export", broken)
    with pytest.raises(RuntimeError, match="exporter crashed"):
        export_onnx(tiny_model("diffir_sr_x4_s2"), tmp_path / "x.onnx", sample_size=(16, 16))
    assert list(tmp_path.iterdir()) == []
