"""``diffir eval``: layouts, degradations, baselines, reports, grids, skipped metrics, CLI (tiny random models)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

import diffir
from conftest import require_shared, tiny_model
from diffir.cli import main
from diffir.errors import ConfigError
from diffir.evaluation import EvalOptions, evaluate
from diffir.evaluation.fill import harmonic_fill
from diffir.evaluation.grids import choose_crop
from diffir.evaluation.items import detect_layout, pair_files
from diffir.metrics import calculate_psnr


def _pattern(h: int, w: int, phase: float = 0.0) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack([128 + 90 * np.sin(x / (4 + c) + phase) * np.cos(y / (5 + c)) for c in range(3)], -1)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _write(folder, name, img):
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(folder / name)


@pytest.fixture
def sr_model_file(tmp_path):
    return diffir.save_model(tiny_model("diffir_sr_x4_s2"), tmp_path / "tiny_sr_x4.safetensors")


def _read_rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_gt_only_bicubic_with_model_writes_tables_and_grids(tmp_path, sr_model_file):
    data = tmp_path / "mini"
    _write(data, "a.png", _pattern(42, 37))  # not a multiple of 4: GT is cropped to 40x36
    _write(data, "b.png", _pattern(36, 44, 1.0))
    out = tmp_path / "out"
    opts = EvalOptions(degrade="bicubic_x4", metrics=["psnr", "ssim"], save_images=True, grid_crop=32)
    result = evaluate(data, out, model=sr_model_file, options=opts)
    assert result.methods == ["bicubic", "lanczos", "tiny_sr_x4"]
    rows = _read_rows(out / "per_image.csv")
    assert len(rows) == 6 and {r["method"] for r in rows} == set(result.methods)
    summary = {r["method"]: r for r in _read_rows(out / "summary.csv")}
    bic = [float(r["psnr"]) for r in rows if r["method"] == "bicubic"]
    assert float(summary["bicubic"]["psnr"]) == pytest.approx(np.mean(bic), abs=1e-5)
    md = (out / "results.md").read_text()
    assert "| bicubic |" in md and "| tiny_sr_x4 |" in md and "PSNR ↑" in md and "Y (MATLAB rgb2ycbcr)" in md
    assert "crop_border = 4" in md
    grid = Image.open(out / "grids" / "a.png")  # input, 2 baselines, model, GT: 5 crops of 32 px at zoom 2
    assert grid.size == (5 * 64 + 4 * 4, 64 + 18)
    assert Image.open(out / "images" / "tiny_sr_x4" / "a.png").size == (36, 40)
    payload = json.loads((out / "results.json").read_text())
    assert payload["higher_is_better"] == {"psnr": True, "ssim": True} and payload["images"] == 2


def test_bicubic_row_matches_direct_computation(tmp_path):
    data = tmp_path / "one"
    gt = _pattern(48, 40)
    _write(data, "x.png", gt)
    result = evaluate(data, tmp_path / "o", options=EvalOptions(degrade="bicubic_x4", metrics=["psnr"], grids=False))
    from diffir.data.imresize import imresize

    expect = calculate_psnr(imresize(imresize(gt, 1 / 4), 4), gt, 4, test_y_channel=True)
    assert result.means()["bicubic"]["psnr"] == pytest.approx(expect, abs=1e-9)


def test_set5_bicubic_x4_baseline_is_the_published_number(tmp_path):
    root = require_shared("data", "sr", "Set5")
    paired = evaluate(root, tmp_path / "p", options=EvalOptions(task="sr", scale=4, metrics=["psnr", "ssim"],
                                                                grids=False))
    synth = evaluate(root, tmp_path / "s", options=EvalOptions(degrade="bicubic_x4", metrics=["psnr", "ssim"],
                                                               grids=False))
    for res in (paired, synth):  # LR_bicubic/X4 files and our on-the-fly LR agree: imresize is bit-exact
        assert res.means()["bicubic"]["psnr"] == pytest.approx(28.43, abs=0.01)  # published: 28.42
        assert res.means()["bicubic"]["ssim"] == pytest.approx(0.8111, abs=0.0005)  # published: 0.8104
    assert paired.means() == synth.means()


def test_layout_detection_and_name_matching(tmp_path):
    root = tmp_path / "set"
    _write(root / "HR", "baby.png", _pattern(16, 16))
    _write(root / "LR_bicubic" / "X4", "babyx4.png", _pattern(4, 4))
    layout = detect_layout(root, scale=4)
    assert layout.kind == "paired" and layout.lq_dir.name == "X4"
    assert pair_files(layout)[0].lq.name == "babyx4.png"
    with pytest.raises(ConfigError, match="X2"):
        detect_layout(root, scale=2)
    assert detect_layout(root, scale=4, degrade="bicubic_x4").kind == "gt_only"
    blur = tmp_path / "blur_set"
    _write(blur / "sharp", "f.png", _pattern(8, 8))
    _write(blur / "blur", "f.png", _pattern(8, 8))
    assert detect_layout(blur).description == "sharp/ + blur/"
    real = tmp_path / "realsr"
    _write(real / "HR", "Canon_001_LR4.png", _pattern(8, 8))
    _write(real / "LR", "Canon_001_LR4.png", _pattern(2, 2))
    assert pair_files(detect_layout(real, scale=4))[0].lq.parent.name == "LR"
    _write(real / "LR", "Canon_002_LR4.png", _pattern(2, 2))
    _write(real / "HR", "Canon_003_LR4.png", _pattern(8, 8))
    with pytest.raises(ConfigError, match="no LQ image matching Canon_003"):
        pair_files(detect_layout(real, scale=4))


def test_deblur_pairs_with_size_mismatch_are_cropped_and_noted(tmp_path):
    model = diffir.save_model(tiny_model("diffir_deblur_s2"), tmp_path / "deblur.safetensors")
    root = tmp_path / "pairs"
    sharp = _pattern(34, 40)
    _write(root / "sharp", "p.png", sharp)
    _write(root / "blur", "p.png", _pattern(32, 40, 0.2))  # 2 rows shorter, like DeblurGAN_test1
    result = evaluate(root, tmp_path / "o", model=model, options=EvalOptions(metrics=["psnr", "ssim"], grids=False))
    assert result.methods == ["input", "deblur"] and result.conventions["channel"] == "RGB"
    row = next(r for r in result.rows if r["method"] == "input")
    assert row["psnr"] == pytest.approx(calculate_psnr(_pattern(32, 40, 0.2), sharp[:32], 0))
    assert "top-left overlap" in row["notes"]


def test_inpainting_masks_fill_baseline_and_model_keep_known_pixels(tmp_path):
    model = diffir.save_model(tiny_model("diffir_inpaint_celeba_s2"), tmp_path / "inp.safetensors")
    root = tmp_path / "fixtures"
    img = _pattern(32, 32)
    mask = np.full((32, 32), 255, np.uint8)
    mask[8:20, 10:24] = 0  # MAT convention: black = hole
    _write(root / "images", "t.png", img)
    _write(root / "masks", "t.png", mask)
    out = tmp_path / "o"
    result = evaluate(root, out, model=model, options=EvalOptions(mask_hole="black", metrics=["psnr"],
                                                                  save_images=True, grid_crop=16))
    assert result.task == "inpaint" and result.methods == ["harmonic fill", "inp"]
    # the hole size is reported (a wrong --mask-hole polarity would show up as 83.6 %)
    assert result.conventions["mean hole"].startswith("16.4% of the pixels (mask files, --mask-hole black)")
    assert all("hole 16.4%" in r["notes"] for r in result.rows)
    hole = mask == 0
    for method in result.methods:
        restored = np.array(Image.open(out / "images" / method.replace(" ", "_") / "t.png"))
        assert np.array_equal(restored[~hole], img[~hole]), method
    assert (out / "grids" / "t.png").exists()
    # over the holes only: the known pixels (kept exactly) no longer dilute the error
    holes = evaluate(root, tmp_path / "h", model=model, options=EvalOptions(mask_hole="black", metrics=["ssim",
        "psnr", "psnr_hole", "ssim_hole"]))
    fill = holes.means()["harmonic fill"]
    restored = np.array(Image.open(out / "images" / "harmonic_fill" / "t.png")).astype(np.float64)
    mse_hole = np.mean((restored[hole] - img[hole]) ** 2)
    assert fill["psnr_hole"] == pytest.approx(10 * np.log10(255**2 / mse_hole), abs=1e-9)
    assert fill["psnr_hole"] == pytest.approx(fill["psnr"] + 10 * np.log10(hole.mean()), abs=1e-9)
    from diffir.metrics.psnr_ssim import _ssim_map

    centres = hole[5:-5, 5:-5]  # the 11x11 windows centred in the hole
    brute = np.mean([_ssim_map(restored[..., c], img[..., c].astype(np.float64))[centres].mean() for c in range(3)])
    assert fill["ssim_hole"] == pytest.approx(brute, abs=1e-12) and fill["ssim_hole"] < fill["ssim"]
    _write(tmp_path / "sr", "a.png", _pattern(32, 32))
    with pytest.raises(ConfigError, match="psnr_hole scores inpainting holes; this is a sr evaluation"):
        evaluate(tmp_path / "sr", tmp_path / "x", options=EvalOptions(degrade="bicubic_x4", metrics=["psnr_hole"]))
    # GT-only folder + LaMa evaluation masks, deterministic per seed
    faces = tmp_path / "faces"
    _write(faces, "f.png", _pattern(64, 64))
    r1 = evaluate(faces, tmp_path / "m1", model=model, options=EvalOptions(degrade="mask_thick", metrics=["psnr"]))
    r2 = evaluate(faces, tmp_path / "m2", model=model, options=EvalOptions(degrade="mask_thick", metrics=["psnr"]))
    assert r1.means() == r2.means()


def test_harmonic_fill_is_exact_on_linear_ramps():
    y, x = np.mgrid[0:64, 0:64]
    ramp = np.stack([2 * x + y, 3 * y, 100 + x], -1).astype(np.uint8)
    hole = np.zeros((64, 64), bool)
    hole[10:50, 5:40] = True
    filled = harmonic_fill(ramp, hole, iterations=400)
    assert np.abs(filled.astype(int) - ramp.astype(int)).max() <= 2
    assert np.array_equal(filled[~hole], ramp[~hole])


def test_grid_crop_is_chosen_on_gt_detail():
    gt = np.full((64, 64, 3), 120, np.uint8)
    gt[40:60, 36:60] = _pattern(20, 24)
    top, left, side = choose_crop(gt, 24)
    assert side == 24 and 30 <= top <= 44 and 28 <= left <= 40


def test_missing_weights_metric_is_skipped_with_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFIR_METRIC_WEIGHTS", str(tmp_path / "none"))
    data = tmp_path / "d"
    _write(data, "a.png", _pattern(32, 32))
    out = tmp_path / "o"
    result = evaluate(data, out, options=EvalOptions(degrade="bicubic_x2", metrics=["psnr", "lpips", "fid"],
                                                     grids=False), log=lambda msg: None)
    assert set(result.skipped) == {"lpips", "fid"}
    md = (out / "results.md").read_text()
    assert "**lpips skipped**" in md and "AlexNet" in md and "LPIPS" not in md.split("\n")[2]
    assert "lpips" not in _read_rows(out / "per_image.csv")[0]


def test_cli_eval_and_errors(tmp_path, capsys, sr_model_file):
    data = tmp_path / "d"
    _write(data, "a.png", _pattern(32, 32))
    rc = main(["eval", "--model", str(sr_model_file), "--data", str(data), "--degrade", "bicubic_x4",
               "--metrics", "psnr,ssim", "-o", str(tmp_path / "o"), "--label", "diffir"])  # fmt: skip
    assert rc == 0
    assert "| diffir |" in capsys.readouterr().out
    assert main(["eval", "--data", str(data), "--degrade", "bicubic_x2", "--model", str(sr_model_file),
                 "-o", str(tmp_path / "o2")]) == 2  # x2 degradation for a x4 model  # fmt: skip
    assert "does not fit" in capsys.readouterr().err
    assert main(["eval", "--data", str(data), "--task", "sr", "-o", str(tmp_path / "o3")]) == 2  # GT only
    assert "--degrade" in capsys.readouterr().err


def test_missing_data_folder_says_where_it_looked_and_hints_without_resolving(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DIFFIR_DATA", raising=False)
    opts = EvalOptions(task="sr", metrics=["psnr"])
    with pytest.raises(ConfigError, match="not a folder") as err:
        evaluate("Set14", tmp_path / "o", options=opts)
    msg = str(err.value)
    assert "\n" not in msg and f"looked for {tmp_path / 'Set14'}" in msg
    assert "$DIFFIR_DATA/sr/Set14" in msg and "realsr/RealSR" in msg and "deblur/real_pairs" in msg
    shared = tmp_path / "shared"
    _write(shared / "sr" / "Set14" / "HR", "a.png", _pattern(16, 16))
    monkeypatch.setenv("DIFFIR_DATA", str(shared))
    with pytest.raises(ConfigError, match=r"did you mean --data \$DIFFIR_DATA/sr/Set14"):  # a hint, not a lookup
        evaluate("Set14", tmp_path / "o", options=opts)
    with pytest.raises(ConfigError, match="--lq .*missing_lq: not a folder"):
        evaluate(None, tmp_path / "o", options=EvalOptions(task="sr", gt_dir=shared / "sr" / "Set14" / "HR",
                                                            lq_dir=tmp_path / "missing_lq"))  # fmt: skip


def test_scale_mismatch_is_an_error_modcrop_is_not(tmp_path, capsys):
    gt_dir, x2, x4 = tmp_path / "HR", tmp_path / "X2", tmp_path / "X4"
    for name, (h, w) in (("a", (42, 37)), ("b", (40, 40))):  # a: not a multiple of 4 (modcrop, 2 + 1 px)
        gt = _pattern(h, w)
        _write(gt_dir, f"{name}.png", gt)
        _write(x2, f"{name}.png", _pattern(h // 2, w // 2))
        _write(x4, f"{name}.png", _pattern(h // 4, w // 4))
    opts = dict(task="sr", scale=4, metrics=["psnr"], grids=False, gt_dir=gt_dir)
    ok = evaluate(None, tmp_path / "ok", options=EvalOptions(lq_dir=x4, **opts), log=lambda m: None)
    assert len({r["image"] for r in ok.rows}) == 2
    assert "top-left overlap" in next(r for r in ok.rows if r["image"] == "a")["notes"]
    with pytest.raises(ConfigError, match=r"^a: GT 37x42 but the x4 output of the 18x21 input is 72x84 "
                                          r"\(the pair looks x2\): the data does not fit a sr x4 model"):  # fmt: skip
        evaluate(None, tmp_path / "bad", options=EvalOptions(lq_dir=x2, **opts))
    # a later image that does not fit: one warning line, the image is left out and named in the report
    _write(x4, "b.png", _pattern(20, 20))
    warnings = []
    res = evaluate(None, tmp_path / "later", options=EvalOptions(lq_dir=x4, **opts), log=lambda m: None,
                   warn=warnings.append)  # fmt: skip
    assert {r["image"] for r in res.rows} == {"a"} and len(warnings) == 1 and "b: GT 40x40" in warnings[0]
    assert "skipped (GT size does not fit a x4 output): b" in (tmp_path / "later" / "results.md").read_text()
    # the CLI: one error line, exit code 2
    rc = main(["eval", "--task", "sr", "--scale", "4", "--gt", str(gt_dir), "--lq", str(x2), "--metrics", "psnr",
               "-o", str(tmp_path / "cli"), "--no-grids"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "diffir: error: a: GT 37x42" in err and "use x4 data" in err


def test_default_metrics_run_out_of_the_box(tmp_path, monkeypatch, capsys):
    from diffir.evaluation import default_metrics

    weights = tmp_path / "weights"
    weights.mkdir()
    monkeypatch.setenv("DIFFIR_METRIC_WEIGHTS", str(weights))
    assert default_metrics("sr") == ["psnr", "ssim", "niqe"]
    assert default_metrics("deblur") == ["psnr", "ssim"]
    assert default_metrics("inpaint") == ["psnr", "ssim", "psnr_hole", "ssim_hole"]
    (weights / "alexnet-owt-7be5be79.pth").write_bytes(b"")  # found -> on by default
    (weights / "pt_inception-2015-12-05-6726825d.pth").write_bytes(b"")
    assert default_metrics("sr") == ["psnr", "ssim", "niqe", "lpips"]
    assert default_metrics("inpaint") == ["psnr", "ssim", "psnr_hole", "ssim_hole", "lpips", "fid"]
    assert "dists" in default_metrics("deblur", {"vgg16": "given.pth"})  # given explicitly: tried, not hidden
    for f in weights.iterdir():
        f.unlink()
    data = tmp_path / "d"
    _write(data, "a.png", _pattern(32, 32))
    base = ["eval", "--data", str(data), "--degrade", "bicubic_x2", "--no-grids"]
    assert main([*base, "-o", str(tmp_path / "o1")]) == 0
    out = capsys.readouterr()
    assert "warning" not in out.err and "skipp" not in out.out + out.err and "| PSNR ↑ | SSIM ↑ | NIQE ↓ |" in out.out
    assert main([*base, "-o", str(tmp_path / "o2"), "--metrics", "psnr,lpips"]) == 0  # requested but missing
    err = [line for line in capsys.readouterr().err.splitlines() if "lpips" in line]
    assert len(err) == 1 and err[0].startswith("diffir: warning: lpips skipped: needs torchvision's AlexNet")


def test_cli_mask_alias_device_default_and_run_folder_label(tmp_path, sr_model_file):
    from diffir.cli import build_parser
    from diffir.evaluation.runner import model_label

    root = tmp_path / "fx"
    _write(root / "images", "t.png", _pattern(24, 24))
    mask = np.zeros((24, 24), np.uint8)
    mask[4:12, 4:12] = 255
    _write(root / "masks", "t.png", mask)
    argv = ["eval", "--task", "inpaint", "--gt", str(root / "images"), "--mask", str(root / "masks"),
            "--metrics", "psnr", "-o", str(tmp_path / "o"), "--no-grids"]  # fmt: skip
    args = build_parser().parse_args(argv)
    assert args.masks == root / "masks" and args.device == "auto" and EvalOptions().device == "auto"
    assert main(argv) == 0 and "hole 11.1%" in (tmp_path / "o" / "per_image.csv").read_text()
    assert model_label(tmp_path / "run_a" / "model.safetensors") == "run_a"
    assert model_label(str(tmp_path / "run_b" / "checkpoints" / "iter_00000300" / "params_ema.safetensors")) == (
        "run_b/iter_00000300")
    assert model_label(tmp_path / "x" / "diffir_sr_x4.safetensors") == "diffir_sr_x4" and model_label(None) == "diffir"
    run = tmp_path / "sr_run"
    run.mkdir()
    model = sr_model_file.rename(run / "model.safetensors")
    opts = EvalOptions(degrade="bicubic_x4", metrics=["psnr"], grids=False, baselines=False)
    res = evaluate(tmp_path / "fx" / "images", tmp_path / "o2", model=model, log=lambda m: None, options=opts)
    assert res.methods == ["sr_run"]


def test_several_models_and_outputs_made_elsewhere_in_one_table(tmp_path, sr_model_file, capsys):
    data = tmp_path / "pairs"
    gts = {"a": _pattern(32, 40), "b": _pattern(40, 32, 1.0)}
    for name, gt in gts.items():
        _write(data / "HR", f"{name}.png", gt)
        _write(data / "LR", f"{name}.png", gt[::4, ::4])
    other = diffir.save_model(tiny_model("diffir_sr_x4_s2"), tmp_path / "other_x4.safetensors")
    peer = tmp_path / "peer"  # a peer tool's outputs: the GT itself for a, GT shifted by 1 px for b
    _write(peer, "a_out.png", gts["a"])
    _write(peer, "b.png", np.roll(gts["b"], 1, axis=1))
    out = tmp_path / "out"
    assert main(["eval", "-d", str(data), "-m", str(sr_model_file), "-m", str(other), "--outputs",
                 f"peer={peer}", "--metrics", "psnr", "-o", str(out), "--no-grids"]) == 0
    summary = {r["method"]: r for r in _read_rows(out / "summary.csv")}
    assert list(summary) == ["bicubic", "lanczos", "tiny_sr_x4", "other_x4", "peer"]
    rows = {(r["image"], r["method"]): r for r in _read_rows(out / "per_image.csv")}
    assert rows[("a", "peer")]["psnr"] == "inf"  # found under diffir restore's name, a_out.png
    shifted = calculate_psnr(np.roll(gts["b"], 1, axis=1), gts["b"], crop_border=4, test_y_channel=True)
    assert float(rows[("b", "peer")]["psnr"]) == pytest.approx(shifted, abs=1e-4)
    # a folder of wrong-size outputs is refused, not cropped into a better score
    _write(peer, "a_out.png", gts["a"][:16, :20])
    assert main(["eval", "-d", str(data), "--task", "sr", "--scale", "4", "--outputs", f"peer={peer}",
                 "--metrics", "psnr", "-o", str(tmp_path / "out2"), "--no-grids"]) == 2
    assert "a_out.png: 20x16, but the sr x4 output of its 10x8 input is 40x32" in capsys.readouterr().err
    (peer / "b.png").unlink()
    _write(peer, "a_out.png", gts["a"])
    assert main(["eval", "-d", str(data), "--task", "sr", "--outputs", f"peer={peer}", "--metrics", "psnr",
                 "-o", str(tmp_path / "out3"), "--no-grids"]) == 2
    assert f"--outputs peer={peer}: no output for b" in capsys.readouterr().err
    assert main(["eval", "-d", str(data), "-m", str(sr_model_file), "-m", str(sr_model_file), "-o",
                 str(tmp_path / "out4")]) == 2
    assert "two models would share the row name 'tiny_sr_x4'" in capsys.readouterr().err
    named_like_a_baseline = diffir.save_model(tiny_model("diffir_sr_x4_s2"), tmp_path / "bicubic.safetensors")
    assert main(["eval", "-d", str(data), "-m", str(named_like_a_baseline), "-o", str(tmp_path / "out5")]) == 2
    assert "-m bicubic: that row name is a baseline's" in capsys.readouterr().err
    deblur = diffir.save_model(tiny_model("diffir_deblur_s2"), tmp_path / "deblur.safetensors")
    assert main(["eval", "-d", str(data), "-m", str(sr_model_file), "-m", str(deblur), "-o",
                 str(tmp_path / "out6")]) == 2
    assert "the models do different tasks (tiny_sr_x4: sr x4, deblur: deblur x1)" in capsys.readouterr().err


def test_hole_metrics_say_when_a_mask_has_no_hole(tmp_path):
    root = tmp_path / "fixtures"
    for name, hole in (("a", True), ("b", False)):
        mask = np.full((32, 32), 255, np.uint8)
        if hole:
            mask[8:20, 10:24] = 0
        _write(root / "images", f"{name}.png", _pattern(32, 32))
        _write(root / "masks", f"{name}.png", mask)
    result = evaluate(root, tmp_path / "o", options=EvalOptions(mask_hole="black", metrics=["psnr_hole"]))
    rows = {r["image"]: r for r in result.rows}
    assert rows["a"]["psnr_hole"] is not None and rows["b"]["psnr_hole"] is None
    assert "psnr_hole: the mask has no hole pixel" in rows["b"]["notes"]
    assert "psnr_hole over 1 of 2 images" in " ".join(result.notes)
