"""Precision chosen by measurement (``precision="auto"``), the per-image float32 fallback, ``--compile`` wiring.

Timing is monkeypatched wherever a choice is asserted (the real speeds depend on the machine and its load), and
torch.compile is always a stub here: a real compilation takes minutes and needs a C compiler.
"""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import diffir
from conftest import shared_data, tiny_model
from diffir.cli import main
from diffir.errors import DiffIRError
from diffir.pipelines import precision
from diffir.pipelines.precision import CALIBRATION_IMAGE, MAX_ERROR, calibrate, calibration_input


def calibration_pattern(size: int = 96) -> np.ndarray:
    """The bundled calibration image (``diffir/assets/calibration.png``), made from nothing but this code.

    A 1/f colour texture with a vertical tint gradient, seven flat-coloured discs or bars with hard edges, a patch
    of fine diagonal stripes, all rendered 4× larger and box-averaged (antialiased edges), plus mild noise.
    """
    rng = np.random.default_rng(20240)
    ss = 4
    n = size * ss
    f = np.sqrt(np.fft.fftfreq(n)[None, :] ** 2 + np.fft.fftfreq(n)[:, None] ** 2)
    f[0, 0] = 1.0
    mix = np.array([[0.55, 0.30, 0.15], [0.35, 0.45, 0.20], [0.20, 0.30, 0.50]])
    fields = []
    for _ in range(3):
        spectrum = (rng.standard_normal((n, n)) + 1j * rng.standard_normal((n, n))) / f**1.1
        spectrum[0, 0] = 0
        field = np.fft.ifft2(spectrum).real
        fields.append(field / field.std())
    texture = np.einsum("cij,ck->ijk", np.stack(fields), mix)
    y, x = np.mgrid[0:n, 0:n] / n
    img = 0.45 + 0.08 * texture + np.stack([0.25 * (1 - y), 0.1 * x, 0.2 * y], -1) - 0.1
    for _ in range(7):
        cy, cx, r = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.06, 0.2)
        colour = rng.uniform(0.05, 0.95, 3)
        if rng.uniform() < 0.5:
            inside = (y - cy) ** 2 + (x - cx) ** 2 < r**2
        else:
            a = rng.uniform(0, np.pi)
            u = (x - cx) * np.cos(a) + (y - cy) * np.sin(a)
            v = -(x - cx) * np.sin(a) + (y - cy) * np.cos(a)
            inside = (np.abs(u) < r) & (np.abs(v) < r / 3)
        img[inside] = colour + 0.04 * texture[inside]
    stripes = 0.5 + 0.4 * np.sin(2 * np.pi * (x * 23 + y * 9))
    patch = (x > 0.62) & (x < 0.95) & (y > 0.05) & (y < 0.3)
    img[patch] = stripes[patch, None] * np.array([0.9, 0.85, 0.7])
    img = img.reshape(size, ss, size, ss, 3).mean(axis=(1, 3))
    img += 0.01 * rng.standard_normal(img.shape)
    return np.clip(np.round(img * 255), 0, 255).astype(np.uint8)


@pytest.fixture(autouse=True)
def _fresh_calibrations():
    precision.clear_calibrations()
    yield
    precision.clear_calibrations()


@pytest.fixture(scope="module")
def sr4():
    return tiny_model("diffir_sr_x4_s2")


def _fake_timing(monkeypatch, seconds: dict[str, float]) -> list[str]:
    """Replace the clock of the calibration: each run of a candidate 'takes' ``seconds[name]``; returns the log."""
    calls: list[str] = []

    def fake(name, run, device):
        calls.append(name)
        return seconds[name]

    monkeypatch.setattr(precision, "_seconds", fake)
    return calls


def _autocast_dtype() -> torch.dtype | None:
    return torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None


def _real_crop(size: int = 32) -> torch.Tensor:
    path = shared_data("sr", "Set5", "LR_bicubic", "X4", "babyx4.png")
    with Image.open(path) as im:
        a = np.asarray(im.convert("RGB"))[40: 40 + size, 40: 40 + size]
    return torch.from_numpy(a.astype(np.float32) / 255).permute(2, 0, 1)[None].contiguous()


# ------------------------------------------------------------------------------------------ calibration image
def test_calibration_image_is_the_generated_pattern() -> None:
    assert CALIBRATION_IMAGE.is_file() and CALIBRATION_IMAGE.parent.name == "assets"  # package data: assets/*
    with Image.open(CALIBRATION_IMAGE) as im:
        shipped = np.asarray(im.convert("RGB")).astype(int)
    made = calibration_pattern().astype(int)
    assert shipped.shape == made.shape == (96, 96, 3)
    diff = np.abs(shipped - made)
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3  # rounding of the FFT may differ across platforms


def test_calibration_input_fits_the_model() -> None:
    assert calibration_input(tiny_model("diffir_sr_x4_s2")).shape == (1, 3, 64, 64)
    assert calibration_input(tiny_model("diffir_deblur_s2")).shape == (1, 3, 96, 96)
    inpaint = calibration_input(tiny_model("diffir_inpaint_places_s2"))
    assert inpaint.shape[:2] == (1, 4) and set(inpaint[0, 3].unique().tolist()) == {0.0, 1.0}


# ------------------------------------------------------------------------------------------ precision="auto"
def test_auto_rejects_a_faster_candidate_beyond_the_error_bound(sr4, monkeypatch) -> None:
    original = sr4.G.forward

    def off_in_fp16(lq, prior):  # fp16 is "fastest" but 3/255 off; bf16 is exact enough
        out = original(lq, prior)
        return out + 3 / 255 if _autocast_dtype() == torch.float16 else out

    monkeypatch.setattr(sr4.G, "forward", off_in_fp16)
    calls = _fake_timing(monkeypatch, {"fp32": 1.0, "bf16": 0.5, "fp16": 0.1})
    cal = calibrate(sr4, torch.device("cpu"), candidates=["fp32", "bf16", "fp16"])
    assert cal.choice == "bf16" and cal.dtype == torch.bfloat16
    fp16 = cal.trial("fp16")
    assert not fp16.accepted and fp16.max_error > MAX_ERROR and fp16.seconds == ()  # never timed
    assert "fp16" not in calls and calls.count("fp32") == calls.count("bf16") == 3
    assert calls[:2] in (["fp32", "bf16"], ["bf16", "fp32"])  # alternating
    assert cal.speedup() == pytest.approx(2.0)
    assert cal.describe().startswith("precision auto → bf16 (×2.00 faster than fp32, max error ")

    # What was chosen is finite and within the bound on the calibration input.
    lq = calibration_input(sr4)
    with torch.no_grad():
        prior = sr4.sample_prior(sr4.condition_of(lq), torch.Generator().manual_seed(0))
        ref = sr4.restore(lq, prior).clamp(0, 1)
        with torch.autocast("cpu", dtype=cal.dtype):
            out = sr4.restore(lq, prior).float().clamp(0, 1)
    assert torch.isfinite(out).all() and (out - ref).abs().max() <= MAX_ERROR


def test_auto_rejects_non_finite_and_keeps_fp32_unless_clearly_faster(sr4, monkeypatch) -> None:
    original = sr4.G.forward

    def nan_in_bf16(lq, prior):
        out = original(lq, prior)
        return out * float("nan") if _autocast_dtype() == torch.bfloat16 else out

    monkeypatch.setattr(sr4.G, "forward", nan_in_bf16)
    _fake_timing(monkeypatch, {"fp32": 1.0, "bf16": 0.1})
    cal = calibrate(sr4, torch.device("cpu"), cache=False)
    assert cal.choice == "fp32" and cal.trial("bf16").max_error == float("inf")
    assert cal.describe() == "precision auto → fp32 (bf16 NaN/Inf)"
    monkeypatch.setattr(sr4.G, "forward", original)

    _fake_timing(monkeypatch, {"fp32": 1.0, "bf16": 0.99})  # 1 % faster: within noise, fp32 kept
    assert calibrate(sr4, torch.device("cpu"), cache=False).choice == "fp32"
    _fake_timing(monkeypatch, {"fp32": 1.0, "bf16": 1.3})
    slower = calibrate(sr4, torch.device("cpu"), cache=False)
    assert slower.choice == "fp32" and "bf16 ×0.77 the speed of fp32, max error" in slower.describe()


def test_auto_choice_is_cached_per_model_and_device(sr4, monkeypatch, tmp_path) -> None:
    calls = _fake_timing(monkeypatch, {"fp32": 1.0, "bf16": 0.5})
    r = diffir.Restorer(sr4, precision="auto")
    assert r.calibration is None and not calls  # measured on first use, not at construction
    x = torch.rand(1, 3, 12, 12)
    r.restore(x)
    assert r.calibration is not None and r.calibration.choice == "bf16" and r.dtype == torch.bfloat16
    measured = len(calls)
    assert measured == 6
    r.restore(x)
    # Another Restorer, even on a second load of the same weights, reuses the choice.
    diffir.save_model(sr4, tmp_path / "same.safetensors")
    again = diffir.Restorer(tmp_path / "same.safetensors", precision="auto")
    assert again.choose_precision() == torch.bfloat16 and again.calibration is r.calibration
    assert len(calls) == measured
    other = tiny_model("diffir_sr_x4_s2", seed=1)  # other weights: measured anew
    diffir.Restorer(other, precision="auto").choose_precision()
    assert len(calls) == 2 * measured


def test_unknown_precision_is_an_error(sr4) -> None:
    with pytest.raises(DiffIRError, match="or auto"):
        diffir.Restorer(sr4, precision="fp8")


# ------------------------------------------------------------------------------------------ fallback per image
@pytest.mark.parametrize("tile", [0, 8])
def test_nan_fallback_lasts_one_image(sr4, monkeypatch, tile) -> None:
    r = diffir.Restorer(sr4, precision="bf16", tile=tile, tile_overlap=0)
    original = r.model.G.forward
    seen: list[torch.dtype | None] = []
    nans = [1]

    def nan_once(lq, prior):  # NaN in the first reduced-precision call only (one overflowing image)
        dtype = _autocast_dtype()
        seen.append(dtype)
        out = original(lq, prior)
        if dtype is not None and nans[0]:
            nans[0] -= 1
            return out * float("nan")
        return out

    monkeypatch.setattr(r.model.G, "forward", nan_once)
    x = torch.rand(1, 3, 16, 16)
    with pytest.warns(UserWarning, match="recomputing in float32 for this image"):
        first = r.restore(x)
    assert r.dtype == torch.float32 and r.fallbacks == 1
    fp32 = diffir.Restorer(sr4, tile=tile, tile_overlap=0).restore(x)
    assert torch.allclose(first, fp32, atol=1e-6)

    seen.clear()
    second = r.restore(x)
    assert seen and all(d == torch.bfloat16 for d in seen)  # the next image runs in bf16 again
    assert r.dtype == torch.bfloat16 and r.fallbacks == 1
    bf16 = diffir.Restorer(sr4, precision="bf16", tile=tile, tile_overlap=0).restore(x)
    assert torch.equal(second, bf16)


def test_nan_fallback_of_one_image_spares_the_next_image_of_the_same_batch(sr4, monkeypatch) -> None:
    r = diffir.Restorer(sr4, precision="bf16")
    original = r.model.G.forward
    seen: list[torch.dtype | None] = []

    def nan_first(lq, prior):  # the first image of the batch overflows in bf16
        dtype = _autocast_dtype()
        seen.append(dtype)
        out = original(lq, prior)
        return out * float("nan") if dtype is not None and len(seen) == 1 else out

    monkeypatch.setattr(r.model.G, "forward", nan_first)
    x = torch.rand(2, 3, 16, 16)
    with pytest.warns(UserWarning, match="for this image"):
        out = r.restore(x)
    assert seen == [torch.bfloat16, None, torch.bfloat16]  # image 1: bf16, redone in fp32; image 2: bf16 again
    assert r.fallbacks == 1 and r.dtype == torch.bfloat16
    assert torch.allclose(out[:1], diffir.Restorer(sr4).restore(x[:1]), atol=1e-6)
    assert torch.equal(out[1:], diffir.Restorer(sr4, precision="bf16").restore(x[1:]))


# ------------------------------------------------------------------------------------------ --compile
def _stub_compile(monkeypatch, fail: bool = False) -> dict[str, list]:
    """torch.compile replaced: records what it wraps and every call of the 'compiled' function."""
    record: dict[str, list] = {"wrapped": [], "calls": []}

    def stub(fn, *args, **kwargs):
        record["wrapped"].append(fn)

        def compiled(*a):
            record["calls"].append(a[0].shape)
            if fail:
                raise RuntimeError("InductorError: no working C compiler found")
            return fn(*a)

        return compiled

    monkeypatch.setattr(torch, "compile", stub)
    return record


def test_compile_wraps_the_network_and_reports_once(sr4, monkeypatch, capsys) -> None:
    record = _stub_compile(monkeypatch)
    x = torch.rand(1, 3, 16, 16)
    plain = diffir.Restorer(sr4).restore(x)
    assert not record["wrapped"]  # opt-in
    r = diffir.Restorer(sr4, compile=True)
    assert record["wrapped"] == [r.model.restore]
    assert torch.equal(r.restore(x), plain) and torch.equal(r.restore(x), plain)
    assert len(record["calls"]) == 2
    err = capsys.readouterr().err
    assert err.count("torch.compile") == 1 and "compiled in" in err


def test_compile_failure_falls_back_with_one_warning(sr4, monkeypatch) -> None:
    record = _stub_compile(monkeypatch, fail=True)
    x = torch.rand(1, 3, 16, 16)
    r = diffir.Restorer(sr4, compile=True)
    with pytest.warns(UserWarning, match="torch.compile failed .*no working C compiler.*uncompiled"):
        out = r.restore(x)
    assert torch.equal(out, diffir.Restorer(sr4).restore(x))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r.restore(x)  # no second warning, no second attempt
    assert len(record["calls"]) == 1


# ------------------------------------------------------------------------------------------ CLI
@pytest.fixture()
def cli_inputs(tmp_path, sr4):
    weights = tmp_path / "tiny_sr.safetensors"
    diffir.save_model(sr4, weights)
    inp = tmp_path / "in"
    inp.mkdir()
    with Image.open(shared_data("sr", "Set5", "LR_bicubic", "X4", "birdx4.png")) as im:
        im.crop((0, 0, 24, 20)).save(inp / "bird.png")
    shutil.copy(inp / "bird.png", inp / "bird2.png")
    return weights, inp, tmp_path / "out"


def test_cli_precision_auto_prints_the_choice(cli_inputs, monkeypatch, capsys) -> None:
    weights, inp, out = cli_inputs
    _fake_timing(monkeypatch, {"fp32": 1.0, "bf16": 0.8})
    code = main(["restore", "-i", str(inp), "-o", str(out), "-m", str(weights), "--precision", "auto",
                 "--threads", "1", "-q"])
    err = capsys.readouterr().err
    assert code == 0 and "2 restored" in err
    header = err.splitlines()[0]
    assert "precision auto → bf16 (×1.25 faster than fp32, max error " in header and "/255)" in header
    assert sorted(p.name for p in out.iterdir()) == ["bird2_out.png", "bird_out.png"]

    # Measured for real (tiny network): whatever wins is named; the default stays fp32 and says so.
    precision.clear_calibrations()
    monkeypatch.undo()
    assert main(["restore", "-i", str(inp), "-o", str(out), "-m", str(weights), "--precision", "auto",
                 "--threads", "1", "-q", "--overwrite"]) == 0
    assert "precision auto → " in capsys.readouterr().err.splitlines()[0]
    assert main(["restore", "-i", str(inp), "-o", str(out), "-m", str(weights), "--threads", "1", "-q",
                 "--overwrite"]) == 0
    assert ", fp32, tile auto" in capsys.readouterr().err.splitlines()[0]


def test_cli_compile_flag(cli_inputs, monkeypatch, capsys) -> None:
    weights, inp, out = cli_inputs
    record = _stub_compile(monkeypatch)
    args = ["restore", "-i", str(inp), "-o", str(out), "-m", str(weights), "--threads", "1", "-q"]
    assert main(args) == 0 and not record["wrapped"]
    assert main([*args, "--overwrite", "--compile"]) == 0
    assert len(record["wrapped"]) == 1 and len(record["calls"]) == 2  # one network, two images
    assert capsys.readouterr().err.count("torch.compile") == 1


# ------------------------------------------------------------------------------------------ accuracy, real image
@pytest.mark.parametrize("preset", ["diffir_sr_x4_s2", "diffir_deblur_s2"])
def test_bf16_on_a_real_image_is_within_2_of_255(preset) -> None:
    model = tiny_model(preset)
    x = _real_crop(32)
    fp32 = diffir.Restorer(model).restore(x)
    bf16 = diffir.Restorer(model, precision="bf16").restore(x)
    assert torch.isfinite(bf16).all() and (bf16 - fp32).abs().max() <= MAX_ERROR
