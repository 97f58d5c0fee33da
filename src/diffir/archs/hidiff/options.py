"""Conversion between :class:`HIDiffConfig` and the official option-file sections (``network_g``,
``network_le``, ``network_le_dm``, ``network_d``, ``diffusion_schedule``).

Omitted kwargs take the official constructor defaults where the spec documents them (Transformer: §A.4;
``simple_denoise.timesteps`` = 5: pitfall A.11.3; the mixer expansions of every release).  Everything else
must be given, and kwargs that contradict each other (e.g. LE's ``embed_dim`` ≠ G's) are rejected.
"""

from __future__ import annotations

from typing import Any

from diffir.archs.hidiff.config import SIMPLE_DENOISE_TIMESTEPS, HIDiffConfig
from diffir.diffusion.schedule import DEFAULT_LINEAR_END, DEFAULT_LINEAR_START
from diffir.errors import ConfigError

#: ``Transformer`` constructor defaults (they differ from the released configs: always pass the config values).
G_DEFAULTS: dict[str, Any] = dict(
    inp_channels=3, out_channels=3, dim=48, num_blocks=[4, 6, 6, 8], num_refinement_blocks=4, heads=[1, 2, 4, 8],
    ffn_expansion_factor=2.66, bias=False, LayerNorm_type="WithBias", dual_pixel_task=False, embed_dim=48, group=4,
)
LE_TYPES = {"latent_encoder_gelu": "gelu", "latent_encoder_lrelu": "lrelu"}
LE_KEYS = ("in_chans", "embed_dim", "block_num", "group", "stage", "patch_expansion", "channel_expansion")
D_KEYS = {
    "denoising": ("in_channel", "out_channel", "inner_channel", "block_num", "group", "patch_expansion",
                  "channel_expansion"),
    "simple_denoise": ("n_feats", "n_denoise_res", "timesteps"),
}
D_DEFAULTS: dict[str, dict[str, Any]] = {
    "denoising": {"patch_expansion": 0.5, "channel_expansion": 2},
    "simple_denoise": {"timesteps": SIMPLE_DENOISE_TIMESTEPS},
}
SCHEDULE_KEYS = ("apply_ldm", "schedule", "timesteps", "linear_start", "linear_end")


def _section(kwargs: dict[str, Any], name: str, allowed: tuple[str, ...], defaults: dict[str, Any]) -> dict[str, Any]:
    """Check the keys of one option section (``type`` excluded) and fill the documented defaults."""
    data = {k: v for k, v in kwargs.items() if k != "type"}
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ConfigError(f"{name}: unknown kwarg {unknown[0]!r}; allowed: {', '.join(allowed)}")
    data = {**defaults, **data}
    missing = [k for k in allowed if k not in data]
    if missing:
        raise ConfigError(f"{name}: missing kwarg {missing[0]!r} (the official option files always set it)")
    return data


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _g_fields(network_g: dict[str, Any]) -> dict[str, Any]:
    _require(network_g.get("type", "Transformer") == "Transformer",
             f"network_g: type must be 'Transformer', got {network_g.get('type')!r}")
    g = _section(network_g, "network_g", tuple(G_DEFAULTS), G_DEFAULTS)
    return dict(
        in_channels=g["inp_channels"], out_channels=g["out_channels"], dim=g["dim"], num_blocks=tuple(g["num_blocks"]),
        num_refinement_blocks=g["num_refinement_blocks"], heads=tuple(g["heads"]),
        ffn_expansion_factor=g["ffn_expansion_factor"], bias=bool(g["bias"]),
        # the official code: anything but "BiasFree" is WithBias
        layernorm="BiasFree" if g["LayerNorm_type"] == "BiasFree" else "WithBias",
        dual_pixel=bool(g["dual_pixel_task"]), embed_dim=g["embed_dim"], group=g["group"],
    )


def _le_fields(kwargs: dict[str, Any], name: str, role_stage: int, g: dict[str, Any]) -> dict[str, Any]:
    variant = LE_TYPES.get(kwargs.get("type", ""))
    _require(variant is not None, f"{name}: type must be one of {', '.join(LE_TYPES)}, got {kwargs.get('type')!r}")
    le = _section(kwargs, name, LE_KEYS, {"stage": role_stage, "in_chans": 6 // role_stage,
                                           "patch_expansion": 0.5, "channel_expansion": 4})
    _require(le["stage"] == role_stage and le["in_chans"] == 6 // role_stage,
             f"{name}: needs stage {role_stage} and in_chans {6 // role_stage}, got {le['stage']} and {le['in_chans']}")
    for key in ("embed_dim", "group"):
        _require(le[key] == g[key], f"{name}: {key} {le[key]} differs from network_g's {g[key]}")
    return dict(encoder=variant, encoder_blocks=le["block_num"], encoder_patch_expansion=le["patch_expansion"],
                encoder_channel_expansion=le["channel_expansion"])


def _d_fields(network_d: dict[str, Any], g: dict[str, Any]) -> dict[str, Any]:
    kind = network_d.get("type")
    _require(kind in D_KEYS, f"network_d: type must be one of {', '.join(D_KEYS)}, got {kind!r}")
    d = _section(network_d, "network_d", D_KEYS[kind], D_DEFAULTS[kind])
    width = 4 * g["embed_dim"]
    if kind == "simple_denoise":
        _require(4 * d["n_feats"] == width, f"network_d: 4·n_feats ({4 * d['n_feats']}) must equal the prior "
                 f"token width 4·embed_dim ({width})")
        return dict(denoiser=kind, denoiser_res_blocks=d["n_denoise_res"], denoiser_timesteps=d["timesteps"])
    _require(d["in_channel"] == d["out_channel"] == width, f"network_d: in_channel/out_channel "
             f"({d['in_channel']}/{d['out_channel']}) must equal the prior token width 4·embed_dim ({width})")
    _require(d["group"] == g["group"], f"network_d: group {d['group']} differs from network_g's {g['group']}")
    return dict(denoiser=kind, denoiser_inner_channels=d["inner_channel"], denoiser_block_num=d["block_num"],
                denoiser_patch_expansion=d["patch_expansion"], denoiser_channel_expansion=d["channel_expansion"])


def _diffusion_fields(schedule: dict[str, Any]) -> dict[str, Any]:
    s = _section(schedule, "diffusion_schedule", SCHEDULE_KEYS,
                 {"schedule": "linear", "linear_start": DEFAULT_LINEAR_START, "linear_end": DEFAULT_LINEAR_END})
    ldm = bool(s["apply_ldm"])
    # The LDM path ignores the `schedule` key (always sqrt-linear); HI-Diff's own sampler reads it.
    _require(ldm or s["schedule"] == "linear",
             f"diffusion_schedule: only schedule 'linear' is supported without apply_ldm, got {s['schedule']!r}")
    return dict(timesteps=s["timesteps"], linear_start=s["linear_start"], linear_end=s["linear_end"],
                diffusion_path="ldm" if ldm else "eps")


def from_official(
    network_g: dict[str, Any],
    network_le: dict[str, Any] | None,
    network_le_dm: dict[str, Any] | None,
    network_d: dict[str, Any] | None,
    diffusion_schedule: dict[str, Any] | None,
    stage: int,
) -> HIDiffConfig:
    """See :meth:`HIDiffConfig.from_official`.  Stage 2 needs ``network_le_dm``, ``network_d`` and
    ``diffusion_schedule``; stage 1 needs ``network_le``.  A given LE and LE_DM must agree (one description)."""
    _require(stage in (1, 2), f"stage must be 1 or 2, got {stage!r}")
    g = _g_fields(network_g)
    data: dict[str, Any] = {"task": "deblur", "stage": stage, **g}
    encoders = {name: kw for name, kw in (("network_le", network_le), ("network_le_dm", network_le_dm)) if kw}
    needed = "network_le" if stage == 1 else "network_le_dm"
    _require(needed in encoders, f"a stage-{stage} HI-Diff config needs {needed}")
    parsed = {name: _le_fields(kw, name, 1 if name == "network_le" else 2, g) for name, kw in encoders.items()}
    _require(len({tuple(p.items()) for p in parsed.values()}) == 1,
             "network_le and network_le_dm differ (type, block_num or expansions); one config describes both")
    data.update(parsed[needed])
    if stage == 2:
        _require(network_d is not None and diffusion_schedule is not None,
                 "a stage-2 HI-Diff config needs network_d and diffusion_schedule")
    if network_d:
        data.update(_d_fields(network_d, g))
    if diffusion_schedule:
        data.update(_diffusion_fields(diffusion_schedule))
    return HIDiffConfig(**data)


def to_official(config: HIDiffConfig) -> dict[str, dict[str, Any]]:
    """The official option-file sections for ``config`` (inverse of :func:`from_official`)."""
    c = config
    network_g = dict(
        type="Transformer", inp_channels=c.in_channels, out_channels=c.out_channels, dim=c.dim,
        num_blocks=list(c.num_blocks), num_refinement_blocks=c.num_refinement_blocks, heads=list(c.heads),
        ffn_expansion_factor=c.ffn_expansion_factor, bias=c.bias, LayerNorm_type=c.layernorm,
        dual_pixel_task=c.dual_pixel, embed_dim=c.embed_dim, group=c.group,
    )

    def encoder(stage: int) -> dict[str, Any]:
        return dict(type=f"latent_encoder_{c.encoder}", in_chans=6 // stage, embed_dim=c.embed_dim,
                    block_num=c.encoder_blocks, group=c.group, stage=stage,
                    patch_expansion=c.encoder_patch_expansion, channel_expansion=c.encoder_channel_expansion)

    if c.denoiser == "denoising":
        network_d = dict(type="denoising", in_channel=c.token_width, out_channel=c.token_width,
                         inner_channel=c.denoiser_inner_channels, block_num=c.denoiser_block_num, group=c.group,
                         patch_expansion=c.denoiser_patch_expansion, channel_expansion=c.denoiser_channel_expansion)
    else:
        network_d = dict(type="simple_denoise", n_feats=c.embed_dim, n_denoise_res=c.denoiser_res_blocks)
        if c.denoiser_timesteps != SIMPLE_DENOISE_TIMESTEPS:
            network_d["timesteps"] = c.denoiser_timesteps
    schedule = dict(apply_ldm=c.diffusion_path == "ldm", schedule="linear", timesteps=c.timesteps,
                    linear_start=c.linear_start, linear_end=c.linear_end)
    return dict(network_g=network_g, network_le=encoder(1), network_le_dm=encoder(2), network_d=network_d,
                diffusion_schedule=schedule)
