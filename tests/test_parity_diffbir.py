"""Parity with the official DiffBIR code (../shared/parity/diffbir, README there): the whole pipeline.

The official files of each case (SD layout, ControlNet, SwinIR) are loaded through ``diffir.load_model`` with
configs inferred from the tensors; the full runs (``run.*``, README §4.4), the guided v2.0.0 run (``grun.*``,
§4.7) and the guidance updates that need the VAE (``guid.rgb_*``, ``guid.latent_*``, §4.6) go through
:meth:`DiffBIR.sample` and the sampler's guidance, the code ``diffir restore`` runs.  The group tests
(stage 1, networks, sampling, degradation) live in ``test_parity_diffbir_*.py``; the first test here asserts
that the groups together compare every reference tensor of every case.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

import diffir
import test_parity_diffbir_degradation as degradation
import test_parity_diffbir_ldm as ldm
import test_parity_diffbir_sampling as sampling
import test_parity_diffbir_stage1 as stage1
from diffbir_parity import case, case_names
from diffir.archs.diffbir.colorfix import wavelet_reconstruction
from diffir.archs.diffbir.guidance import guide_x0, make_guidance
from diffir.archs.diffbir.sampler_common import draw_noise
from diffir.archs.diffbir.sampler_spaced import spaced_schedule
from diffir.archs.diffbir.schedule import Diffusion
from diffir.archs.generation import GenerationOptions, GuidanceOptions

OWNED = ("run.", "grun.", "guid.rgb_", "guid.latent_")
GROUPS = (*stage1.OWNED, *ldm.OWNED, *sampling.OWNED, *degradation.OWNED, *OWNED)

_PIPELINES: dict[str, Any] = {}


def _pipeline(name: str) -> Any:
    """The case's official files through ``diffir.load_model``; the hints are what tensors do not store."""
    if name not in _PIPELINES:
        c = case(name)
        m = c.meta
        _PIPELINES[name] = diffir.load_model(
            [str(c.path("sd")), str(c.path("controlnet")), str(c.path("swinir"))],
            num_head_channels=m["unet"]["num_head_channels"], text_heads=m["clip_cfg_unused"]["text_cfg"]["heads"])
    return _PIPELINES[name]


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", case_names())
def test_groups_cover_every_reference(name: str) -> None:
    c = case(name)
    uncovered = [k for k in c.ref if k not in c.inputs and not k.startswith(GROUPS)]
    assert not uncovered, f"{name}: no parity test compares {uncovered}"


@pytest.mark.parametrize("name", case_names())
def test_files_load_with_inferred_configs(name: str) -> None:
    c = case(name)
    model = _pipeline(name)
    cfg = model.config
    assert cfg.cleaner == "swinir" and cfg.stage == 2
    assert cfg.unet["model_channels"] == c.meta["unet"]["model_channels"]
    assert cfg.unet["channel_mult"] == c.meta["unet"]["channel_mult"]
    assert cfg.vae["ch_mult"] == c.meta["vae"]["ddconfig"]["ch_mult"]
    assert cfg.cleaner_config["depths"] == c.meta["swinir"]["depths"]
    assert any("parameterization" in a for a in cfg.meta["assumed"])  # the tiny SD file has no schedule buffers
    sd = c.weights("controlnet")
    for k, v in sd.items():  # float8 parameters arrive exactly
        assert torch.equal(model.state_dict()["cldm.controlnet." + k], v), k


@pytest.mark.parametrize("name", case_names())
def test_full_runs(name: str) -> None:
    """run.*: Pipeline.apply_cldm for each run of the json, through DiffBIR.sample."""
    c = case(name)
    m = c.meta
    model = _pipeline(name)
    cond_img = c.input("in.run_cond_img")
    contexts = (c.input("in.run_c_txt"), c.input("in.run_c_txt_neg"))
    for run, cfg in m["runs"].items():
        model.diffusion = Diffusion.from_config(m[f"diffusion_{cfg['diffusion']}"])
        options = GenerationOptions(steps=cfg.get("steps", m["steps"]), sampler=cfg["sampler"],
                                    cfg_scale=cfg["cfg_scale"], rescale_cfg=cfg["rescale_cfg"],
                                    strength=cfg["strength"], noise_aug=cfg["noise_aug"],
                                    start_point=cfg["start_point_type"])
        trace: dict[str, Any] = {}
        with torch.no_grad():
            x_dec = model.sample(cond_img, options, _seeded(m["seeds"]["run"] + ord(run)), contexts=contexts,
                                 trace=trace)
        p = f"run.{run}."
        c.check("run.c_img", trace["c_img"])
        c.check(p + ("x_T" if cfg["start_point_type"] == "noise" else "start_noise"), trace["start_noise"])
        if cfg["noise_aug"]:
            c.check(p + "noise_aug_noise", trace["hint_noise"])
        c.check(p + "c_img_fed", trace["hint"])
        steps = trace["steps"]
        c.check(p + "step_noise", torch.stack([s.noise for s in steps]))
        c.check(p + "chain", torch.stack([trace["x_T"], *[s.x_prev for s in steps]]))
        c.check(p + "model_t", torch.tensor([s.model_t for s in steps]))
        c.check(p + "index", torch.tensor([s.index for s in steps]))
        c.check(p + "cfg_scale_per_step", torch.tensor([s.cfg_scale for s in steps], dtype=torch.float64))
        if p + "model_output" in c.ref:  # the spaced runs record these
            c.check(p + "model_output", torch.stack([s.model_output for s in steps]))
            c.check(p + "pred_x0", torch.stack([s.pred_x0 for s in steps]))
        c.check(p + "x_dec", x_dec)
        if p + "colorfix" in c.ref:
            c.check(p + "colorfix", wavelet_reconstruction((x_dec + 1) / 2, cond_img))
    c.assert_group_checked("run.")


@pytest.mark.parametrize("name", case_names())
def test_guidance_through_the_vae(name: str) -> None:
    """guid.rgb_* and guid.latent_*: one v2.0.0 apply_cond_fn with the case's decoder / encoder."""
    c = case(name)
    cfg, upd = c.meta["guidance"], c.meta["info"]["guid_update"]
    cldm = _pipeline(name).cldm
    target = 2 * c.input("in.guid_img") - 1
    _, buffers = spaced_schedule(Diffusion.from_config(c.meta["diffusion_eps"]).betas, int(cfg["steps"]))
    coef1 = buffers["posterior_mean_coef1"][upd["index"]]
    variants = {"rgb_w_mse": ("w_mse", "rgb", 1), "rgb_w_mse_r2": ("w_mse", "rgb", 2), "rgb_mse": ("mse", "rgb", 1),
                "latent_mse": ("mse", "latent", None)}
    for variant, (loss, space, repeat) in variants.items():
        p = f"guid.{variant}."
        if p + "x0" not in c.ref:
            continue
        repeat = repeat or c.ref[p + "loss"].numel()
        guidance = make_guidance(loss, cfg[f"{loss}_scale"], space=space, repeat=repeat)
        guidance.load_target(target)
        drawn: list[torch.Tensor] = []

        def encode(img: torch.Tensor, source: Any, drawn: list = drawn) -> torch.Tensor:
            drawn.append(draw_noise(cldm.vae.encode(img).mean.shape, source))
            return cldm.vae_encode(img, sample=True, generator=lambda shape: drawn[-1])

        out = guide_x0(guidance, c.input("in.guid_pred_x0"), upd["t"], coef1, decode=cldm.vae_decode, encode=encode,
                       noise_source=_seeded(c.meta["seeds"]["guid"]))
        assert out.applied
        c.check(p + "x0", out.x0)
        c.check(p + "loss", torch.tensor(out.losses, dtype=torch.float64))
        if p + "g" in c.ref:
            c.check(p + "g", out.grads[0] if space == "rgb" else torch.stack(out.grads))
        if p + "decoded" in c.ref:
            c.check(p + "decoded", out.compared[0])
        if p + "target_latent" in c.ref:
            c.check(p + "target_latent", torch.stack(out.compared))
            c.check(p + "encode_noise", torch.stack(drawn))
    for prefix in ("guid.rgb_", "guid.latent_"):
        c.assert_group_checked(prefix)


@pytest.mark.parametrize("name", case_names())
def test_guided_run(name: str) -> None:
    """grun.*: the v2.0.0 guided Pipeline.run_stage2 through DiffBIR.sample with restoration guidance."""
    c = case(name)
    cfg, m = c.meta["guidance"]["run"], c.meta
    model = _pipeline(name)
    model.diffusion = Diffusion.from_config(m["diffusion_eps"])
    guidance = GuidanceOptions(scale=cfg["scale"], loss=cfg["loss"], space=cfg.get("space", "rgb"),
                               start=cfg["t_start"], stop=cfg["t_stop"], repeat=cfg["repeat"])
    options = GenerationOptions(steps=m["guidance"]["steps"], sampler="spaced", cfg_scale=cfg["cfg_scale"],
                                strength=cfg["strength"], guidance=guidance)
    trace: dict[str, Any] = {}
    with torch.no_grad():
        sample = model.sample(c.input("in.run_cond_img"), options, _seeded(m["seeds"]["grun"]),
                              contexts=(c.input("in.run_c_txt"), c.input("in.run_c_txt_neg")), trace=trace)
    steps = trace["steps"]
    c.check("grun.x_T", trace["x_T"])
    c.check("grun.step_noise", torch.stack([s.noise for s in steps]))
    c.check("grun.chain", torch.stack([trace["x_T"], *[s.x_prev for s in steps]]))
    c.check("grun.t", torch.tensor([s.model_t for s in steps]))
    c.check("grun.index", torch.tensor([s.index for s in steps]))
    c.check("grun.x0_pre", torch.stack([s.pred_x0 for s in steps]))
    c.check("grun.x0_post", torch.stack([s.guided.x0 for s in steps]))
    c.check("grun.g_applied", torch.tensor([s.guided.applied for s in steps]))
    c.check("grun.loss", torch.tensor([loss for s in steps for loss in s.guided.losses], dtype=torch.float64))
    c.check("grun.sample", sample)
    c.assert_group_checked("grun.")
