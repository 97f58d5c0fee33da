"""Parity with the official HI-Diff code (../shared/parity/hidiff, README there).

Every ``<case>.json`` of the folder is a case (public and held-out cases share the format); every
hyper-parameter comes from its json, and every tensor that is not an input is compared within the json's
tolerances (``|a − b| ≤ atol + rtol·|ref|``, or exact).  Each group test (``s1``, ``sched``, ``s2e``, ``test``,
``s2t``, ``iso``) asserts that it compared every output of its group, and one test asserts that the groups
cover every output.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch
import torch.nn.functional as F

import diffir.diffusion.sampler as sampler_mod
from conftest import require_shared, shared_dir
from diffir.archs.hidiff.config import HIDiffConfig
from diffir.archs.hidiff.denoisers import by_index
from diffir.archs.hidiff.detect import UNSTORED, infer_config
from diffir.archs.hidiff.model import HIDiffS1, HIDiffS2, build_diffusion
from diffir.archs.hidiff.options import from_official, to_official
from diffir.archs.hidiff.presets import PRESETS
from diffir.diffusion.sampler import PriorDiffusion
from diffir.errors import ConfigError
from diffir.nn.padding import crop_to, pad_to_multiple

#: Every case is checked on the fast and on the reference formulation of the networks.
pytestmark = pytest.mark.usefixtures("network_path")

NETS = ("net_g", "net_le", "net_le_dm", "net_d")
GROUPS = ("s1.", "sched.", "s2e.", "test.", "s2t.", "iso.")


def _case_names() -> list[str]:
    folder = shared_dir() / "parity" / "hidiff"
    names = sorted(p.stem for p in folder.glob("*.json") if p.name != "released_layout.json")
    return names or ["<missing>"]


def _grad_norm(params: list[torch.nn.Parameter]) -> torch.Tensor:
    """clip_grad_norm_'s total: the L2 norm of the per-parameter L2 norms."""
    norms = [torch.linalg.vector_norm(p.grad) for p in params if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(norms))


class Case:
    def __init__(self, name: str) -> None:
        from safetensors.torch import load_file

        root = require_shared("parity", "hidiff")
        self.meta: dict[str, Any] = json.loads((root / f"{name}.json").read_text())
        self.ref = load_file(str(root / self.meta["files"]["tensors"]))
        self.nets = {n: load_file(str(root / self.meta["files"][n])) for n in NETS}
        m = self.meta
        self.config = from_official(m["network_g"], m["network_le"], m["network_le_dm"], m["network_d"],
                                                 m["diffusion_schedule"], stage=2)
        self.inputs = set(m["input_keys"])
        self.checked: set[str] = set()
        self.errors: dict[str, float] = {}

    # ------------------------------------------------------------------------------------------------ models
    def s1(self) -> HIDiffS1:
        model = HIDiffS1(self.config)
        model.G.load_state_dict(self.nets["net_g"], strict=True)
        model.le.load_state_dict(self.nets["net_le"], strict=True)
        return model.eval()

    def s2(self) -> HIDiffS2:
        model = HIDiffS2(self.config)
        sd = {f"{prefix}.{k}": v for prefix, net in (("G", "net_g"), ("le_dm", "net_le_dm"), ("denoise", "net_d"))
              for k, v in self.nets[net].items()}
        model.load_state_dict(sd, strict=True)  # the prefixes map 1:1 to the official files
        return model.eval()

    # ----------------------------------------------------------------------------------------- comparisons
    def tolerance(self, key: str) -> tuple[float, float] | None:
        """(atol, rtol) for ``key``, or None for an exact comparison (json ``tolerances``)."""
        found = [spec for patterns, spec in self.meta["tolerances"].items() if patterns not in ("note", "default")
                 and any(fnmatch.fnmatchcase(key, p.strip()) for p in patterns.split(","))]
        assert len(found) <= 1, f"{key}: several tolerance entries match"
        spec = found[0] if found else self.meta["tolerances"]["default"]
        return None if spec == "exact" else (spec["atol"], spec["rtol"])

    def check(self, key: str, value: torch.Tensor) -> None:
        ref = self.ref[key]
        value = value.detach()
        assert tuple(value.shape) == tuple(ref.shape), f"{key}: shape {tuple(value.shape)} != {tuple(ref.shape)}"
        err = (value.double() - ref.double()).abs().max().item() if ref.numel() else 0.0
        self.errors[key] = err
        tol = self.tolerance(key)
        if tol is None:
            assert value.dtype == ref.dtype and torch.equal(value, ref), f"{key}: not exact (max abs error {err:.3g})"
        else:
            atol, rtol = tol
            excess = ((value.double() - ref.double()).abs() - (atol + rtol * ref.double().abs())).max().item()
            assert excess <= 0, f"{key}: max abs error {err:.3g} exceeds atol {atol:g} + rtol {rtol:g}·|ref|"
        self.checked.add(key)

    def assert_group_checked(self, prefix: str) -> None:
        missing = sorted(k for k in self.ref if k.startswith(prefix) and k not in self.inputs and k not in self.checked)
        assert not missing, f"outputs of group {prefix!r} not compared: {missing}"


@pytest.fixture(scope="module", params=_case_names())
def case(request) -> Case:
    if request.param == "<missing>":
        require_shared("parity", "hidiff", "gopro.json")
    return Case(request.param)


@contextmanager
def recorded_draws() -> Iterator[list[torch.Tensor]]:
    """Every normal tensor the sampler draws, in order."""
    draws: list[torch.Tensor] = []
    real = sampler_mod._randn

    def record(batch: int, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        draws.append(real(batch, like, generator))
        return draws[-1]

    sampler_mod._randn = record
    try:
        yield draws
    finally:
        sampler_mod._randn = real


@contextmanager
def captured(modules: dict[str, torch.nn.Module], what: str = "output") -> Iterator[dict[str, list[torch.Tensor]]]:
    """Forward hooks: per name, the list of outputs (or of the positional inputs ``args[i]``: what="arg<i>")."""
    out: dict[str, list[torch.Tensor]] = {name: [] for name in modules}
    handles = []
    for name, module in modules.items():
        def hook(mod, args, output, name=name):
            value = output if what == "output" else args[int(what.removeprefix("arg"))]
            out[name].append(value.detach().clone())
        handles.append(module.register_forward_hook(hook))
    try:
        yield out
    finally:
        for h in handles:
            h.remove()


def _s1_module(model: HIDiffS1, key: str) -> torch.nn.Module:
    """The module whose output is the intermediate tensor ``s1.le.*`` / ``s1.g.*``."""
    le_names = {"conv1": "conv1", "res_blocks": "blocks", "pool": "pool", "mlp": "mlp"}
    g_names = {"prior_2": "down_1", "prior_3": "down_2", "patch_embed": "patch_embed"}
    part, name = key.split(".", 2)[1:]
    if part == "le":
        return model.le.get_submodule(le_names[name])
    layer, _, kind = name.partition(".")
    if kind == "him":
        return model.G.get_submodule(f"{layer}.him")
    if kind == "out":
        return model.G.get_submodule(layer)
    return model.G.get_submodule(g_names[name])


# ------------------------------------------------------------------------------------------------ stage 1
def test_stage1_forward_and_intermediates(case: Case) -> None:
    model = case.s1()
    ref = case.ref
    inner = [k for k in ref if re.match(r"s1\.(le|g)\.", k)]
    with torch.no_grad(), captured({k: _s1_module(model, k) for k in inner}) as seen:
        out, z = model(ref["in.lq"], ref["in.gt"], return_prior=True)
    for key in inner:
        assert len(seen[key]) == 1, f"{key}: module ran {len(seen[key])} times"
        value = seen[key][0]
        case.check(key, value.flatten(1) if key == "s1.g.prior_3" else value)
    case.check("s1.prior", z)
    case.check("s1.out", out)
    torch.testing.assert_close(model.prior(ref["in.lq"], ref["in.gt"]).detach(), z, rtol=0, atol=0)


def test_stage1_training_step(case: Case) -> None:
    model = case.s1().train()
    ref = case.ref
    out = model(ref["in.lq"], ref["in.gt"])
    loss = F.l1_loss(out, ref["in.gt"])
    loss.backward()
    case.check("s1.train.l_pix", loss)
    nets = {"net_le": list(model.le.parameters()), "net_g": list(model.G.parameters())}
    for name, params in nets.items():
        case.check(f"s1.train.grad_norm.{name}", _grad_norm(params))
    case.check("s1.train.grad_norm.total", _grad_norm(nets["net_le"] + nets["net_g"]))
    case.assert_group_checked("s1.")


# ------------------------------------------------------------------------------------------------ schedule
def test_schedule_buffers(case: Case) -> None:
    diffusion = case.s2().diffusion
    for key in [k for k in case.ref if k.startswith("sched.")]:
        case.check(key, getattr(diffusion, key.removeprefix("sched.")))
    case.assert_group_checked("sched.")


# ------------------------------------------------------------------------------------------------ stage 2
def _check_chain(case: Case, group: str, model: HIDiffS2, noise: torch.Tensor, states: list[torch.Tensor],
                 d_out: list[torch.Tensor]) -> None:
    """chain / d_out / x0_hat of one sampled chain; ``states`` = the T denoiser inputs and the final prior."""
    T = case.config.timesteps
    assert len(states) == T + 1 and len(d_out) == T
    case.check(f"{group}.chain", torch.stack(states))
    case.check(f"{group}.d_out", torch.stack(d_out))
    if f"{group}.x0_hat" in case.ref:
        tt = [torch.full((noise.shape[0],), T - 1 - k, dtype=torch.long) for k in range(T)]
        x0 = [model.diffusion.predict_x0(d_out[k], states[k], tt[k]) for k in range(T)]
        case.check(f"{group}.x0_hat", torch.stack(x0))


def test_stage2_seeded_sampling(case: Case) -> None:
    model = case.s2()
    lq = case.ref["in.lq"]
    hooks = {"cond": model.le_dm, "d_out": model.denoise}
    with captured(hooks) as seen, captured({"x": model.denoise}, "arg0") as x_in, \
            captured({"prior": model.G}, "arg1") as prior, recorded_draws() as draws:
        torch.manual_seed(case.meta["seeds"]["eval"])
        with torch.no_grad():
            out = model(lq)  # condition → sample_prior (generator=None: the default CPU generator) → restore
        probe = torch.randn(16)
    assert len(draws) == model.diffusion.draws_per_sample
    case.check("s2e.noise", draws[0])
    case.check("s2e.rng_probe", probe)
    case.check("s2e.cond", seen["cond"][0])
    _check_chain(case, "s2e", model, draws[0], x_in["x"] + prior["prior"], seen["d_out"])
    case.check("s2e.prior", prior["prior"][0])
    case.check("s2e.out", out)
    case.assert_group_checked("s2e.")


def test_padded_test_pipeline(case: Case) -> None:
    model = case.s2()
    lq = case.ref["in.lq_test"]
    h, w = lq.shape[-2:]
    padded = pad_to_multiple(lq, model.descriptor.size_multiple)
    assert torch.equal(padded, F.pad(lq, (0, padded.shape[-1] - w, 0, padded.shape[-2] - h), mode="reflect"))
    with captured({"cond": model.le_dm}) as seen, captured({"prior": model.G}, "arg1") as prior, \
            recorded_draws() as draws:
        torch.manual_seed(case.meta["seeds"]["test"])
        with torch.no_grad():
            out = crop_to(model(padded), h, w)
        probe = torch.randn(16)
    case.check("test.noise", draws[0])
    case.check("test.cond", seen["cond"][0])
    case.check("test.prior", prior["prior"][0])
    case.check("test.out", out)
    case.check("test.rng_probe", probe)
    case.assert_group_checked("test.")


def test_stage2_training_step(case: Case) -> None:
    ref = case.ref
    teacher = case.s1().le.requires_grad_(False)  # the frozen stage-1 latent encoder
    model = case.s2().train()
    with captured({"cond": model.le_dm, "d_out": model.denoise}) as seen, \
            captured({"x": model.denoise}, "arg0") as x_in, recorded_draws() as draws:
        torch.manual_seed(case.meta["seeds"]["train"])
        with torch.no_grad():
            z = teacher(torch.cat([ref["in.gt"], ref["in.lq"]], dim=1))
        out, priors = model(ref["in.lq"], z)  # noise drawn inside, as in the official training loop
        probe_after_forward = torch.randn(16)
    l_pix, l_pix_diff = F.l1_loss(out, ref["in.gt"]), F.l1_loss(z, priors[-1])
    (l_pix + l_pix_diff).backward()
    assert len(draws) == model.diffusion.draws_per_sample
    case.check("s2t.rng_probe", probe_after_forward)  # backward draws nothing
    case.check("s2t.prior_z", z)
    case.check("s2t.noise", draws[0])
    case.check("s2t.cond", seen["cond"][0])
    x_T = model.diffusion.start_state(z, draws[0])
    assert torch.equal(x_T, x_in["x"][0])
    _check_chain(case, "s2t", model, draws[0], [x_T, *[p.detach() for p in priors]], seen["d_out"])
    case.check("s2t.prior", priors[-1])
    case.check("s2t.out", out)
    case.check("s2t.l_pix", l_pix)
    case.check("s2t.l_pix_diff", l_pix_diff)
    nets = {"net_g": model.G, "net_le_dm": model.le_dm, "net_d": model.denoise}
    for name, net in nets.items():
        case.check(f"s2t.grad_norm.{name}", _grad_norm(list(net.parameters())))
    case.check("s2t.grad_norm.total", _grad_norm([p for net in nets.values() for p in net.parameters()]))
    for key in [k for k in ref if k.startswith("s2t.grad.")]:
        net, param = key.removeprefix("s2t.grad.").split(".", 1)
        case.check(key, nets[net].get_parameter(param).grad)
    case.assert_group_checked("s2t.")


# ---------------------------------------------------------------------------------------------- isolated
def test_isolated_submodules(case: Case) -> None:
    ref, model = case.ref, case.s2()
    G, net, T = model.G, model.denoise, case.config.timesteps
    x, c = ref["iso.d.x"], ref["iso.d.c"]
    with torch.no_grad():
        t_args = [net.time_argument(torch.full((x.shape[0],), t, dtype=torch.long), x) for t in range(T)]
        for t_arg in t_args:
            assert t_arg.dtype == torch.long and bool((t_arg == t_arg.flatten()[0]).all())
            assert t_arg.shape == (x.shape if case.config.denoiser == "denoising" else x.shape[:2])
        case.check("iso.d.t_arg", torch.stack([a.flatten()[0] for a in t_args]))
        case.check("iso.d.out", torch.stack([net(x, c, a) for a in t_args]))
        step = [model.diffusion.p_step(by_index(net), ref["iso.step.x_t"], t, c)[0] for t in range(T)]
        case.check("iso.step.out", torch.stack(step))
        for key in [k for k in ref if re.fullmatch(r"iso\.him\.\w+\.out", k)]:
            layer = key.split(".")[2]
            him = G.get_submodule(f"{layer}.him")
            case.check(key, him(ref[f"iso.him.{layer}.x"], ref[f"iso.him.{layer}.prior"]))
        _, prior_2, prior_3 = G.priors(ref["iso.prior"])
        case.check("iso.down.prior_2", prior_2)
        case.check("iso.down.prior_3", prior_3)
        block_out = G.latent.blocks[0](ref["iso.latent_block0.x"], ref["iso.latent_block0.prior"])
        case.check("iso.latent_block0.out", block_out)
        case.check("iso.g.out", G(ref["in.lq"][:1], ref["iso.prior"]))
    case.assert_group_checked("iso.")


def test_groups_cover_every_output(case: Case) -> None:
    outputs = [k for k in case.ref if k not in case.inputs]
    assert set(case.meta["tensors"]) == set(case.ref), "json and tensors file list different tensors"
    assert [k for k in outputs if not k.startswith(GROUPS)] == []


# ------------------------------------------------------------------------------------------ config / layout
def test_official_key_order_and_counts(case: Case) -> None:
    s1, s2 = case.s1(), case.s2()
    modules = {"net_g": s2.G, "net_le": s1.le, "net_le_dm": s2.le_dm, "net_d": s2.denoise}
    for name, module in modules.items():
        info = case.meta["state_dicts"][name]
        assert list(module.state_dict()) == info["keys_in_module_order"], name
        assert sum(p.numel() for p in module.parameters()) == info["n_params"], name
    assert not [k for k in s2.state_dict() if not k.startswith(("G.", "le_dm.", "denoise."))]


def test_official_kwargs_round_trip(case: Case) -> None:
    sections = to_official(case.config)
    for name, produced in sections.items():
        for key, value in case.meta[name].items():
            if (name, key) != ("network_d", "timesteps"):  # written only when not the default 5
                assert produced[key] == value, f"{name}.{key}"
    assert from_official(**sections, stage=2) == case.config
    assert HIDiffConfig.from_dict(json.loads(case.config.to_json())) == case.config


def _same_network(got: HIDiffConfig, want: HIDiffConfig) -> None:
    """Every field equal, truncated expansion factors up to the widths they produce."""
    factors = {"ffn_expansion_factor": [w for w in want.level_dims] + [2 * want.dim],
               "encoder_patch_expansion": [want.num_tokens], "encoder_channel_expansion": [want.encoder_width],
               "denoiser_patch_expansion": [want.num_tokens],
               "denoiser_channel_expansion": [want.denoiser_inner_channels]}
    for name in HIDiffConfig.field_names():
        a, b = getattr(got, name), getattr(want, name)
        if name in factors:
            assert [int(w * a) for w in factors[name]] == [int(w * b) for w in factors[name]], name
        else:
            assert a == b, f"{name}: inferred {a!r}, expected {b!r}"


def test_infer_config_recovers_parity_case(case: Case) -> None:
    unstored = {k: getattr(case.config, k) for k in UNSTORED}
    got = infer_config(case.nets, hints=unstored)
    _same_network(got, case.config)
    assert got.meta["assumed"] == []
    without_hints = infer_config(case.nets)
    assert set(without_hints.meta["assumed"]) == set(UNSTORED) - (
        {"denoiser_timesteps"} if case.config.denoiser == "denoising" else set())


def _released() -> list[tuple[str, dict[str, Any]]]:
    path = shared_dir() / "parity" / "hidiff" / "released_layout.json"
    if not path.exists():
        return [("<missing>", {})]
    data = json.loads(path.read_text())
    return [(k, v) for k, v in data.items() if isinstance(v, dict) and "networks" in v]


@pytest.mark.parametrize("name,layout", _released(), ids=[n for n, _ in _released()])
def test_released_layout_strict_loads_and_is_inferred(name: str, layout: dict[str, Any]) -> None:
    if name == "<missing>":
        require_shared("parity", "hidiff", "released_layout.json")
    nets = layout["networks"]
    kw = {n: nets[n]["kwargs"] for n in NETS}
    config = from_official(kw["net_g"], kw["net_le"], kw["net_le_dm"], kw["net_d"],
                                        layout["diffusion_schedule"], stage=2)
    with torch.device("meta"):
        s1, s2 = HIDiffS1(config), HIDiffS2(config)
    modules = {"net_g": s2.G, "net_le": s1.le, "net_le_dm": s2.le_dm, "net_d": s2.denoise}
    parts = {}
    for net, module in modules.items():
        listed = [(k, tuple(shape)) for k, shape in nets[net]["keys"]]
        assert [(k, tuple(v.shape)) for k, v in module.state_dict().items()] == listed, net
        assert len(listed) == nets[net]["n_keys"]
        assert sum(p.numel() for p in module.parameters()) == nets[net]["n_params"], net
        parts[net] = {k: torch.empty(shape, device="meta") for k, shape in listed}
        module.load_state_dict(parts[net], strict=True, assign=True)
    preset = f"hidiff_{name.lower()}_s2"
    if preset in PRESETS:
        assert PRESETS[preset][0] == config, f"preset {preset} differs from the released configuration"
    got = infer_config(parts)
    _same_network(got, config)
    unused = {"denoiser_timesteps"} if config.denoiser == "denoising" else set()
    assert set(got.meta["assumed"]) == set(UNSTORED) - unused


# --------------------------------------------------------------------------- behaviour without shared data
TINY = dict(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(1, 1, 2, 2), embed_dim=4, group=4,
            encoder_blocks=1, denoiser_inner_channels=8, timesteps=5)


@pytest.mark.parametrize("path,draws", [("eps", 1), ("ldm", 6)])
def test_sampling_draws_official_number_of_normals(path: str, draws: int) -> None:
    """GoPro draws x_T only; the LDM path also draws (and discards) one normal per reverse step."""
    config = HIDiffConfig(**TINY, diffusion_path=path,
                          denoiser="denoising" if path == "eps" else "simple_denoise")
    torch.manual_seed(0)
    model = HIDiffS2(config).eval()
    cond = model.condition_of(torch.rand(1, 3, 16, 16))
    torch.manual_seed(1)
    model.sample_prior(cond)
    probe = torch.randn(16)
    torch.manual_seed(1)
    for _ in range(draws):
        torch.randn(cond.shape)
    assert torch.equal(probe, torch.randn(16))
    assert model.diffusion.draws_per_sample == draws


def test_gopro_training_start_uses_alpha_bar_not_its_root() -> None:
    diffusion = build_diffusion(HIDiffConfig(**TINY, diffusion_path="eps"))
    z, eps = torch.randn(2, 16, 16), torch.randn(2, 16, 16)
    a = diffusion.alphas_cumprod[-1]
    assert torch.equal(diffusion.start_state(z, eps), a * z + (1 - a**2).sqrt() * eps)
    t = torch.full((2,), diffusion.timesteps - 1, dtype=torch.long)
    assert (diffusion.start_state(z, eps) - diffusion.q_sample(z, t, eps)).abs().max() > 1e-2


def test_eps_path_clamps_x0() -> None:
    diffusion = build_diffusion(HIDiffConfig(**TINY, diffusion_path="eps"))
    x = torch.randn(1, 16, 16)
    eps_hat = torch.zeros_like(x)  # x̂0 = x/√ᾱ_t: far outside [-1, 1] at the last step
    t = diffusion.timesteps - 1
    mean, x0 = diffusion.p_step(lambda *_: eps_hat, x, t, x)
    unclamped = diffusion.sqrt_recip_alphas_cumprod[t] * x
    assert unclamped.abs().max() > 2 and torch.equal(x0, unclamped.clamp(-1, 1))
    assert torch.equal(mean, diffusion.posterior_mean_coef1[t] * x0 + diffusion.posterior_mean_coef2[t] * x)
    ldm = PriorDiffusion(diffusion.timesteps, 0.1, 0.99, schedule="linear", prediction="eps")
    assert not torch.equal(ldm.p_step(lambda *_: eps_hat, x, t, x)[1], x0)


@pytest.mark.parametrize("changes,message", [
    (dict(group=2), "group must be even and >= 4"),
    (dict(embed_dim=6, heads=(1, 2, 4, 3)), "not divisible by 3 heads"),
    (dict(task="sr"), "task must be 'deblur'"),
])
def test_invalid_configs_give_one_line_errors(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        HIDiffConfig(**{**TINY, **changes})
    assert "\n" not in str(err.value)


def test_from_official_rejects_unknown_and_inconsistent_kwargs() -> None:
    sections = to_official(HIDiffConfig(**TINY))
    with pytest.raises(ConfigError, match="unknown kwarg 'dims'"):
        from_official(**{**sections, "network_g": {**sections["network_g"], "dims": 8}}, stage=2)
    with pytest.raises(ConfigError, match="embed_dim 8 differs from network_g's 4"):
        from_official(**{**sections, "network_le_dm": {**sections["network_le_dm"], "embed_dim": 8}},
                                   stage=2)
