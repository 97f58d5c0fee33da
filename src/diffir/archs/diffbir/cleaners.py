"""DiffBIR's stage-1 "cleaners": which kind a bare state_dict is, and its configuration read off the tensors.

Every hyper-parameter that shapes a tensor is recovered from the tensors; the rest (``img_range``, the upsampler,
``patch_size``) have one released value.  A state_dict whose keys or shapes differ from the layout rebuilt from
the inferred config raises a one-line :class:`~diffir.errors.CheckpointError`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from diffir.archs.diffbir.rrdbnet import RRDBConfig, RRDBNet
from diffir.archs.diffbir.scunet import SCUNet, SCUNetConfig
from diffir.archs.diffbir.swinir import SwinIR, SwinIRConfig
from diffir.errors import CheckpointError, DiffIRError

CleanerConfig = SwinIRConfig | RRDBConfig | SCUNetConfig

#: kind name → (config class, module class)
CLEANERS: dict[str, tuple[type, type[nn.Module]]] = {
    "swinir": (SwinIRConfig, SwinIR),
    "bsrnet": (RRDBConfig, RRDBNet),
    "scunet": (SCUNetConfig, SCUNet),
}

#: A key only that kind has (bare keys, as the released files store them).
_SIGNATURES = {
    "swinir": "patch_embed.norm.weight",
    "bsrnet": "RRDB_trunk.0.RDB1.conv1.weight",
    "scunet": "m_head.0.weight",
}

SCUNET_STAGES = ("m_down1", "m_down2", "m_down3", "m_body", "m_up3", "m_up2", "m_up1")


def bare_state_dict(obj: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """What the official loader does first: unwrap a ``state_dict`` entry and strip a ``module.`` prefix."""
    sd = obj.get("state_dict", obj)
    if not isinstance(sd, Mapping):
        raise CheckpointError("the checkpoint's 'state_dict' entry is not a mapping of tensors")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def detect_cleaner(sd: Mapping[str, Any]) -> str | None:
    """``"swinir"``, ``"bsrnet"`` or ``"scunet"`` for a bare stage-1 state_dict, else None."""
    return next((kind for kind, key in _SIGNATURES.items() if key in sd), None)


def _count(sd: Mapping[str, Any], pattern: str) -> int:
    """How many consecutive indices i (from 0) have the key ``pattern.format(i)``."""
    i = 0
    while pattern.format(i) in sd:
        i += 1
    return i


def _shape(sd: Mapping[str, Any], key: str, dims: int) -> tuple[int, ...]:
    """The shape of ``sd[key]``, which must have ``dims`` non-empty dimensions."""
    if key not in sd:
        raise CheckpointError(f"not a complete stage-1 checkpoint: tensor {key!r} is missing")
    shape = tuple(sd[key].shape)
    if len(shape) != dims or 0 in shape:
        raise CheckpointError(f"unrecognised stage-1 tensor {key!r}: shape {shape}, expected {dims} non-empty dims")
    return shape


def _square_root(value: int, what: str) -> int:
    root = math.isqrt(value)
    if root * root != value:
        raise CheckpointError(f"unrecognised SwinIR tensor: {what} has {value} entries, not a square")
    return root


def _swinir_config(sd: Mapping[str, Any]) -> SwinIRConfig:
    unshuffle = "conv_first.1.weight" in sd
    embed_dim, first_in = _shape(sd, "conv_first.1.weight" if unshuffle else "conv_first.weight", 4)[:2]
    in_chans = _shape(sd, "conv_last.weight", 4)[0]
    depths = [_count(sd, f"layers.{i}.residual_group.blocks.{{}}.norm1.weight")
              for i in range(_count(sd, "layers.{}.conv.weight"))]
    if not depths or 0 in depths:
        raise CheckpointError("unrecognised SwinIR checkpoint: no residual Swin blocks (layers.<i>.residual_group)")
    block = "layers.{}.residual_group.blocks.{}."
    heads = [_shape(sd, block.format(i, 0) + "attn.relative_position_bias_table", 2)[1] for i in range(len(depths))]
    tokens_per_window = _shape(sd, block.format(0, 0) + "attn.relative_position_index", 2)[0]
    window = _square_root(tokens_per_window, "relative_position_index")
    masks = [_shape(sd, block.format(i, j) + "attn_mask", 3) for i, d in enumerate(depths) for j in range(1, d, 2)
             if block.format(i, j) + "attn_mask" in sd]
    # The stored mask is (nW, N, N) for an img_size² token grid.  Without any (no odd block, or img_size <=
    # window, where the constructor already set window = img_size) img_size = window builds the same network.
    img_size = _square_root(masks[0][0], "attn_mask") * window if masks else window
    hidden = _shape(sd, block.format(0, 0) + "mlp.fc1.weight", 2)[0]
    scale = _square_root(first_in // in_chans, "conv_first") if unshuffle else None
    return SwinIRConfig(
        img_size=img_size, patch_size=1, in_chans=in_chans, embed_dim=embed_dim, depths=tuple(depths),
        num_heads=tuple(heads), window_size=window, mlp_ratio=hidden / embed_dim,
        sf=8 if "conv_up3.weight" in sd else 4, unshuffle=unshuffle, unshuffle_scale=scale)


def _rrdb_config(sd: Mapping[str, Any]) -> RRDBConfig:
    nf, in_nc = _shape(sd, "conv_first.weight", 4)[:2]
    return RRDBConfig(in_nc=in_nc, out_nc=_shape(sd, "conv_last.weight", 4)[0], nf=nf,
                      nb=_count(sd, "RRDB_trunk.{}.RDB1.conv1.weight"),
                      gc=_shape(sd, "RRDB_trunk.0.RDB1.conv1.weight", 4)[0], sf=4 if "upconv2.weight" in sd else 2)


def _scunet_config(sd: Mapping[str, Any]) -> SCUNetConfig:
    dim, in_nc = _shape(sd, "m_head.0.weight", 4)[:2]
    blocks = []
    for stage in SCUNET_STAGES:
        # Up stages start with their transposed conv at index 0, so their blocks are numbered from 1.
        first = 1 if stage.startswith("m_up") else 0
        indices = {int(m.group(1)) for k in sd if (m := re.match(rf"{stage}\.(\d+)\.trans_block\.", k))}
        blocks.append(len(indices))
        if indices and indices != set(range(first, first + len(indices))):
            raise CheckpointError(f"unrecognised SCUNet checkpoint: {stage} blocks are not numbered from {first}")
    return SCUNetConfig(in_nc=in_nc, config=tuple(blocks), dim=dim)


_INFER: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    "swinir": _swinir_config, "bsrnet": _rrdb_config, "scunet": _scunet_config}


def build_layout(kind: str, config: Any) -> dict[str, torch.Tensor]:
    """The state_dict of a cleaner built on the meta device (official key order and shapes, nothing allocated)."""
    with torch.device("meta"):
        return CLEANERS[kind][1](config).state_dict()


def infer_cleaner_config(kind: str, sd: Mapping[str, Any]) -> CleanerConfig:
    """The configuration of a bare ``kind`` state_dict, checked against the layout it implies."""
    if kind not in CLEANERS:
        raise CheckpointError(f"unknown stage-1 cleaner {kind!r}; known: {', '.join(CLEANERS)}")
    bad = next((k for k, v in sd.items() if not isinstance(v, torch.Tensor)), None)
    if bad is not None:
        raise CheckpointError(f"unrecognised {kind} entry {bad!r}: a {type(sd[bad]).__name__}, not a tensor")
    try:
        config = _INFER[kind](sd)
        layout = build_layout(kind, config)
    except DiffIRError as exc:
        raise CheckpointError(f"unrecognised {kind} checkpoint: {exc}") from None
    extra = [k for k in sd if k not in layout]
    if extra:
        raise CheckpointError(f"unrecognised {kind} tensor {extra[0]!r} ({len(extra)} unexpected key(s))")
    for key, expected in layout.items():
        if key not in sd:
            raise CheckpointError(f"incomplete {kind} checkpoint: tensor {key!r} is missing")
        if tuple(sd[key].shape) != tuple(expected.shape):
            raise CheckpointError(f"unrecognised {kind} tensor {key!r}: shape {tuple(sd[key].shape)}, "
                                  f"expected {tuple(expected.shape)} for the inferred config")
    return config


def load_cleaner(sd: Mapping[str, Any]) -> tuple[str, nn.Module]:
    """(kind, module in eval mode) from a stage-1 checkpoint dict, loaded strictly as the official loader does."""
    sd = bare_state_dict(sd)
    kind = detect_cleaner(sd)
    if kind is None:
        raise CheckpointError("not a DiffBIR stage-1 checkpoint (SwinIR, BSRNet or SCUNet keys expected)")
    module = CLEANERS[kind][1](infer_cleaner_config(kind, sd))
    module.load_state_dict(sd, strict=True)  # copies cast float8/float16 parameters to float32
    return kind, module.eval()


def official_key_order(model: nn.Module) -> list[str]:
    """Keys in the official module order (a module's buffers before its children): ``state_dict()`` order, since
    every cleaner registers its sub-modules in the official order."""
    return list(model.state_dict())
