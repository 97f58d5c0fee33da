"""Infer a :class:`HIDiffConfig` from the official per-network state_dicts (bare official keys).

``parts`` maps ``net_g`` (required), ``net_le``, ``net_le_dm``, ``net_d`` to state_dicts.  Every value the
tensor shapes show is read from them; what the files do not store (T, β range, diffusion path, the
``simple_denoise`` time divisor — and the fields of networks that are absent) comes from ``hints``, else from
the released preset picked by the denoiser type (``denoising`` → GoPro, ``simple_denoise`` → RealBlur), and
its name is recorded in ``config.meta["assumed"]``.  The result is checked by building the networks on the
``meta`` device and comparing every key and shape.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import torch

from diffir.archs.common import check_keys
from diffir.archs.hidiff.config import HIDiffConfig
from diffir.archs.hidiff.presets import PRESETS
from diffir.archs.tensors import count_indexed, expansion_factor
from diffir.errors import CheckpointError, ConfigError

StateDict = Mapping[str, torch.Tensor]
PARTS = ("net_g", "net_le", "net_le_dm", "net_d")
LEVELS = ("encoder_level1", "encoder_level2", "encoder_level3", "latent")
#: Fields that no official file stores (they are options of the diffusion or constructor defaults).
UNSTORED = ("timesteps", "linear_start", "linear_end", "diffusion_path", "denoiser_timesteps")
#: Fields of the *other* denoiser kind: taken from the preset without being reported as assumed.
UNUSED_BY = {
    "denoising": ("denoiser_res_blocks", "denoiser_timesteps"),
    "simple_denoise": ("denoiser_inner_channels", "denoiser_block_num", "denoiser_patch_expansion",
                       "denoiser_channel_expansion"),
}


def _shape(sd: StateDict, key: str, part: str) -> tuple[int, ...]:
    if key not in sd:
        raise CheckpointError(f"{part}: missing '{key}' (not an official HI-Diff {part} state_dict)")
    return tuple(sd[key].shape)


class _Reading:
    """Values read from the tensors, plus the (width, hidden) pairs behind each truncated expansion factor."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.factor_pairs: dict[str, list[tuple[int, int]]] = {}

    def factor(self, name: str, pairs: list[tuple[int, int]]) -> None:
        self.factor_pairs[name] = pairs
        self.values[name] = expansion_factor(pairs)


def _read_g(sd: StateDict, r: _Reading) -> None:
    dim, in_channels = _shape(sd, "patch_embed.proj.weight", "net_g")[:2]
    width, tokens = _shape(sd, "down_1.1.weight", "net_g")[1], _shape(sd, "down_1.3.weight", "net_g")[0]
    group = math.isqrt(width)
    if group * group != width or tokens % 4:
        raise CheckpointError(f"net_g: down_1 maps {width} tokens of width {tokens}: not group² tokens of 4·embed_dim")
    num_blocks = tuple(count_indexed(sd, f"{lvl}.blocks.", ".norm1.body.weight") for lvl in LEVELS)
    pairs, heads = [], {}
    widths = {lvl: dim * 2**i for i, lvl in enumerate(LEVELS)} | {"decoder_level1": 2 * dim, "refinement": 2 * dim}
    for lvl, w in widths.items():
        if f"{lvl}.blocks.0.ffn.project_out.weight" in sd:
            pairs.append((w, sd[f"{lvl}.blocks.0.ffn.project_out.weight"].shape[1]))
            heads[lvl] = sd[f"{lvl}.blocks.0.attn.temperature"].shape[0]
    if not pairs:
        raise CheckpointError("net_g: cannot infer the FFN width, the Transformer has no blocks")
    r.factor("ffn_expansion_factor", pairs)
    if all(lvl in heads for lvl in LEVELS):
        r.values["heads"] = tuple(heads[lvl] for lvl in LEVELS)
    first = next(k for k in sd if k.endswith(".norm1.body.weight"))
    r.values.update(
        in_channels=in_channels, out_channels=_shape(sd, "output.weight", "net_g")[0], dim=dim,
        num_blocks=num_blocks, num_refinement_blocks=count_indexed(sd, "refinement.blocks.", ".norm1.body.weight"),
        bias="output.bias" in sd, layernorm="WithBias" if first.replace(".weight", ".bias") in sd else "BiasFree",
        dual_pixel="skip_conv.weight" in sd, embed_dim=tokens // 4, group=group,
    )


def _read_encoder(sd: StateDict, part: str, r: _Reading) -> None:
    embed_dim, in_ch = _shape(sd, "conv1.0.weight", part)[:2]
    want = 96 if part == "net_le" else 48  # PixelUnshuffle(4) of [GT, LQ] (6 channels) or of LQ (3)
    if in_ch != want:
        raise CheckpointError(f"{part}: conv1 takes {in_ch} channels, expected {want} (in_chans {want // 16})")
    hidden_p, tokens = _shape(sd, "mlp.patch_mixer.0.weight", part)
    hidden_c, width = _shape(sd, "mlp.channel_mixer.0.weight", part)
    if embed_dim != r.values["embed_dim"] or tokens != r.values["group"] ** 2:
        raise CheckpointError(f"{part}: embed_dim {embed_dim} and {tokens} tokens do not match net_g's "
                              f"{r.values['embed_dim']} and {r.values['group'] ** 2}")
    variant = "lrelu" if "conv2.0.weight" in sd else "gelu"
    values = dict(encoder=variant, encoder_blocks=count_indexed(sd, "blocks.", ".0.weight"))
    for name, value in values.items():
        if r.values.setdefault(name, value) != value:
            raise CheckpointError(f"net_le and net_le_dm differ in {name}: {r.values[name]} vs {value}")
    r.factor("encoder_patch_expansion", [(tokens, hidden_p)])
    r.factor("encoder_channel_expansion", [(width, hidden_c)])


def _read_denoiser(sd: StateDict, r: _Reading) -> None:
    width = 4 * r.values["embed_dim"]
    if "time_mlp" in sd:
        inner, cat = _shape(sd, "first_layer.0.weight", "net_d")
        if cat != 3 * width:
            raise CheckpointError(f"net_d: first_layer takes {cat} features, expected 3·{width} ([x, t, c])")
        blocks = count_indexed(sd, "blocks.", ".0.norm1.weight")
        r.values.update(denoiser="denoising", denoiser_inner_channels=inner, denoiser_block_num=blocks + 2)
        if blocks:
            hidden_p, tokens = _shape(sd, "blocks.0.0.patch_mixer.0.weight", "net_d")
            r.factor("denoiser_patch_expansion", [(tokens, hidden_p)])
            hidden_c = _shape(sd, "blocks.0.0.channel_mixer.0.weight", "net_d")[0]
            r.factor("denoiser_channel_expansion", [(inner, hidden_c)])
    elif "resmlp.0.weight" in sd:
        out, cat = _shape(sd, "resmlp.0.weight", "net_d")
        if (out, cat) != (width, 2 * width + 1):
            raise CheckpointError(f"net_d: resmlp.0 is {cat}→{out}, expected {2 * width + 1}→{width} ([c, t, x])")
        blocks = sum(1 for k in sd if re.fullmatch(r"resmlp\.\d+\.resmlp\.0\.weight", k))  # indices 2, 3, ...
        r.values.update(denoiser="simple_denoise", denoiser_res_blocks=blocks)
    else:
        raise CheckpointError("net_d: neither a `denoising` ('time_mlp') nor a `simple_denoise` ('resmlp.0') network")


def _preset(r: _Reading) -> HIDiffConfig:
    """The released configuration the tensors resemble most (by denoiser, encoder, FFN factor)."""
    if "denoiser" in r.values:
        realblur = r.values["denoiser"] == "simple_denoise"
    elif "encoder" in r.values:
        realblur = r.values["encoder"] == "lrelu"
    else:
        realblur = r.values["ffn_expansion_factor"] == 2.0
    return PRESETS["hidiff_realblur_j_s2" if realblur else "hidiff_gopro_s2"][0]


def infer_config(parts: Mapping[str, StateDict], hints: Mapping[str, Any] | None = None) -> HIDiffConfig:
    """Build the :class:`HIDiffConfig` that ``parts`` (official per-network state_dicts) were saved from."""
    hints = dict(hints or {})
    try:
        check_keys(hints, HIDiffConfig.field_names(), "HI-Diff hint")
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from None
    unknown = sorted(set(parts) - set(PARTS))
    if unknown or "net_g" not in parts:
        raise CheckpointError(f"HI-Diff parts must include net_g and be among {', '.join(PARTS)}; got {sorted(parts)}")
    r = _Reading()
    _read_g(parts["net_g"], r)
    for part in ("net_le", "net_le_dm"):
        if part in parts:
            _read_encoder(parts[part], part, r)
    if "net_d" in parts:
        _read_denoiser(parts["net_d"], r)
    stage = 2 if {"net_le_dm", "net_d"} & set(parts) else 1
    data: dict[str, Any] = {"task": "deblur", "stage": hints.get("stage", stage)}
    preset, assumed = _preset(r), []
    for name in HIDiffConfig.field_names():
        if name in data:
            continue
        if name in r.values:
            data[name] = r.values[name]
            if name in hints and hints[name] != data[name]:
                data[name] = _checked_hint(name, hints[name], data[name], r)
        elif name in hints:
            data[name] = hints[name]
        else:
            data[name] = getattr(preset, name)
            if name not in UNUSED_BY.get(r.values.get("denoiser", ""), ()):
                assumed.append(name)
    try:
        config = HIDiffConfig(**data)
    except ConfigError as exc:
        raise CheckpointError(f"the tensors describe an invalid HI-Diff network: {exc}") from None
    config.meta["assumed"] = assumed
    _check_shapes(parts, config)
    return config


def _checked_hint(name: str, hint: Any, read: Any, r: _Reading) -> Any:
    """A hint may refine a truncated expansion factor (2.66 vs 2.65 give the same widths), nothing else."""
    pairs = r.factor_pairs.get(name)
    if pairs and all(int(w * float(hint)) == h for w, h in pairs):
        return hint
    raise CheckpointError(f"hint {name}={hint!r} contradicts the tensors, which give {read!r}")


def _check_shapes(parts: Mapping[str, StateDict], config: HIDiffConfig) -> None:
    from diffir.archs.hidiff.model import HIDiffS1, HIDiffS2

    with torch.device("meta"):
        s1, s2 = HIDiffS1(config), HIDiffS2(config)
    modules = {"net_g": s2.G, "net_le": s1.le, "net_le_dm": s2.le_dm, "net_d": s2.denoise}
    for part, sd in parts.items():
        expected = {k: tuple(v.shape) for k, v in modules[part].state_dict().items()}
        got = {k: tuple(v.shape) for k, v in sd.items()}
        if expected != got:
            first = sorted(set(expected.items()) ^ set(got.items()))[:1]
            raise CheckpointError(f"{part}: the inferred config does not rebuild the tensors (first difference: "
                                  f"{first})")
