"""Reading the UNet, IRControlNet and VAE hyper-parameters off checkpoint tensors, and strict loading with
one-line errors.

Two values are not stored in any tensor and are taken as hints:
* ``num_head_channels``: attention splits ``to_q``/``to_k``/``to_v`` into heads only at run time, so a
  320-wide level with 5 heads of 64 has exactly the tensors of one with 10 heads of 32.  The default 64 is the
  SD 2.x value (DiffBIR's base model).  (SD 1.x fixes 8 heads per level instead, head widths 40/80/160, which
  one head width cannot express: SD 1.x UNets are not supported.)
* the ControlNet's ``in_channels``: its first conv sees concat(x_t, c_img) and only their sum is stored; the
  split is the UNet's latent channels (4 for SD).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import nn

from diffir.archs.diffbir.unet import UNetConfig
from diffir.archs.diffbir.vae import VAEConfig
from diffir.archs.tensors import count_indexed
from diffir.errors import CheckpointError, ConfigError

StateDict = dict[str, torch.Tensor]

DEFAULT_NUM_HEAD_CHANNELS = 64  #: SD 2.x; not recoverable from tensors (see the module docstring)


#: What to supply, by the ``what`` of a message.
SUPPLY = {
    "Stable Diffusion UNet": "the complete SD 2.1-base checkpoint (e.g. v2-1_512-ema-pruned.ckpt)",
    "Stable Diffusion VAE": "the complete SD 2.1-base checkpoint (e.g. v2-1_512-ema-pruned.ckpt)",
    "IRControlNet": "a complete DiffBIR ControlNet file (v1_general.pth, v1_face.pth, v2.pth, DiffBIR_v2.1.pt)",
}


def _tensor(sd: Mapping[str, torch.Tensor], key: str, source: str, prefix: str, what: str) -> torch.Tensor:
    if key not in sd:
        raise CheckpointError(f"{source}: missing key '{prefix}{key}': not the {what} weights (truncated file, or "
                              f"weights of another model); supply {SUPPLY[what]}")
    return sd[key]


def _indices(sd: Mapping[str, torch.Tensor], prefix: str) -> list[int]:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(m.group(1)) for k in sd if (m := pattern.match(k))})


def _encoder_layout(sd: Mapping[str, torch.Tensor], source: str, prefix: str, what: str) -> dict:
    """model_channels, channel_mult, num_res_blocks, attention factors, transformer settings of the shared
    UNet/ControlNet encoder (``input_blocks`` and ``middle_block``)."""

    def get(key: str) -> torch.Tensor:
        return _tensor(sd, key, source, prefix, what)

    def bad(reason: str) -> CheckpointError:
        return CheckpointError(f"{source}: {reason}: the {what} tensors are truncated, damaged or edited; "
                               f"supply {SUPPLY[what]}")

    model_channels = get("input_blocks.0.0.weight").shape[0]
    levels: list[list[tuple[int, bool]]] = [[]]  # per level: (width, has attention) of each res block
    for i in _indices(sd, "input_blocks.")[1:]:
        if f"input_blocks.{i}.0.op.weight" in sd:
            levels.append([])
            continue
        width = get(f"input_blocks.{i}.0.out_layers.3.weight").shape[0]
        levels[-1].append((width, f"input_blocks.{i}.1.norm.weight" in sd))
    counts = {len(level) for level in levels}
    if len(counts) != 1 or 0 in counts:
        raise bad(f"the levels have {sorted(len(level) for level in levels)} res blocks (expected the same count)")
    channel_mult, attention = [], []
    for index, level in enumerate(levels):
        widths, attn = {w for w, _ in level}, {a for _, a in level}
        if len(widths) != 1 or len(attn) != 1 or next(iter(widths)) % model_channels:
            raise bad(f"level {index} mixes widths {sorted(widths)} or attention / no attention")
        channel_mult.append(next(iter(widths)) // model_channels)
        if attn.pop():
            attention.append(2**index)
    proj_in = get("middle_block.1.proj_in.weight")
    return {
        "model_channels": model_channels,
        "channel_mult": tuple(channel_mult),
        "num_res_blocks": counts.pop(),
        "attention_resolutions": tuple(attention),
        "transformer_depth": count_indexed(sd, "middle_block.1.transformer_blocks.", ".norm1.weight"),
        "context_dim": get("middle_block.1.transformer_blocks.0.attn2.to_k.weight").shape[1],
        "use_linear_in_transformer": proj_in.ndim == 2,
    }


def _check_head_width(config: UNetConfig, sd: Mapping[str, torch.Tensor], source: str, what: str) -> None:
    """The attention width (heads × head width) must be the stored one: catches a wrong ``num_head_channels``
    hint with a message about the hint rather than a shape mismatch."""
    width = config.model_channels * config.channel_mult[-1]
    stored = sd["middle_block.1.proj_in.weight"].shape[0]
    if (width // config.num_head_channels) * config.num_head_channels != stored:
        raise CheckpointError(f"{source}: num_head_channels={config.num_head_channels} (a hint: not stored in "
                              f"tensors) does not fit the {what}'s {stored}-wide attention of {width} channels; "
                              "pass the head width it was trained with (64 for SD 2.x)")


def _config(cls: type, values: dict, source: str, what: str, assumed: dict) -> UNetConfig | VAEConfig:
    try:
        config = cls(**values)
    except ConfigError as exc:
        hints = ", ".join(f"{k}={v}" for k, v in assumed.items())
        raise CheckpointError(f"{source}: the {what} tensors with {hints} (a hint: not stored in tensors) give an "
                              f"invalid config: {exc}") from None
    config.meta["assumed"] = assumed
    return config


def infer_unet_config(sd: Mapping[str, torch.Tensor], num_head_channels: int = DEFAULT_NUM_HEAD_CHANNELS, *,
                      source: str = "state_dict", prefix: str = "") -> UNetConfig:
    """The UNet config of bare UNet keys (``prefix`` is only shown in messages, e.g. ``model.diffusion_model.``)."""
    what = "Stable Diffusion UNet"
    values = _encoder_layout(sd, source, prefix, what)
    values["in_channels"] = sd["input_blocks.0.0.weight"].shape[1]
    values["out_channels"] = _tensor(sd, "out.2.weight", source, prefix, what).shape[0]
    config = _config(UNetConfig, {**values, "num_head_channels": num_head_channels}, source, what,
                     {"num_head_channels": num_head_channels})
    _check_head_width(config, sd, source, what)
    return config


def infer_controlnet_config(sd: Mapping[str, torch.Tensor], num_head_channels: int = DEFAULT_NUM_HEAD_CHANNELS,
                            in_channels: int = 4, *, source: str = "state_dict") -> UNetConfig:
    """The IRControlNet config of a bare ControlNet state_dict; ``in_channels`` is x_t's share of the first conv."""
    what = "IRControlNet"
    values = _encoder_layout(sd, source, "", what)
    first_in = sd["input_blocks.0.0.weight"].shape[1]
    if first_in <= in_channels:
        raise CheckpointError(f"{source}: input_blocks.0.0.weight takes {first_in} channels, not more than the "
                              f"latent's {in_channels}: not an IRControlNet (it concatenates x_t and c_img)")
    values.update(in_channels=in_channels, hint_channels=first_in - in_channels, num_head_channels=num_head_channels)
    config = _config(UNetConfig, values, source, what, {"num_head_channels": num_head_channels,
                                                        "in_channels": in_channels})
    _check_head_width(config, sd, source, what)
    return config


def infer_vae_config(sd: Mapping[str, torch.Tensor], resolution: int = 256, *, source: str = "state_dict",
                     prefix: str = "") -> VAEConfig:
    """The VAE config of bare VAE keys; ``resolution`` only converts attention levels to ``attn_resolutions``."""
    what = "Stable Diffusion VAE"

    def get(key: str) -> torch.Tensor:
        return _tensor(sd, key, source, prefix, what)

    conv_in = get("encoder.conv_in.weight")
    ch, levels = conv_in.shape[0], _indices(sd, "encoder.down.")
    z_channels = get("decoder.conv_in.weight").shape[1]
    values = {
        "embed_dim": get("post_quant_conv.weight").shape[1],
        "z_channels": z_channels,
        "ch": ch,
        "ch_mult": tuple(get(f"encoder.down.{i}.block.0.conv2.weight").shape[0] // ch for i in levels),
        "num_res_blocks": count_indexed(sd, "encoder.down.0.block.", ".conv1.weight"),
        "attn_resolutions": tuple(resolution // 2**i for i in levels if f"encoder.down.{i}.attn.0.q.weight" in sd),
        "in_channels": conv_in.shape[1],
        "out_ch": get("decoder.conv_out.weight").shape[0],
        "double_z": get("encoder.conv_out.weight").shape[0] == 2 * z_channels,
        "resolution": resolution,
    }
    return _config(VAEConfig, values, source, what, {"resolution": resolution})


def load_strict(module: nn.Module, sd: Mapping[str, torch.Tensor], source: str, prefix: str, what: str) -> None:
    """``load_state_dict(strict=True)`` with one-line errors naming the file, the full key and the fix."""
    own = module.state_dict()
    missing = [k for k in own if k not in sd]
    if missing:
        raise CheckpointError(f"{source}: missing key '{prefix}{missing[0]}' ({len(missing)} missing): truncated "
                              f"file or not the {what} weights; supply {SUPPLY[what]}")
    unexpected = [k for k in sd if k not in own]
    if unexpected:
        raise CheckpointError(f"{source}: unexpected key '{prefix}{unexpected[0]}' ({len(unexpected)} unexpected): "
                              f"weights of another model or version; supply {SUPPLY[what]}")
    for key, tensor in sd.items():
        if tuple(tensor.shape) != tuple(own[key].shape):
            raise CheckpointError(f"{source}: key '{prefix}{key}' has shape {tuple(tensor.shape)}, the inferred "
                                  f"{what} config expects {tuple(own[key].shape)} (mixed or damaged checkpoint)")
        if not tensor.is_floating_point():
            raise CheckpointError(f"{source}: key '{prefix}{key}' has non-float dtype {tensor.dtype}")
    module.load_state_dict(dict(sd), strict=True)
