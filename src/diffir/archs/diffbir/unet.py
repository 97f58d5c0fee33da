"""The Stable Diffusion 2.1 UNet with DiffBIR's control injection, and the IRControlNet (a copy of its encoder).

State_dict keys are exactly the SD/LDM ones (``time_embed.0``, ``input_blocks.<i>.<j>``, ``middle_block.0-2``,
``output_blocks.<i>.<j>``, ``out.0/2``; the ControlNet adds ``zero_convs.<i>.0`` and ``middle_block_out.0``).
Level ``l`` works at downsampling factor ``ds = 2**l``; it has attention iff ``ds`` is in
``attention_resolutions`` (the LDM convention: [4, 2, 1] = levels 0-2).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from diffir.archs.common import checked_bool, checked_int
from diffir.archs.diffbir.unet_blocks import (
    Downsample,
    EmbedSequential,
    ResBlock,
    SpatialTransformer,
    Upsample,
    resblock_norm,
    timestep_embedding,
)
from diffir.errors import ConfigError

#: yaml/json keys of the LDM configs that do not change the network (``legacy`` False is assumed: heads come
#: from ``num_head_channels``; ``use_checkpoint`` is activation checkpointing; ``image_size`` is unused).
_INERT_LDM_KEYS = ("use_checkpoint", "image_size", "use_spatial_transformer", "legacy", "use_fp16", "num_heads")


@dataclass(frozen=True)
class UNetConfig:
    """Hyper-parameters of the SD UNet (``hint_channels == 0``) or of the IRControlNet (``hint_channels > 0``:
    its first conv takes ``in_channels + hint_channels``; ``out_channels`` is then unused and set to
    ``in_channels``).

    ``attention_resolutions`` is stored canonically (factors of existing levels only, largest first) and
    ``num_head_channels`` is the width of one head (heads = level width // num_head_channels).
    """

    in_channels: int = 4
    out_channels: int = 4
    model_channels: int = 320
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (4, 2, 1)
    num_head_channels: int = 64
    transformer_depth: int = 1
    context_dim: int = 1024
    use_linear_in_transformer: bool = True
    hint_channels: int = 0
    meta: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("in_channels", "out_channels", "model_channels", "num_res_blocks", "num_head_channels",
                     "transformer_depth", "context_dim"):
            checked_int(name, getattr(self, name), 1, 8192)
        checked_int("hint_channels", self.hint_channels, 0, 8192)
        checked_bool("use_linear_in_transformer", self.use_linear_in_transformer)
        mult = tuple(checked_int(f"channel_mult[{i}]", m, 1, 64) for i, m in enumerate(self.channel_mult))
        if not mult:
            raise ConfigError("channel_mult must list at least one level")
        # Canonical form: only factors of existing levels, largest first, so that configs building the same
        # network compare equal (the released yaml lists [4, 2, 1]; a 2-level net only has factors 2 and 1).
        levels = {2**level for level in range(len(mult))}
        attention = tuple(sorted({int(r) for r in self.attention_resolutions} & levels, reverse=True))
        if self.hint_channels:  # the ControlNet has no output conv: out_channels is unused, canonically in_channels
            object.__setattr__(self, "out_channels", self.in_channels)
        object.__setattr__(self, "channel_mult", mult)
        object.__setattr__(self, "attention_resolutions", attention)
        for level in range(len(mult)):
            width = self.model_channels * mult[level]
            if width % 32:
                raise ConfigError(f"level {level} has {width} channels, not a multiple of the 32 norm groups")
            # Heads = width // num_head_channels, as officially (a remainder only narrows the attention width).
            if width < self.num_head_channels and (level in self.attention_levels() or level == len(mult) - 1):
                raise ConfigError(f"level {level} has {width} channels, fewer than num_head_channels "
                                  f"{self.num_head_channels}: no attention head fits (SD 2.x uses 64)")

    @classmethod
    def from_ldm(cls, config: Mapping[str, Any]) -> UNetConfig:
        """From the official yaml/json ``params`` (``unet_cfg`` / ``controlnet_cfg``)."""
        if config.get("legacy", False) or config.get("num_head_channels", 64) == -1:
            raise ConfigError("only legacy=False UNets with num_head_channels set (SD 2.x) are supported")
        wanted = {k: v for k, v in config.items() if k not in _INERT_LDM_KEYS}
        unknown = sorted(set(wanted) - {f for f in cls.__dataclass_fields__ if f != "meta"})
        if unknown:
            raise ConfigError(f"unknown UNet config key(s) {', '.join(unknown)}")
        for key in ("channel_mult", "attention_resolutions"):
            if key in wanted:
                wanted[key] = tuple(wanted[key])
        return cls(**wanted)

    def to_dict(self) -> dict[str, Any]:
        """The constructor arguments as JSON-ready values (``UNetConfig(**d)`` rebuilds it; ``meta`` is left out)."""
        return {f: list(v) if isinstance(v, tuple) else v
                for f, v in ((f, getattr(self, f)) for f in self.__dataclass_fields__ if f != "meta")}

    def attention_levels(self) -> list[int]:
        return [level for level in range(len(self.channel_mult)) if 2**level in self.attention_resolutions]

    @property
    def time_embed_dim(self) -> int:
        return 4 * self.model_channels


#: The released configurations (DiffBIR configs/inference/cldm.yaml): SD 2.1-base UNet and the IRControlNet.
SD21_UNET = UNetConfig()
SD21_CONTROLNET = UNetConfig(hint_channels=4)


def _transformer(config: UNetConfig, channels: int) -> SpatialTransformer:
    heads = channels // config.num_head_channels
    return SpatialTransformer(channels, heads, config.num_head_channels, config.transformer_depth,
                              config.context_dim, config.use_linear_in_transformer)


class _Encoder(nn.Module):
    """time_embed, input_blocks and middle_block: shared by the UNet and the ControlNet (the ControlNet adds
    its zero convs between them, so registration order is left to the subclasses)."""

    def _build_encoder(self, config: UNetConfig) -> list[int]:
        """Registers ``time_embed`` and ``input_blocks``; returns the width after each input block."""
        self.config = config
        mc = config.model_channels
        self.time_embed = nn.Sequential(nn.Linear(mc, config.time_embed_dim), nn.SiLU(),
                                        nn.Linear(config.time_embed_dim, config.time_embed_dim))
        first = nn.Conv2d(config.in_channels + config.hint_channels, mc, 3, 1, 1)
        blocks = [EmbedSequential(first)]
        widths = [mc]
        ch = mc
        attention = set(config.attention_levels())
        for level, mult in enumerate(config.channel_mult):
            for _ in range(config.num_res_blocks):
                layers: list[nn.Module] = [ResBlock(ch, config.time_embed_dim, mc * mult)]
                ch = mc * mult
                if level in attention:
                    layers.append(_transformer(config, ch))
                blocks.append(EmbedSequential(*layers))
                widths.append(ch)
            if level != len(config.channel_mult) - 1:
                blocks.append(EmbedSequential(Downsample(ch)))
                widths.append(ch)
        self.input_blocks = nn.ModuleList(blocks)
        return widths

    def _middle(self, ch: int) -> EmbedSequential:
        emb = self.config.time_embed_dim
        return EmbedSequential(ResBlock(ch, emb), _transformer(self.config, ch), ResBlock(ch, emb))

    def _embed(self, t: torch.Tensor) -> torch.Tensor:
        t_emb = timestep_embedding(t, self.config.model_channels)
        return self.time_embed(t_emb.to(self.time_embed[0].weight.dtype))


class UNet(_Encoder):
    """``ControlledUnetModel``: the SD UNet; ``control`` (the ControlNet outputs, scaled) is added after the
    middle block (last entry) and to each skip (the rest, popped last-first)."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        if config.hint_channels:
            raise ConfigError("a UNet config has hint_channels 0 (hint_channels is for the ControlNet)")
        widths = self._build_encoder(config)
        mc, ch = config.model_channels, widths[-1]
        self.middle_block = self._middle(ch)
        attention = set(config.attention_levels())
        blocks = []
        for level, mult in reversed(list(enumerate(config.channel_mult))):
            for i in range(config.num_res_blocks + 1):
                layers: list[nn.Module] = [ResBlock(ch + widths.pop(), config.time_embed_dim, mc * mult)]
                ch = mc * mult
                if level in attention:
                    layers.append(_transformer(config, ch))
                if level and i == config.num_res_blocks:
                    layers.append(Upsample(ch))
                blocks.append(EmbedSequential(*layers))
        self.output_blocks = nn.ModuleList(blocks)
        self.out = nn.Sequential(resblock_norm(ch), nn.SiLU(), nn.Conv2d(ch, config.out_channels, 3, 1, 1))

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor | None,
                control: list[torch.Tensor] | None = None) -> torch.Tensor:
        """``control`` is consumed (popped) like the official list; pass a copy to keep it."""
        emb = self._embed(t)
        skips = []
        h = x
        for block in self.input_blocks:
            h = block(h, emb, context)
            skips.append(h)
        h = self.middle_block(h, emb, context)
        if control is not None:
            if len(control) != len(skips) + 1:
                raise ValueError(f"the UNet takes {len(skips) + 1} control tensors, got {len(control)}")
            h = h + control.pop()
        for block in self.output_blocks:
            skip = skips.pop() if control is None else skips.pop() + control.pop()
            h = block(torch.cat([h, skip], dim=1), emb, context)
        return self.out(h.type(x.dtype))


class ControlNet(_Encoder):
    """IRControlNet: the UNet encoder + middle block on concat(x_t, hint); one 1×1 ``zero_convs.<i>.0`` per input
    block and ``middle_block_out.0``.  Returns the unscaled controls, input-block order, middle last."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        if not config.hint_channels:
            raise ConfigError("a ControlNet config needs hint_channels > 0 (the condition latent's channels)")
        widths = self._build_encoder(config)
        self.zero_convs = nn.ModuleList(EmbedSequential(nn.Conv2d(w, w, 1)) for w in widths)
        self.middle_block = self._middle(widths[-1])
        self.middle_block_out = EmbedSequential(nn.Conv2d(widths[-1], widths[-1], 1))

    def forward(self, x: torch.Tensor, hint: torch.Tensor, t: torch.Tensor,
                context: torch.Tensor | None) -> list[torch.Tensor]:
        emb = self._embed(t)
        h = torch.cat([x, hint], dim=1)
        controls = []
        for block, zero_conv in zip(self.input_blocks, self.zero_convs, strict=True):
            h = block(h, emb, context)
            controls.append(zero_conv(h, emb, context))
        h = self.middle_block(h, emb, context)
        controls.append(self.middle_block_out(h, emb, context))
        return controls
