"""DiffBIR stage 2 against the official code (../shared/parity/diffbir, README §3(b)(c), §7.3-7.4): the SD VAE, the
SD 2.1 UNet with control injection and the IRControlNet, loaded from the SD-layout and ControlNet files with
every hyper-parameter read off the tensors; plus the released full-size layouts and the loading errors."""

from __future__ import annotations

import functools

import pytest
import torch

from diffbir_parity import case, case_names
from diffir.archs.diffbir.ldm import (
    TEXT_PREFIX,
    UNET_PREFIX,
    VAE_PREFIX,
    ControlLDM,
    infer_controlnet_config,
    infer_unet_config,
    infer_vae_config,
)
from diffir.archs.diffbir.sampler_common import draw_noise
from diffir.archs.diffbir.unet import SD21_CONTROLNET, SD21_UNET, ControlNet, UNet, UNetConfig
from diffir.archs.diffbir.unet_blocks import timestep_embedding
from diffir.archs.diffbir.vae import SD_VAE, AutoencoderKL, VAEConfig
from diffir.errors import CheckpointError
from diffir.io.checkpoint import read_checkpoint


def _read(path) -> dict[str, torch.Tensor]:
    """A weights file as the loader reads it (container unwrapped, no pickled code executed)."""
    return read_checkpoint(path)[0]

#: Reference groups this file compares completely.
OWNED = ("vae.", "cldm.")

CASES = case_names()


def _configs(name: str) -> tuple[UNetConfig, UNetConfig, VAEConfig]:
    meta = case(name).meta
    vae = meta["vae"]
    return (UNetConfig.from_ldm(meta["unet"]), UNetConfig.from_ldm(meta["controlnet_cfg"]),
            VAEConfig.from_ldm(vae["ddconfig"], vae["embed_dim"]))


@functools.cache
def _loaded(name: str) -> ControlLDM:
    c = case(name)
    model, _ = ControlLDM.from_state_dicts(c.weights("sd"), c.weights("controlnet"),
                                           num_head_channels=c.meta["unet"]["num_head_channels"],
                                           scale_factor=c.meta["latent_scale_factor"])
    return model


class _Recorded:
    """Recorded draws given in place of a generator."""

    def __init__(self, *draws: torch.Tensor) -> None:
        self.draws = list(draws)

    def draw(self, shape: tuple[int, ...]) -> torch.Tensor:
        noise = self.draws.pop(0)
        assert tuple(noise.shape) == tuple(shape)
        return noise.clone()


def _outputs_of(modules: dict[str, torch.nn.Module]) -> tuple[dict[str, torch.Tensor], list]:
    seen: dict[str, torch.Tensor] = {}
    handles = [m.register_forward_hook(lambda _m, _i, out, key=key: seen.__setitem__(key, out))
               for key, m in modules.items()]
    return seen, handles


@pytest.mark.parametrize("name", CASES)
def test_vae_parity(name: str) -> None:
    c, model = case(name), _loaded(name)
    vae, image = model.vae, c.input("in.vae_img")
    seen, handles = _outputs_of({"vae.enc_mid": vae.encoder.mid.block_2, "vae.enc_out": vae.encoder,
                                 "vae.dec_post_quant": vae.post_quant_conv, "vae.dec_mid": vae.decoder.mid.block_2})
    try:
        with torch.no_grad():
            posterior = vae.encode(image)
            c.check("vae.z_mode_scaled", model.vae_encode(image, sample=False))
            generator = torch.Generator().manual_seed(c.meta["seeds"]["vae"])
            c.check("vae.sample_noise", draw_noise(posterior.mean.shape, generator, like=posterior.mean))
            c.check("vae.z_sample_scaled", model.vae_encode(image, sample=True,
                                                            generator=generator.manual_seed(c.meta["seeds"]["vae"])))
            torch.manual_seed(c.meta["seeds"]["vae"])  # the official global-generator path draws the same numbers
            c.check("vae.z_sample_scaled", model.vae_encode(image, sample=True))
            c.check("vae.dec_out", model.vae_decode(c.input("in.vae_z")))
            recorded = _Recorded(c.ref["vae.sample_noise"])  # injected draws (as the samplers may pass them)
            c.check("vae.z_sample_scaled", model.vae_encode(image, sample=True, generator=recorded))
    finally:
        for h in handles:
            h.remove()
    for key in ("vae.enc_mid", "vae.enc_out", "vae.dec_post_quant", "vae.dec_mid"):
        c.check(key, seen[key])
    for key in ("moments", "mean", "logvar", "std"):
        c.check(f"vae.{key}", getattr(posterior, key))
    c.assert_group_checked("vae.")


@pytest.mark.parametrize("name", CASES)
def test_cldm_parity(name: str) -> None:
    c, model = case(name), _loaded(name)
    x_t, t, c_txt = c.input("in.x_t"), c.input("in.t"), c.input("in.c_txt")
    with torch.no_grad():
        c_img = model.vae_encode(c.input("in.vae_img"), sample=False)
        c.check("cldm.c_img", c_img)
        c.check("cldm.t_emb", timestep_embedding(t, model.unet.config.model_channels))
        controls = model.controlnet(x_t, c_img, t, c_txt)
        assert len(controls) == c.meta["info"]["n_control"]
        for i, control in enumerate(controls):
            c.check(f"cldm.control.{i:02d}", control)
        # The official pipeline sets [strength] * 13 (SD 2.1's count); zip uses the first n.
        strength = [c.meta["strength_forward"]] * max(13, len(controls))
        c.check("cldm.out", model(x_t, t, c_txt, c_img, strength))
        c.check("cldm.out_ramp", model(x_t, t, c_txt, c_img, c.input("in.control_scales_ramp")))
        c.check("cldm.unet_nocontrol", model.unet(x_t, t, c_txt, None))
    c.assert_group_checked("cldm.")


@pytest.mark.parametrize("name", CASES)
def test_files_load_with_inferred_configs(name: str) -> None:
    """The SD file has nothing missing or unused for the UNet and VAE; the ControlNet loads strictly; the
    inferred configs are the json's; our state_dicts have the official keys in the official module order."""
    c = case(name)
    model, parts = ControlLDM.from_state_dicts(_read(c.path("sd")), _read(c.path("controlnet")),
                                         num_head_channels=c.meta["unet"]["num_head_channels"])
    unet_cfg, control_cfg, vae_cfg = _configs(name)
    assert model.unet.config == unet_cfg
    assert model.controlnet.config == control_cfg
    # resolution is not stored in tensors and only names the attention levels: compare with the json's.
    assert infer_vae_config(parts.vae, resolution=vae_cfg.resolution) == vae_cfg
    assert not parts.other
    official_sd = c.meta["state_dicts"]["sd"]["keys_in_module_order"]
    ours = [UNET_PREFIX + k for k in model.unet.state_dict()] + [VAE_PREFIX + k for k in model.vae.state_dict()]
    assert ours == [k for k in official_sd if not k.startswith(TEXT_PREFIX)]
    assert sorted(TEXT_PREFIX + k for k in parts.text) == sorted(k for k in official_sd if k.startswith(TEXT_PREFIX))
    assert list(model.controlnet.state_dict()) == c.meta["state_dicts"]["controlnet"]["keys_in_module_order"]
    for key, tensor in c.weights("controlnet").items():  # float8 → float32 is exact
        assert torch.equal(model.controlnet.state_dict()[key], tensor)


def test_ckpt_container_is_read(tmp_path) -> None:
    c = case(CASES[0])
    ckpt = tmp_path / "sd.ckpt"
    torch.save({"state_dict": c.weights("sd"), "global_step": 1}, ckpt)
    model, parts = ControlLDM.from_state_dicts(_read(ckpt), _read(c.path("controlnet")),
                                         num_head_channels=c.meta["unet"]["num_head_channels"])
    assert model.unet.config == _configs(CASES[0])[0] and not parts.other


def _meta_state_dict(entries: list) -> dict[str, torch.Tensor]:
    return {key: torch.empty(shape, device="meta") for key, shape in entries}


@pytest.mark.parametrize(("role", "build"), [("unet", UNet), ("controlnet", ControlNet), ("vae", AutoencoderKL)])
def test_released_layout(role: str, build) -> None:
    """The full-size released modules have exactly the released keys (in order), shapes and parameter counts, and
    the config inference recovers the released configs from tensors of those shapes."""
    layout = case(CASES[0]).released_layout[role]
    kwargs = layout["kwargs"]
    config = (VAEConfig.from_ldm(kwargs["ddconfig"], kwargs["embed_dim"]) if role == "vae"
              else UNetConfig.from_ldm(kwargs))
    assert config == {"unet": SD21_UNET, "controlnet": SD21_CONTROLNET, "vae": SD_VAE}[role]
    with torch.device("meta"):
        module = build(config)
    sd = module.state_dict()
    assert [[k, list(v.shape)] for k, v in sd.items()] == layout["keys"]
    assert len(sd) == layout["n_keys"]
    assert sum(p.numel() for p in module.parameters()) == layout["n_params"]
    tensors = _meta_state_dict(layout["keys"])
    if role == "unet":
        assert infer_unet_config(tensors) == config
    elif role == "controlnet":
        assert infer_controlnet_config(tensors) == config
    else:
        assert infer_vae_config(tensors) == config


def _one_line_error(call, *fragments: str) -> None:
    with pytest.raises(CheckpointError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


def test_loading_errors() -> None:
    c = case(CASES[0])
    sd, control = c.weights("sd"), c.weights("controlnet")
    heads = c.meta["unet"]["num_head_channels"]

    def load(sd_: dict, control_: dict, **kw):
        return lambda: ControlLDM.from_state_dicts(sd_, control_, num_head_channels=kw.get("heads", heads),
                                                   sd_source="sd.ckpt", controlnet_source="v2.pth")

    last_unet = [k for k in sd if k.startswith(UNET_PREFIX)][-1]
    _one_line_error(load({k: v for k, v in sd.items() if k != last_unet}, control), "sd.ckpt", "missing key",
                    last_unet)
    vae_key = VAE_PREFIX + "decoder.conv_out.bias"
    _one_line_error(load({k: v for k, v in sd.items() if k != vae_key}, control), "sd.ckpt", vae_key)
    _one_line_error(load({**sd, UNET_PREFIX + "extra.weight": torch.zeros(1)}, control), "sd.ckpt",
                    "unexpected key", UNET_PREFIX + "extra.weight")
    _one_line_error(load({k: v for k, v in sd.items() if not k.startswith(UNET_PREFIX)}, control), "sd.ckpt",
                    "missing key", UNET_PREFIX + "input_blocks.0.0.weight")
    bias = "middle_block_out.0.bias"
    _one_line_error(load(sd, {**control, bias: torch.zeros(control[bias].numel() + 1)}), "v2.pth", bias, "shape")
    _one_line_error(load(sd, {k: v for k, v in control.items() if not k.startswith("zero_convs.0.")}), "v2.pth",
                    "missing key", "zero_convs.0.0.weight")
    _one_line_error(load(sd, {k[len(UNET_PREFIX):]: v for k, v in sd.items() if k.startswith(UNET_PREFIX)}),
                    "v2.pth", "not an IRControlNet")
    unet_cfg = _configs(CASES[0])[0]
    widths = [unet_cfg.model_channels * m for m in unet_cfg.channel_mult]
    _one_line_error(load(sd, control, heads=max(widths) + 1), "sd.ckpt", "num_head_channels")
    narrowest = min([widths[level] for level in unet_cfg.attention_levels()] + [widths[-1]])
    misfit = next(h for h in range(2, narrowest + 1) if widths[-1] % h)  # a hint the stored widths contradict
    _one_line_error(load(sd, control, heads=misfit), "sd.ckpt", f"num_head_channels={misfit}", "does not fit")


@pytest.mark.parametrize("config", [
    UNetConfig(model_channels=64, channel_mult=(1, 2, 3), num_res_blocks=2, attention_resolutions=(2,),
               num_head_channels=32, transformer_depth=2, context_dim=24, use_linear_in_transformer=False),
    UNetConfig(in_channels=3, out_channels=6, model_channels=32, channel_mult=(2, 1, 2, 1), num_res_blocks=1,
               attention_resolutions=(8, 1), num_head_channels=8, context_dim=40),
])
def test_inference_round_trip(config: UNetConfig) -> None:
    """Configs unlike the public case (levels, attention levels, depth, conv projections) are read back."""
    with torch.device("meta"):
        unet, control = UNet(config), ControlNet(config.__class__(**{**_fields(config), "hint_channels": 5}))
    assert infer_unet_config(unet.state_dict(), config.num_head_channels) == config
    assert infer_controlnet_config(control.state_dict(), config.num_head_channels, config.in_channels) == \
        control.config
    vae_config = VAEConfig(ch=32, ch_mult=(1, 3, 2), num_res_blocks=3, attn_resolutions=(32,), z_channels=6,
                           embed_dim=5, resolution=64)
    with torch.device("meta"):
        vae = AutoencoderKL(vae_config)
    assert infer_vae_config(vae.state_dict(), resolution=64) == vae_config
    for cfg in (config, control.config, vae_config):  # the dict form rebuilds the same config
        assert type(cfg)(**cfg.to_dict()) == cfg


def _fields(config: UNetConfig) -> dict:
    return {f: getattr(config, f) for f in config.__dataclass_fields__ if f != "meta"}
