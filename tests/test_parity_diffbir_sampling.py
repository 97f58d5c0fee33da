"""DiffBIR schedules, samplers, training loss, guidance maths, colour fix and tile helpers against the official
code (../shared/parity/diffbir, README §3(d)(e) and Misc, §4.3–4.7, §7.5–7.7), model-free: wherever a network
output enters, a stub model returns the recorded one.  Every setting (step counts, CFG, seeds, schedules) comes
from each case's json and tensor names.  DPM-Solver++ has no reference vectors; it is checked by convergence to
the exact probability-flow solution for Gaussian data.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pytest
import torch

from diffbir_parity import case, case_names
from diffir.archs.diffbir.colorfix import wavelet_reconstruction
from diffir.archs.diffbir.guidance import MSEGuidance, WeightedMSEGuidance, guide_x0, make_guidance, weight_map
from diffir.archs.diffbir.sampler_common import draw_noise, initial_latent, noise_augment
from diffir.archs.diffbir.sampler_ddim import DDIMSampler, ddim_schedule
from diffir.archs.diffbir.sampler_dpm import DPMSolverSampler
from diffir.archs.diffbir.sampler_spaced import SpacedSampler, spaced_schedule
from diffir.archs.diffbir.schedule import Diffusion
from diffir.archs.diffbir.tiles import gaussian_weights, sliding_windows
from diffir.errors import ConfigError

#: Reference groups this file compares completely.
OWNED = ("sched.", "spaced.", "ddim.", "step.", "train.", "misc.", "guid.W", "guid.w_mse.", "guid.mse.",
         "guid.spaced_timesteps", "guid.posterior_mean_coef1")

CASES = case_names()
KINDS = ("eps", "v")


def _diffusion(name: str, kind: str) -> Diffusion:
    return Diffusion.from_config(case(name).meta[f"diffusion_{kind}"])


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


class Replay:
    """A stub model: returns the recorded output for (condition tag, model timestep), and logs its calls."""

    def __init__(self, outputs: dict[str, dict[int, torch.Tensor]]) -> None:
        self.outputs = outputs
        self.calls: list[tuple[str, torch.Tensor]] = []

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
        self.calls.append((cond, t.clone()))
        return self.outputs[cond][int(t[0])].clone()


# ---------------------------------------------------------------------------------------------------- schedules


@pytest.mark.parametrize("name", CASES)
def test_schedules(name: str) -> None:
    """sched.* (β float64, the two float32 buffers), spaced.*.S{n}.* and ddim.*.S{n}.* for every n present."""
    c = case(name)
    for kind in KINDS:
        d = _diffusion(name, kind)
        c.check(f"sched.{kind}.betas", torch.from_numpy(d.betas))
        c.check(f"sched.{kind}.sqrt_alphas_cumprod", d.sqrt_alphas_cumprod)
        c.check(f"sched.{kind}.sqrt_one_minus_alphas_cumprod", d.sqrt_one_minus_alphas_cumprod)
        for family, build in (("spaced", spaced_schedule), ("ddim", ddim_schedule)):
            counts = {int(m.group(1)) for k in c.keys(f"{family}.{kind}.S")
                      if (m := re.match(rf"{family}\.{kind}\.S(\d+)\.", k))}
            assert counts, f"no {family}.{kind} schedules in {name}"
            for n in sorted(counts):
                timesteps, buffers = build(d.betas, n)
                prefix = f"{family}.{kind}.S{n}."
                c.check(prefix + "timesteps", torch.from_numpy(timesteps))
                for key in c.keys(prefix):
                    if key != prefix + "timesteps":
                        c.check(key, buffers[key.removeprefix(prefix)])
    for prefix in ("sched.", "spaced.", "ddim."):
        c.assert_group_checked(prefix)


@pytest.mark.parametrize("name", CASES)
def test_ddim_step_counts(name: str) -> None:
    """info.ddim_schedule_len_by_steps: the official step count per n, and a one-line ConfigError (naming working
    counts) where the official code raises IndexError."""
    c, d = case(name), _diffusion(name, "eps")
    for n, expected in c.meta["info"]["ddim_schedule_len_by_steps"].items():
        if isinstance(expected, int):
            assert len(ddim_schedule(d.betas, int(n))[0]) == expected, n
        else:
            assert "IndexError" in expected
            with pytest.raises(ConfigError, match=r"use \d+( or \d+)? steps") as err:
                ddim_schedule(d.betas, int(n))
            assert "\n" not in str(err.value)


# ---------------------------------------------------------------------------------------------------- single steps


@pytest.mark.parametrize("name", CASES)
def test_single_spaced_steps(name: str) -> None:
    """step.{eps,v}.{first,last}.*: one p_sample from in.x_t with the recorded cond/uncond outputs (README §4.3)."""
    c = case(name)
    steps, cfg = int(c.meta["steps"]), float(c.meta["step_cfg"])
    for kind in KINDS:
        sampler = SpacedSampler(_diffusion(name, kind))
        sampler.make_schedule(steps)
        for which, position in (("first", 0), ("last", steps - 1)):
            p = f"step.{kind}.{which}."
            t = sampler.timesteps[position]
            model = Replay({"cond": {t: c.ref[p + "model_cond"]}, "uncond": {t: c.ref[p + "model_uncond"]}})
            out = sampler.step(model, c.input("in.x_t"), position, "cond", "uncond", cfg,
                               _seeded(c.meta["seeds"]["step"] + position))
            assert [tag for tag, _ in model.calls] == ["cond", "uncond"]  # two calls, cond first (official)
            batch = c.ref[p + "x_prev"].shape[0]
            c.check(p + "model_t", model.calls[0][1])
            c.check(p + "index", torch.full((batch,), out.index, dtype=torch.long))
            for key in ("model_cond", "model_uncond"):  # recorded network outputs: what the stub returned
                c.check(p + key, c.ref[p + key])
            for key in ("model_output", "pred_x0", "mean", "variance", "noise", "x_prev"):
                c.check(p + key, getattr(out, key))
    c.assert_group_checked("step.")


# ---------------------------------------------------------------------------------------------------- training loss


@pytest.mark.parametrize("name", CASES)
def test_training_loss(name: str) -> None:
    """train.{eps,v}.*: one randn_like after seeds.train, and the mean-squared error against ε or v."""
    c = case(name)
    for kind in KINDS:
        p = f"train.{kind}."
        t = c.ref[p + "t"].clone()  # the timesteps given to p_losses (fixed by the reference instead of drawn)
        model = Replay({"cond": {int(t[0]): c.ref[p + "model_output"]}})
        x0 = c.input("in.train_x0")
        loss = _diffusion(name, kind).p_losses(model, x0, t, "cond", generator=_seeded(c.meta["seeds"]["train"]))
        c.check(p + "t", model.calls[0][1])
        c.check(p + "noise", draw_noise(x0.shape, _seeded(c.meta["seeds"]["train"])))
        c.check(p + "model_output", c.ref[p + "model_output"])  # the stub's output
        c.check(p + "loss", loss)
    c.assert_group_checked("train.")


# ---------------------------------------------------------------------------------------------------- misc


@pytest.mark.parametrize("name", CASES)
def test_tile_helpers(name: str) -> None:
    """misc.gaussian_weights_w{W}_h{H} and misc.sliding_windows_h{H}_w{W}_t{T}_s{S}, arguments from the names."""
    c = case(name)
    for key in c.keys("misc."):
        if m := re.fullmatch(r"misc\.gaussian_weights_w(\d+)_h(\d+)", key):
            c.check(key, torch.from_numpy(gaussian_weights(int(m.group(1)), int(m.group(2)))))
        elif m := re.fullmatch(r"misc\.sliding_windows_h(\d+)_w(\d+)_t(\d+)_s(\d+)", key):
            c.check(key, torch.tensor(sliding_windows(*(int(v) for v in m.groups()))))
    c.assert_group_checked("misc.")


# ---------------------------------------------------------------------------------------------------- guidance


@pytest.mark.parametrize("name", CASES)
def test_guidance_maths(name: str) -> None:
    """guid.W, guid.W_of_target, guid.{w_mse,mse}.{g,loss} (t = 500, ignored) and the v2.0.0 schedule."""
    c = case(name)
    img = c.input("in.guid_img")
    target = 2 * img - 1
    c.check("guid.W", weight_map(img))
    c.check("guid.W_of_target", weight_map((target + 1) / 2))
    cfg = c.meta["guidance"]
    for loss_name, cls in (("w_mse", WeightedMSEGuidance), ("mse", MSEGuidance)):
        g, loss = cls(cfg[f"{loss_name}_scale"])(target, c.input("in.guid_pred_rgb"), 500)
        c.check(f"guid.{loss_name}.g", g)
        c.check(f"guid.{loss_name}.loss", loss)
    timesteps, buffers = spaced_schedule(_diffusion(name, "eps").betas, int(cfg["steps"]))
    c.check("guid.spaced_timesteps", torch.from_numpy(timesteps))
    c.check("guid.posterior_mean_coef1", buffers["posterior_mean_coef1"])
    for prefix in ("guid.W", "guid.w_mse.", "guid.mse.", "guid.spaced_timesteps", "guid.posterior_mean_coef1"):
        c.assert_group_checked(prefix)


@pytest.mark.parametrize("name", CASES)
def test_guidance_updates_model_free(name: str) -> None:
    """The parts of guid.rgb_* / guid.latent_* that need no network: the image-space g and loss of the rgb
    variants from the recorded D(x̂0), and the whole latent-MSE update with an encoder stub returning the recorded
    posterior sample (its draw checked against seeds.guid).  Also: the window and the latent w_mse error."""
    c = case(name)
    cfg, upd = c.meta["guidance"], c.meta["info"]["guid_update"]
    target = 2 * c.input("in.guid_img") - 1
    decoded = c.ref["guid.rgb_w_mse.decoded"]
    scales = {"w_mse": cfg["w_mse_scale"], "mse": cfg["mse_scale"]}
    for variant in ("rgb_w_mse", "rgb_mse"):  # both decode the same x̂0 (README §3(e)); one call each
        loss_name = variant.removeprefix("rgb_")
        g, loss = make_guidance(loss_name, scales[loss_name], space="rgb")(target, decoded)
        c.check(f"guid.{variant}.g", g)
        c.check(f"guid.{variant}.loss", loss)
    if "guid.rgb_w_mse_r2.loss" in c.ref:  # repeat 2 starts from the same x̂0: its first loss is the same
        assert float(c.ref["guid.rgb_w_mse_r2.loss"][0]) == pytest.approx(float(c.ref["guid.rgb_w_mse.loss"][0]))

    p = "guid.latent_mse."
    if p + "x0" in c.ref:
        guidance = make_guidance("mse", scales["mse"], space="latent", repeat=c.ref[p + "loss"].numel())
        guidance.load_target(target)
        recorded = list(c.ref[p + "target_latent"])
        drawn: list[torch.Tensor] = []

        def encode(img: torch.Tensor, source: Any) -> torch.Tensor:
            drawn.append(draw_noise(recorded[0].shape, source))  # the posterior sample's one draw
            return recorded[len(drawn) - 1].clone()

        _, buffers = spaced_schedule(_diffusion(name, "eps").betas, int(cfg["steps"]))
        out = guide_x0(guidance, c.input("in.guid_pred_x0"), upd["t"], buffers["posterior_mean_coef1"][upd["index"]],
                       encode=encode, noise_source=_seeded(c.meta["seeds"]["guid"]))
        assert out.applied
        c.check(p + "encode_noise", torch.stack(drawn))
        c.check(p + "g", torch.stack(out.grads))
        c.check(p + "loss", torch.tensor(out.losses, dtype=torch.float64))
        c.check(p + "x0", out.x0)

    # Outside (t_stop, t_start) the input comes back unchanged (info.guid_outside_window_returns_input).
    outside = make_guidance("mse", 1.0, t_start=upd["t"] + 1, space="latent")
    outside.load_target(target)
    x0 = c.input("in.guid_pred_x0")
    res = guide_x0(outside, x0, upd["t"], 1.0, encode=lambda *_: pytest.fail("guided outside its window"))
    assert c.meta["info"]["guid_outside_window_returns_input"] and not res.applied and res.x0 is x0
    with pytest.raises(ConfigError, match="rgb") as err:  # official: a 4-vs-3 channel RuntimeError
        make_guidance("w_mse", 0.5, space="latent")
    assert "RuntimeError" in c.meta["info"]["guid_latent_w_mse"] and "\n" not in str(err.value)


# ---------------------------------------------------------------------------------------------------- full runs


def _run_setup(name: str, run: str) -> tuple[Diffusion, dict[str, Any], torch.Generator, torch.Tensor, torch.Tensor]:
    """Draws 1 and 2 of a run (start point, noise augmentation) from seeds.run + ord(run), checked exactly."""
    c = case(name)
    cfg = c.meta["runs"][run]
    d = _diffusion(name, cfg["diffusion"])
    g = _seeded(c.meta["seeds"]["run"] + ord(run))
    p = f"run.{run}."
    x_T, start = initial_latent(d, c.ref["run.c_img"], cfg["start_point_type"], g)
    c.check(p + ("x_T" if cfg["start_point_type"] == "noise" else "start_noise"), start)
    torch.testing.assert_close(x_T, c.ref[p + "chain"][0], atol=1e-6, rtol=1e-6)
    hint, aug = noise_augment(d, c.ref["run.c_img"], int(cfg["noise_aug"]), g)
    assert (aug is None) == (p + "noise_aug_noise" not in c.ref)
    if aug is not None:
        c.check(p + "noise_aug_noise", aug)
    c.check(p + "c_img_fed", hint)
    return d, cfg, g, x_T, hint


@pytest.mark.parametrize("name", CASES)
def test_runs_replayed_model_free(name: str) -> None:
    """run.*: every spaced run replayed with a stub returning the recorded CFG-combined output for cond and
    uncond alike (so CFG gives back exactly it): chain, pred_x0, step draws, model_t, index, CFG scale per step.
    DDIM runs (no recorded outputs): the start point, draws, timesteps, indices and CFG scales.  The colour fix
    from the recorded decoded sample.  The networks' test covers the rest (x_dec, DDIM chains)."""
    c = case(name)
    for run, cfg in c.meta["runs"].items():
        p = f"run.{run}."
        d, cfg, g, x_T, _ = _run_setup(name, run)
        if p + "colorfix" in c.ref:
            c.check(p + "colorfix", wavelet_reconstruction((c.ref[p + "x_dec"] + 1) / 2, c.input("in.run_cond_img")))
        steps = int(cfg.get("steps", c.meta["steps"]))
        info = c.meta["info"]["runs"][run]
        rec: dict[str, list[Any]] = {k: [] for k in ("x", "pred_x0", "noise", "model_t", "index", "cfg")}
        sampler: SpacedSampler | DDIMSampler
        if cfg["sampler"] == "spaced":
            sampler = SpacedSampler(d, rescale_cfg=bool(cfg["rescale_cfg"]))
            outputs = dict(zip(info["model_t"], c.ref[p + "model_output"], strict=True))
            model: Any = Replay({"cond": outputs, "uncond": outputs})
        elif cfg["sampler"] == "ddim":
            sampler = DDIMSampler(d, rescale_cfg=bool(cfg["rescale_cfg"]), batch_cfg=False)
            model = _ddim_zero_model
        else:  # no per-step record to replay (DPM-Solver++ draws nothing after the start point)
            continue

        def log(step: Any, rec: dict[str, list[Any]] = rec) -> None:
            for key, value in (("x", step.x_prev), ("pred_x0", step.pred_x0), ("noise", step.noise),
                               ("model_t", step.model_t), ("index", step.index), ("cfg", step.cfg_scale)):
                rec[key].append(value)

        sampler.sample(model, x_T, steps, "cond", "uncond", float(cfg["cfg_scale"]), g, callback=log)
        assert rec["model_t"] == info["model_t"] and rec["index"] == info["index"]
        c.check(p + "model_t", torch.tensor(rec["model_t"]))
        c.check(p + "index", torch.tensor(rec["index"]))
        c.check(p + "cfg_scale_per_step", torch.tensor(rec["cfg"], dtype=torch.float64))
        assert rec["cfg"] == pytest.approx(info["cfg_per_step"], rel=1e-12)
        c.check(p + "step_noise", torch.stack(rec["noise"]))
        if cfg["sampler"] == "spaced":
            c.check(p + "chain", torch.stack([x_T, *rec["x"]]))
            c.check(p + "pred_x0", torch.stack(rec["pred_x0"]))
            c.check(p + "model_output", c.ref[p + "model_output"])  # the stub's outputs, returned through CFG


@pytest.mark.parametrize("name", CASES)
def test_recorded_draws_can_be_injected(name: str) -> None:
    """A callable noise source fed the recorded draws (x_T, noise augmentation, step draws) gives the same
    spaced chains as the seeded generator."""
    c = case(name)
    for run, cfg in c.meta["runs"].items():
        if cfg["sampler"] != "spaced":
            continue
        p = f"run.{run}."
        draws = [c.ref[p + "x_T"], *([c.ref[p + "noise_aug_noise"]] if p + "noise_aug_noise" in c.ref else []),
                 *c.ref[p + "step_noise"]]
        source = Recorded(draws)
        d = _diffusion(name, cfg["diffusion"])
        x_T, _ = initial_latent(d, c.ref["run.c_img"], cfg["start_point_type"], source)
        noise_augment(d, c.ref["run.c_img"], int(cfg["noise_aug"]), source)
        outputs = dict(zip(c.meta["info"]["runs"][run]["model_t"], c.ref[p + "model_output"], strict=True))
        seen: list[Any] = []
        SpacedSampler(d, rescale_cfg=bool(cfg["rescale_cfg"])).sample(
            Replay({"cond": outputs, "uncond": outputs}), x_T, int(cfg.get("steps", c.meta["steps"])), "cond",
            "uncond", float(cfg["cfg_scale"]), source, callback=seen.append)
        assert not source.draws, "recorded draws left over"
        chain = [x_T, *(st.x_prev for st in seen)]
        torch.testing.assert_close(torch.stack(chain), c.ref[p + "chain"], atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("name", CASES)
def test_guided_run_replayed_model_free(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """grun.* without the networks: an eps stub reproducing the recorded x̂0 before guidance and the recorded
    guided x̂0 in place of the decoder round trip.  Checks the draws (x_T, step noise after seeds.grun), the
    model timesteps and indices, the (t_stop, t_start) window, that the posterior mean takes the guided x̂0 with
    the unguided x_t, and the chain."""
    import diffir.archs.diffbir.sampler_spaced as spaced_mod
    from diffir.archs.diffbir.guidance import GuidedX0

    c = case(name)
    cfg, info = c.meta["guidance"]["run"], c.meta["info"]["guided_run"]
    d = _diffusion(name, "eps")
    space = cfg.get("space", "rgb")
    sampler = SpacedSampler(d, guidance=make_guidance(cfg["loss"], cfg["scale"], cfg["t_start"], cfg["t_stop"],
                                                      space, cfg["repeat"]))
    sampler.guidance.load_target(torch.zeros(1))
    steps = len(info["t"])
    sampler.make_schedule(steps)
    pre, post = c.ref["grun.x0_pre"], c.ref["grun.x0_post"]
    by_t = {t: i for i, t in enumerate(sampler.timesteps)}

    def model(x: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
        i = by_t[int(t[0])]
        index = steps - 1 - i
        b = sampler.buffers
        return (b["sqrt_recip_alphas_cumprod"][index] * x - pre[i]) / b["sqrt_recipm1_alphas_cumprod"][index]

    def recorded_guidance(guidance: Any, x0: torch.Tensor, model_t: int, *args: Any) -> GuidedX0:
        i = by_t[model_t]
        torch.testing.assert_close(x0, pre[i], atol=1e-3, rtol=1e-4)
        applied = guidance.active(model_t)
        if applied and guidance.space == "latent":  # keep the draw order: one encoder sample per repeat
            for _ in range(guidance.repeat):
                draw_noise(x0.shape, args[-1])
        return GuidedX0(post[i].clone(), applied)

    monkeypatch.setattr(spaced_mod, "guide_x0", recorded_guidance)
    g = _seeded(c.meta["seeds"]["grun"])
    x_T = draw_noise(c.ref["grun.x_T"].shape, g)
    c.check("grun.x_T", x_T)
    rec: list[Any] = []
    sampler.sample(model, x_T, steps, "cond", "uncond", float(cfg["cfg_scale"]), g, callback=rec.append)
    assert [st.model_t for st in rec] == info["t"] and [st.index for st in rec] == info["index"]
    assert [st.guided.applied for st in rec] == info["guidance_applied"]
    c.check("grun.t", torch.tensor([st.model_t for st in rec]))
    c.check("grun.index", torch.tensor([st.index for st in rec]))
    c.check("grun.g_applied", torch.tensor([st.guided.applied for st in rec]))
    c.check("grun.step_noise", torch.stack([st.noise for st in rec]))
    c.check("grun.chain", torch.stack([x_T, *[st.x_prev for st in rec]]))


class Recorded:
    """A callable noise source handing out recorded draws in order."""

    def __init__(self, draws: list[torch.Tensor]) -> None:
        self.draws = list(draws)

    def __call__(self, shape: tuple[int, ...]) -> torch.Tensor:
        return self.draws.pop(0).clone()


def _ddim_zero_model(x: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
    return torch.zeros_like(x)


# ---------------------------------------------------------------------------------------------------- behaviour


def test_ddim_batched_cfg_matches_two_calls() -> None:
    """The optional unbatched CFG of DDIM gives what the official batched [cond; uncond] call gives."""
    d = Diffusion(parameterization="v", zero_snr=True)
    x = torch.randn(2, 4, 6, 5, generator=_seeded(0))
    conds = {"cond": {"c": torch.randn(2, 3, generator=_seeded(1))}, "uncond": {"c": torch.randn(2, 3,
                                                                                                 generator=_seeded(2))}}

    def model(xx: torch.Tensor, t: torch.Tensor, cond: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.tanh(xx * (1 + t.view(-1, 1, 1, 1) / 1000) + cond["c"].sum(1).view(-1, 1, 1, 1))

    outs = []
    for batch in (True, False):
        s = DDIMSampler(d, rescale_cfg=True, batch_cfg=batch)
        outs.append(s.sample(model, x, 5, conds["cond"], conds["uncond"], 4.0, _seeded(3)))
    torch.testing.assert_close(outs[0], outs[1], atol=1e-6, rtol=1e-6)


def test_eps_model_on_zero_snr_schedule_is_refused() -> None:
    with pytest.raises(ConfigError, match="zero-terminal-SNR"):
        SpacedSampler(Diffusion(parameterization="eps", zero_snr=True)).make_schedule(4)


def test_cfg_skipped_without_uncond_or_at_scale_one() -> None:
    d = Diffusion()
    for uncond, scale in ((None, 4.0), ("uncond", 1.0)):
        model = Replay({"cond": dict.fromkeys((0, 500, 999), torch.zeros(1, 4, 2, 2))})
        SpacedSampler(d).sample(model, torch.zeros(1, 4, 2, 2), 3, "cond", uncond, scale, _seeded(0))
        assert [tag for tag, _ in model.calls] == ["cond"] * 3


class GaussianData:
    """Exact denoiser for data x0 ~ N(μ, s²) elementwise on a VP schedule with ᾱ(τ) given at model time τ:
    E[x0 | x_τ] is affine in x_τ, and the probability-flow ODE maps the marginal at one time onto another by the
    monotone affine map between the two Gaussians."""

    def __init__(self, mu: float, s: float, log_alpha: Any, parameterization: str) -> None:
        self.mu, self.s, self.log_alpha, self.param = mu, s, log_alpha, parameterization

    def coefs(self, tau: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = torch.exp(self.log_alpha(tau.double()))
        return a, torch.sqrt(1 - a * a)

    def __call__(self, x: torch.Tensor, tau: torch.Tensor, cond: Any) -> torch.Tensor:
        a, sig = (v.view(-1, 1, 1, 1) for v in self.coefs(tau))
        xd = x.double()
        x0 = self.mu + a * self.s**2 / (a * a * self.s**2 + sig * sig) * (xd - a * self.mu)
        eps = (xd - a * x0) / sig
        return (eps if self.param == "eps" else a * eps - sig * x0).float()

    def transport(self, x: torch.Tensor, a_from: float, a_to: float) -> torch.Tensor:
        def std(a: float) -> float:
            return math.sqrt(a * a * self.s**2 + 1 - a * a)

        return a_to * self.mu + std(a_to) / std(a_from) * (x.double() - a_from * self.mu)


def _dpm_errors(diffusion: Diffusion, x_T: torch.Tensor, order: int, steps: int) -> tuple[float, float]:
    """(max |x − exact|, |mean(x) − mean(exact)|) of DPM-Solver++ with the exact denoiser for N(0.5, 1) data,
    solved on the solver's own interpolated schedule from t = 1 to t = 1/N."""
    sampler = DPMSolverSampler(diffusion, order=order)
    sched = sampler.schedule

    def log_alpha(tau: torch.Tensor) -> torch.Tensor:  # the model sees τ = (t − 1/N)·1000
        return sched.log_alpha(tau.float() / 1000.0 + 1.0 / sched.total_n).double()

    data = GaussianData(0.5, 1.0, log_alpha, diffusion.parameterization)
    out = sampler.sample(data, x_T, steps, "cond", None, 1.0).double()
    a_T, a_0 = (float(sched.alpha(torch.tensor(t))) for t in (1.0, 1.0 / sched.total_n))
    exact = data.transport(x_T, a_T, a_0)
    return float((out - exact).abs().max()), abs(float(out.mean() - exact.mean()))


@pytest.mark.parametrize("zero_snr", [False, True])
def test_dpm_solver_converges_to_the_exact_ode_solution(zero_snr: bool) -> None:
    """DPM-Solver++(2M) with an exact Gaussian denoiser (no official vectors exist for this sampler): the mean
    lands on the exact one at 20 and 50 steps, order 2 beats order 1 from 50 steps on, and the error to the
    exact ODE solution falls at second order (first order for order 1)."""
    d = Diffusion(parameterization="v" if zero_snr else "eps", zero_snr=zero_snr)
    x_T = torch.randn(1, 4, 32, 32, generator=_seeded(5))
    err = {(o, n): _dpm_errors(d, x_T, o, n) for o in (1, 2) for n in (20, 50, 200, 1000)}
    for o in (1, 2):
        for n in (20, 50):
            assert err[o, n][1] < 5e-3, err
    for n in (50, 200, 1000):
        assert err[2, n][0] < err[1, n][0] / 1.8, err
    assert err[2, 200][0] / err[2, 1000][0] > 15, err  # 5× fewer steps: 25× the error at second order
    assert 3 < err[1, 200][0] / err[1, 1000][0] < 8, err
    assert err[2, 1000][0] < 1e-3, err


def test_dpm_solver_cfg_batched_matches_two_calls() -> None:
    d = Diffusion(parameterization="v", zero_snr=True)
    x = torch.randn(2, 4, 4, 4, generator=_seeded(6))
    conds = (torch.ones(2), -torch.ones(2))

    def model(xx: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return torch.tanh(xx * 0.5 + c.view(-1, 1, 1, 1) * t.view(-1, 1, 1, 1) / 1000)

    outs = [DPMSolverSampler(d, rescale_cfg=True, batch_cfg=b).sample(model, x, 6, *conds, 3.0) for b in (True, False)]
    torch.testing.assert_close(outs[0], outs[1], atol=1e-6, rtol=1e-6)


def test_spaced_sampler_reaches_the_data_distribution() -> None:
    """Ancestral sampling with the exact denoiser of N(0.5, 1) data: right mean; the variance the plug-in
    posterior mean loses shrinks with the step count."""
    d = Diffusion()
    ac = torch.from_numpy(np.cumprod(1.0 - d.betas))
    data = GaussianData(0.5, 1.0, lambda tau: 0.5 * torch.log(ac[tau.round().long()]), "eps")
    x_T = torch.randn(4, 4, 32, 32, generator=_seeded(7))
    stats = {n: SpacedSampler(d).sample(data, x_T, n, "cond", None, 1.0, _seeded(8)).double() for n in (50, 1000)}
    for out in stats.values():
        assert abs(float(out.mean()) - 0.5) < 0.02
    assert abs(float(stats[1000].std()) - 1.0) < 0.01 < abs(float(stats[50].std()) - 1.0)


def test_ddim_follows_the_exact_ode_solution() -> None:
    """DDIM (η = 0) with the exact denoiser: first-order convergence to the exact flow from its first timestep
    to ᾱ_0."""
    d = Diffusion()
    ac = torch.from_numpy(np.cumprod(1.0 - d.betas))
    data = GaussianData(0.5, 1.0, lambda tau: 0.5 * torch.log(ac[tau.round().long()]), "eps")
    x_T = torch.randn(1, 4, 32, 32, generator=_seeded(9))
    errors = []
    for n in (50, 200):
        sampler = DDIMSampler(d)
        out = sampler.sample(data, x_T, n, "cond", None, 1.0, _seeded(8))
        exact = data.transport(x_T, math.sqrt(float(ac[sampler.timesteps[0]])), math.sqrt(float(ac[0])))
        errors.append(float((out.double() - exact).abs().max()))
    assert errors[1] < errors[0] / 3 and errors[1] < 0.03, errors


def _toy_decoder() -> Any:
    """A differentiable stand-in for the VAE decoder: a fixed 1×1 conv from 4 to 3 channels, then ×8 upsampling."""
    weight = torch.randn(3, 4, 1, 1, generator=_seeded(11)) * 0.5

    def decode(z: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(torch.nn.functional.conv2d(z, weight), scale_factor=8.0)

    return decode


def test_rgb_guidance_backpropagates_through_the_decoder() -> None:
    """rgb space: each repeat adds Jᵀg / posterior_mean_coef1 at the current x̂0 (g taken on D(x̂0))."""
    decode = _toy_decoder()
    target = torch.rand(1, 3, 16, 24, generator=_seeded(12)) * 2 - 1
    x0 = torch.randn(1, 4, 2, 3, generator=_seeded(13))
    guidance = make_guidance("w_mse", 0.3, space="rgb", repeat=2)
    guidance.load_target(target)
    out = guide_x0(guidance, x0, 333, 0.8, decode=decode)
    expected = x0
    for _ in range(2):
        pred = decode(expected.detach().requires_grad_(True))
        g = -guidance.scale * torch.autograd.grad(_wmse(target, pred), pred)[0]
        _, vjp = torch.autograd.functional.vjp(decode, expected, g)
        expected = expected + vjp / 0.8
    assert out.applied and len(out.losses) == 2
    torch.testing.assert_close(out.x0, expected, atol=1e-5, rtol=1e-5)


def _wmse(target: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    return ((pred - target).pow(2) * weight_map((target + 1) / 2)).mean((1, 2, 3)).sum()


@pytest.mark.parametrize("kind", KINDS)
def test_spaced_sampler_with_guidance_pulls_towards_the_target(kind: str) -> None:
    """Guidance is a working option of the spaced sampler for eps and v models alike (v2.0.0 was eps-only)."""
    d = Diffusion(parameterization=kind, zero_snr=kind == "v")
    decode = _toy_decoder()
    target = decode(torch.randn(1, 4, 2, 3, generator=_seeded(14)))
    x_T = torch.randn(1, 4, 2, 3, generator=_seeded(15))

    def model(x: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
        return torch.zeros_like(x)

    results = []
    for scale in (0.0, 0.001):
        # Not at the noisiest step: 1/posterior_mean_coef1 is large there (official rescale) and would overshoot.
        guidance = make_guidance("mse", scale, t_start=700, t_stop=-1, space="rgb")
        guidance.load_target(target)
        sampler = SpacedSampler(d, guidance=guidance, decode=decode)
        z = sampler.sample(model, x_T, 10, "cond", None, 1.0, _seeded(16))
        results.append(float((decode(z) - target).pow(2).mean()))
    assert results[1] < results[0] / 2, results
