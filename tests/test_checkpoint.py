"""Checkpoint loading/saving: containers, inference of every hyper-parameter, round trips, clear errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import diffir
from conftest import require_shared, tiny_model
from diffir.archs.diffir.config import DiffIRConfig
from diffir.archs.diffir.model import build_model
from diffir.archs.diffir.official import to_official_state_dict
from diffir.errors import CheckpointError
from diffir.io.checkpoint import load_model, read_checkpoint, save_model
from diffir.registry import get_config

# Configurations unlike any preset: other dims, block counts, heads, bias, LayerNorm types, T, β, dual-pixel.
ODD_CONFIGS = [
    dict(task="sr", scale=4, dim=6, num_blocks=(2, 0, 1, 1), num_refinement_blocks=0, heads=(1, 2, 3, 4),
         ffn_expansion_factor=2.66, bias=True, layernorm="WithBias", n_encoder_res=3, n_denoise_res=2,
         timesteps=6, linear_start=0.05, linear_end=0.9),
    dict(task="sr", scale=1, dim=4, num_blocks=(1, 1, 1, 1), num_refinement_blocks=2, heads=(2, 2, 2, 2),
         ffn_expansion_factor=1.5, layernorm="BiasFree", n_encoder_res=0, timesteps=1),
    dict(task="deblur", scale=1, dim=8, num_blocks=(1, 1, 2, 1), num_refinement_blocks=3, heads=(1, 2, 4, 8),
         ffn_expansion_factor=2.0, bias=True, dual_pixel=True, n_encoder_res=2, timesteps=8, linear_end=0.5),
    dict(task="inpaint", scale=1, in_channels=4, dim=4, num_blocks=(1, 1, 1, 3), num_refinement_blocks=0,
         heads=(1, 1, 1, 2), ffn_expansion_factor=1.8, n_encoder_res=1, n_denoise_res=0),
]


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("stage", [1, 2])
@pytest.mark.parametrize("kw", ODD_CONFIGS, ids=lambda kw: f"{kw['task']}{kw['scale']}")
def test_infer_round_trip_both_formats(tmp_path, kw, stage) -> None:
    torch.manual_seed(0)
    model = build_model(DiffIRConfig(stage=stage, **kw))
    for name, official in (("m.safetensors", False), ("m.pth", True)):
        path = save_model(model, tmp_path / name, official=official)
        loaded = load_model(path)
        if official:  # shapes cannot tell 2.66 from 2.7 (same network); the rest must be inferred exactly
            got, want = loaded.config.to_dict(), model.config.to_dict()
            assert int(6 * got.pop("ffn_expansion_factor")) == int(6 * want.pop("ffn_expansion_factor"))
            if stage == 1:  # an official S1 file carries no diffusion settings
                for key in ("n_denoise_res", "timesteps", "linear_start", "linear_end"):
                    got.pop(key), want.pop(key)
            assert got == want, name
        else:
            assert loaded.config == model.config, name
        assert _same_weights(model, loaded), name
        again = load_model(save_model(loaded, tmp_path / f"again_{name}", official=official))
        assert _same_weights(model, again)


def test_official_pth_is_a_basicsr_container(tmp_path) -> None:
    model = tiny_model("diffir_sr_x4_s2")
    save_model(model, tmp_path / "x.pth", official=True)
    obj = torch.load(tmp_path / "x.pth", weights_only=True)
    assert set(obj) == {"params", "params_ema"}
    assert list(obj["params"]) == list(to_official_state_dict(model))
    assert "diffusion.betas" in obj["params"] and "diffusion.model.resmlp.0.weight" in obj["params"]


def test_params_ema_preferred_and_module_prefix_stripped(tmp_path) -> None:
    a, b = tiny_model("diffir_deblur_s2", seed=1), tiny_model("diffir_deblur_s2", seed=2)
    sd = lambda m: {"module." + k: v for k, v in to_official_state_dict(m).items()}  # noqa: E731
    torch.save({"params": sd(a), "params_ema": sd(b)}, tmp_path / "c.pth")
    assert _same_weights(load_model(tmp_path / "c.pth"), b)
    torch.save({"params": sd(a)}, tmp_path / "only_params.pth")
    assert _same_weights(load_model(tmp_path / "only_params.pth"), a)
    assert _same_weights(load_model(tmp_path / "c.pth", key="params"), a)


class _LightningThing:  # stands in for OmegaConf objects pickled into Lightning checkpoints
    def __init__(self) -> None:
        self.value = 3


class _AttributeDict(dict):  # Lightning pickles `hyper_parameters` as this dict subclass (SETITEMS opcodes)
    pass


def test_lightning_inpainting_ckpt(tmp_path) -> None:
    student, teacher = tiny_model("diffir_inpaint_celeba_s2", seed=1), tiny_model("diffir_inpaint_celeba_s1", seed=2)
    state = {f"generator.{k}": v for k, v in to_official_state_dict(student).items()}
    state.update({f"generatorS1.{k}": v for k, v in teacher.state_dict().items()})
    state["discriminator.model0.0.weight"] = torch.zeros(2)
    state["val_evaluator.scores.ssim.weight"] = torch.zeros(2)
    hparams = _AttributeDict(cfg=_LightningThing(), kind="DiffIRS2")
    ckpt = {"state_dict": state, "hyper_parameters": hparams, "epoch": 3}
    torch.save(ckpt, tmp_path / "last.ckpt")
    loaded = load_model(tmp_path / "last.ckpt")
    assert loaded.config.task == "inpaint" and loaded.config.stage == 2
    assert _same_weights(loaded, student)
    assert _same_weights(load_model(tmp_path / "last.ckpt", key="generatorS1"), teacher)


def test_official_s2_dict_without_duplicates_or_buffers(tmp_path) -> None:
    """The official module rejects it under strict=True; we accept it and record what was assumed."""
    model = tiny_model("diffir_realsr_x2_s2")
    sd = {k: v for k, v in to_official_state_dict(model).items() if not k.startswith("diffusion.")}
    loaded = load_model(sd)
    assert _same_weights(loaded, model)
    assert set(loaded.config.meta["assumed"]) == {"timesteps", "linear_start", "linear_end"}


def test_inconsistent_official_extras_are_rejected() -> None:
    model = tiny_model("diffir_sr_x4_s2")
    sd = dict(to_official_state_dict(model))
    sd["diffusion.model.resmlp.0.bias"] = sd["denoise.resmlp.0.bias"] + 1
    with pytest.raises(CheckpointError, match="duplicate 'diffusion.model.resmlp.0.bias' differs"):
        load_model(sd)
    sd = dict(to_official_state_dict(model))
    sd["diffusion.posterior_mean_coef1"] = sd["diffusion.posterior_mean_coef1"] * 2
    with pytest.raises(CheckpointError, match="posterior_mean_coef1"):
        load_model(sd)


def test_error_messages_are_one_line(tmp_path) -> None:
    s1_x4 = to_official_state_dict(tiny_model("diffir_sr_x4_s1"))
    s1_x2 = to_official_state_dict(tiny_model("diffir_sr_x2_s1"))
    mixed = {**s1_x4, **{k: v for k, v in s1_x2.items() if k.startswith("E.")}}
    truncated = {k: v for k, v in s1_x4.items() if "latent" not in k or "ffn" not in k}
    (tmp_path / "text.pth").write_text("hello")
    (tmp_path / "empty.safetensors").write_bytes(b"")
    torch.save({"weights": {"conv.weight": torch.zeros(3)}}, tmp_path / "other.pth")
    cases = {
        "missing": (tmp_path / "nope.pth", "no such file or folder"),
        "text": (tmp_path / "text.pth", "not a PyTorch or safetensors checkpoint"),
        "empty": (tmp_path / "empty.safetensors", "damaged or truncated safetensors file"),
        "other": (tmp_path / "other.pth", "not the weights of a known architecture"),
        "mixed": (mixed, "takes 60 channels but a sr x4 DiffIR CPEN takes 51"),
        "truncated": (truncated, "missing key 'G.latent.0.ffn"),
    }
    for name, (src, message) in cases.items():
        with pytest.raises(CheckpointError) as info:
            load_model(src)
        text = str(info.value)
        assert message in text, (name, text)
        assert "\n" not in text, name


def test_cli_convert_and_info(tmp_path) -> None:
    model = tiny_model("diffir_sr_x2_s2")
    save_model(model, tmp_path / "official.pth", official=True)
    run = lambda *a: subprocess.run([sys.executable, "-m", "diffir", *a], capture_output=True, text=True)  # noqa: E731
    res = run("convert", str(tmp_path / "official.pth"), str(tmp_path / "m.safetensors"))
    assert res.returncode == 0, res.stderr
    assert _same_weights(load_model(tmp_path / "m.safetensors"), model)
    res = run("info", str(tmp_path / "m.safetensors"), "--size", "16")
    assert res.returncode == 0, res.stderr
    assert "scale                  2" in res.stdout and "MACs at 16x16" in res.stdout
    res = run("info", str(tmp_path / "missing.pth"))
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "no such file or folder" in res.stderr
    assert "Traceback" not in res.stderr


# DiffIR specs §3.3: unique parameter counts of the official configurations.
PARAMS = {
    "diffir_sr_x4": (24_801_478, 24_971_206),
    "diffir_sr_x2": (24_811_846, 24_981_574),
    "diffir_realsr_x4": (24_801_478, 24_971_206),
    "diffir_realsr_x2": (24_811_846, 24_981_574),
    "diffir_realsr_x1": (24_853_318, 25_023_046),
    "diffir_deblur": (26_742_206, 26_911_934),
    "diffir_inpaint_celeba": (26_232_746, 26_402_474),
    "diffir_inpaint_places": (26_232_746, 26_402_474),
    "diffir_inpaint_places_big": (49_313_194, 49_482_922),
    # HI-Diff specs §A.3-A.5: G + LE (S1); G + LE_DM + denoiser (S2)
    "hidiff_gopro": (25_298_923 + 585_688, 25_298_923 + 558_040 + 2_629_937),
    "hidiff_realblur_j": (22_281_943 + 1_533_912, 22_281_943 + 1_506_264 + 394_752),
    "hidiff_realblur_r": (22_281_943 + 1_533_912, 22_281_943 + 1_506_264 + 394_752),
}


def test_presets_parameter_counts() -> None:
    # DiffBIR presets: tests/test_diffbir_restore.py
    assert len([n for n in diffir.list_models() if not n.startswith("diffbir_")]) == 2 * len(PARAMS)
    with torch.device("meta"):  # no memory, no init cost
        for base, counts in PARAMS.items():
            for stage, expected in zip((1, 2), counts, strict=True):
                model = diffir.create_model(f"{base}_s{stage}")
                assert sum(p.numel() for p in model.parameters()) == expected, f"{base}_s{stage}"


def test_preset_errors_and_overrides() -> None:
    with pytest.raises(diffir.errors.ConfigError, match="did you mean 'diffir_sr_x4_s2'"):
        diffir.create_model("diffir_sr_x4_s3")
    with pytest.raises(diffir.errors.ConfigError, match="did you mean 'num_blocks'"):
        get_config("diffir_sr_x4_s2", num_block=(1, 1, 1, 1))
    assert get_config("diffir_deblur_s1", dim=16).dim == 16


def test_released_layout_sizes_match_key_list() -> None:
    """Every official key and shape of the 12 released configurations (specs key list) is reproduced."""
    path = require_shared("specs", "diffir_state_dict_keys.txt")
    sections: dict[str, list[tuple[str, tuple[int, ...]]]] = {}
    current = None
    for line in path.read_text().splitlines():
        if line.startswith("########## "):
            current = line.split()[1]
            sections[current] = []
        elif current and line and not line.startswith("#"):
            key, shape = line.split("\t")
            sections[current].append((key, tuple(int(x) for x in shape.strip("()").split(",") if x.strip())))
    presets = {"sr_x4": "diffir_sr_x4", "sr_x2": "diffir_realsr_x2", "sr_x1": "diffir_realsr_x1",
               "deblur": "diffir_deblur", "inp": "diffir_inpaint_celeba", "inpbig": "diffir_inpaint_places_big"}
    checked = 0
    for name, entries in sections.items():
        base, stage = name.rsplit("_", 1)
        if base not in presets:
            continue
        with torch.device("meta"):
            model = diffir.create_model(f"{presets[base]}_{stage.lower()}")
        sd = to_official_state_dict(model)
        assert [(k, tuple(v.shape)) for k, v in sd.items()] == entries, name
        checked += 1
    assert checked == len(sections) == 12


def test_read_checkpoint_restores_safetensors_duplicates() -> None:
    path = require_shared("parity", "diffir", "sr_x4_S2.safetensors")
    sd, meta = read_checkpoint(path)
    assert "diffusion.model.resmlp.0.weight" in sd
    assert meta["diffusion.model.resmlp.0.weight"] == "denoise.resmlp.0.weight"


# ------------------------------------------------------------------------------------ run folders, training states
def _fake_run(root, model):
    """A ``diffir train`` output folder with the real layout: model.safetensors + checkpoints/iter_*/ with
    params(_ema).safetensors and a tensors-only state.pt (iteration, optimizer, scalers, RNG)."""
    from diffir.train import checkpointing as ck

    opt = torch.optim.Adam(model.parameters())
    state = {"iteration": 50, "optimizers": {"g": opt.state_dict()}, "scalers": {}, "rng": ck.rng_state({})}
    ckpt = ck.save_checkpoint(root, 50, {"params": model, "params_ema": model}, state, keep=1)
    save_model(model, root / "model.safetensors")
    return ckpt


def test_a_run_folder_loads_its_model_and_a_training_state_is_named(tmp_path) -> None:
    model = tiny_model("diffir_sr_x4_s2")
    run = tmp_path / "runs" / "tiny_sr_x4_s2"
    ckpt = _fake_run(run, model)
    loaded = load_model(run)
    assert _same_weights(loaded, model)
    assert loaded.config.meta["source"] == str(run / "model.safetensors")
    assert _same_weights(load_model(ckpt), model)  # a checkpoint folder: params_ema.safetensors
    with pytest.raises(CheckpointError) as info:
        load_model(ckpt / "state.pt")
    text = str(info.value)
    assert "this is a training state" in text and str(ckpt / "params_ema.safetensors") in text and "\n" not in text
    # BasicSR's training_states/*.state: the same mistake, the same answer
    torch.save({"epoch": 3, "iter": 5000, "optimizers": [{"state": {}}], "schedulers": [{}]}, tmp_path / "5000.state")
    with pytest.raises(CheckpointError, match="training state.*params_ema.safetensors"):
        load_model(tmp_path / "5000.state")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"empty: folder without model weights \(looked for model.safetensors"):
        load_model(tmp_path / "empty")


def test_cli_info_and_convert_accept_a_run_folder(tmp_path, capsys) -> None:
    from diffir.cli import main

    model = tiny_model("diffir_sr_x2_s2")
    run = tmp_path / "run"
    ckpt = _fake_run(run, model)
    assert main(["info", str(run), "--no-macs"]) == 0
    assert f"({run / 'model.safetensors'})" in capsys.readouterr().out
    assert main(["convert", str(run), str(tmp_path / "m.pth")]) == 0
    assert _same_weights(load_model(tmp_path / "m.pth"), model)
    assert main(["info", str(ckpt / "state.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "training state" in err[0]
    assert main(["info", "diffir_sr_x4_smal"]) == 2
    assert "did you mean 'diffir_sr_x4_small'" in capsys.readouterr().err


def test_convert_half_stores_float16_and_loads_float32(tmp_path, capsys) -> None:
    from safetensors import safe_open

    from diffir.cli import main

    model = tiny_model("diffir_sr_x4_s2")
    full = diffir.save_model(model, tmp_path / "full.safetensors")
    assert main(["convert", str(full), str(tmp_path / "half.safetensors"), "--half"]) == 0
    with safe_open(str(tmp_path / "half.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}  # noqa: SIM118 - not a dict
        assert "float16" in f.metadata()["note"]
    assert (tmp_path / "half.safetensors").stat().st_size < 0.6 * full.stat().st_size
    back = diffir.load_model(tmp_path / "half.safetensors")
    for k, v in model.state_dict().items():
        w = back.state_dict()[k]
        assert w.dtype == torch.float32 and torch.allclose(w, v, rtol=1e-3, atol=1e-4), k
    sd = model.state_dict()
    next(v for v in sd.values() if v.is_floating_point()).fill_(1e6)  # beyond float16's 65504
    model.load_state_dict(sd)
    big = diffir.save_model(model, tmp_path / "big.safetensors")
    assert main(["convert", str(big), str(tmp_path / "big_half.safetensors"), "--half"]) == 2
    assert "beyond float16's range; save it without --half" in capsys.readouterr().err
    assert not (tmp_path / "big_half.safetensors").exists()


def test_convert_blend_interpolates_weights_and_refuses_unlike_models(tmp_path, capsys) -> None:
    """Network interpolation (how the bundled real-world model is made): every weight is (1-w)·input + w·other;
    models that differ in architecture configuration are refused before anything is written."""
    from diffir.cli import main

    a, b = tiny_model("diffir_sr_x4_s2", seed=0), tiny_model("diffir_sr_x4_s2", seed=1)
    fa, fb = diffir.save_model(a, tmp_path / "a.safetensors"), diffir.save_model(b, tmp_path / "b.safetensors")
    for weight in ("0", "0.25", "1"):
        out = tmp_path / f"blend_{weight}.safetensors"
        assert main(["convert", str(fa), str(out), "--blend", str(fb), "--blend-weight", weight]) == 0
        blended, w = diffir.load_model(out).state_dict(), float(weight)
        for k, v in a.state_dict().items():
            expected = (1 - w) * v + w * b.state_dict()[k] if v.is_floating_point() else v
            assert torch.allclose(blended[k], expected, atol=1e-7), (weight, k)
    assert not _same_weights(a, b)  # else the check above could not tell the weights apart
    capsys.readouterr()

    other = diffir.save_model(tiny_model("diffir_sr_x4_s2", timesteps=8), tmp_path / "t8.safetensors")
    cases = [
        (["--blend", str(other), "--blend-weight", "0.5"], "its configuration differs (timesteps 4 vs 8)"),
        (["--blend", str(fb), "--blend-weight", "1.5"], "blend weight 1.5 is outside [0, 1]"),
        (["--blend", str(fb)], "--blend MODEL and --blend-weight W go together"),
    ]
    for extra, message in cases:
        assert main(["convert", str(fa), str(tmp_path / "refused.safetensors"), *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
        assert not (tmp_path / "refused.safetensors").exists()
