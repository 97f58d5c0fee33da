"""Stable Diffusion's VAE (LDM ``AutoencoderKL``): encoder → ``quant_conv`` → diagonal Gaussian posterior;
``post_quant_conv`` → decoder.

Keys: ``encoder.conv_in``, ``encoder.down.<i>.block.<j>``, ``encoder.down.<i>.downsample.conv``,
``encoder.mid.block_1/attn_1/block_2``, ``encoder.norm_out``, ``encoder.conv_out``, ``quant_conv``,
``post_quant_conv``, ``decoder.conv_in``, ``decoder.mid...``, ``decoder.up.<i>...`` (``up.<i>`` is level i,
although the decoder runs the levels from the last to the first), ``decoder.norm_out``, ``decoder.conv_out``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from diffir.archs.common import checked_bool, checked_int
from diffir.archs.diffbir.vae_blocks import Level, MidBlock, vae_norm
from diffir.errors import ConfigError

#: ddconfig keys that do not change the network at inference.
_INERT_DDCONFIG_KEYS = ("dropout",)


@dataclass(frozen=True)
class VAEConfig:
    """``attn_resolutions`` are feature-map sizes, as in the LDM yaml: level i (size ``resolution // 2**i``) has
    attention iff its size is listed.  ``resolution`` only serves that conversion and is not stored in the
    tensors (every released SD VAE has ``attn_resolutions: []``)."""

    embed_dim: int = 4
    z_channels: int = 4
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = ()
    in_channels: int = 3
    out_ch: int = 3
    double_z: bool = True
    resolution: int = 256
    meta: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("embed_dim", "z_channels", "ch", "num_res_blocks", "in_channels", "out_ch", "resolution"):
            checked_int(name, getattr(self, name), 1, 65536)
        # The posterior needs a mean and a log-variance per latent channel (the official class asserts it too).
        if not checked_bool("double_z", self.double_z):
            raise ConfigError("double_z must be true: the Gaussian posterior needs mean and log-variance channels")
        mult = tuple(checked_int(f"ch_mult[{i}]", m, 1, 64) for i, m in enumerate(self.ch_mult))
        if not mult:
            raise ConfigError("ch_mult must list at least one level")
        object.__setattr__(self, "ch_mult", mult)
        object.__setattr__(self, "attn_resolutions", tuple(sorted({int(r) for r in self.attn_resolutions},
                                                                  reverse=True)))

    @classmethod
    def from_ldm(cls, ddconfig: Mapping[str, Any], embed_dim: int) -> VAEConfig:
        """From the official yaml/json (``first_stage_config.params``: ``ddconfig`` and ``embed_dim``)."""
        wanted = {k: v for k, v in ddconfig.items() if k not in _INERT_DDCONFIG_KEYS}
        unknown = sorted(set(wanted) - {f for f in cls.__dataclass_fields__ if f not in ("meta", "embed_dim")})
        if unknown:
            raise ConfigError(f"unknown VAE ddconfig key(s) {', '.join(unknown)}")
        for key in ("ch_mult", "attn_resolutions"):
            if key in wanted:
                wanted[key] = tuple(wanted[key])
        return cls(embed_dim=embed_dim, **wanted)

    def to_dict(self) -> dict[str, Any]:
        """The constructor arguments as JSON-ready values (``VAEConfig(**d)`` rebuilds it; ``meta`` is left out)."""
        return {f: list(v) if isinstance(v, tuple) else v
                for f, v in ((f, getattr(self, f)) for f in self.__dataclass_fields__ if f != "meta")}

    def has_attention(self, level: int) -> bool:
        return self.resolution // 2**level in self.attn_resolutions


#: The released SD VAE (the same for SD 1.x and 2.x).
SD_VAE = VAEConfig()


class Encoder(nn.Module):
    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        ch, last = config.ch, len(config.ch_mult) - 1
        widths = [ch * m for m in (1, *config.ch_mult)]
        self.conv_in = nn.Conv2d(config.in_channels, ch, 3, 1, 1)
        self.down = nn.ModuleList(
            Level(widths[i], widths[i + 1], config.num_res_blocks, config.has_attention(i),
                  "down" if i != last else None)
            for i in range(last + 1)
        )
        self.mid = MidBlock(widths[-1])
        self.norm_out = vae_norm(widths[-1])
        self.conv_out = nn.Conv2d(widths[-1], 2 * config.z_channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        widths = [config.ch * m for m in config.ch_mult]
        self.conv_in = nn.Conv2d(config.z_channels, widths[-1], 3, 1, 1)
        self.mid = MidBlock(widths[-1])
        # up.<i> is level i; level i receives the output of level i+1 (or of the mid block for the last level).
        self.up = nn.ModuleList(
            Level(widths[min(i + 1, len(widths) - 1)], widths[i], config.num_res_blocks + 1,
                  config.has_attention(i), "up" if i != 0 else None)
            for i in range(len(widths))
        )
        self.norm_out = vae_norm(widths[0])
        self.conv_out = nn.Conv2d(widths[0], config.out_ch, 3, 1, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))


@dataclass
class Posterior:
    """Diagonal Gaussian over the latent: ``moments`` = [mean ‖ logvar] along channels, logvar clamped to
    [−30, 20] as the official class does (keeps exp finite)."""

    moments: torch.Tensor

    def __post_init__(self) -> None:
        self.mean, logvar = torch.chunk(self.moments, 2, dim=1)
        self.logvar = torch.clamp(logvar, -30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)

    def mode(self) -> torch.Tensor:
        return self.mean

    def sample(self, noise: torch.Tensor) -> torch.Tensor:
        """mean + std·noise, for a standard-normal ``noise`` of the mean's shape (drawn by the caller: officially
        ``torch.randn(mean.shape)`` on the CPU generator, see ``ControlLDM.vae_encode``)."""
        return self.mean + self.std * noise


class AutoencoderKL(nn.Module):
    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.quant_conv = nn.Conv2d(2 * config.z_channels, 2 * config.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(config.embed_dim, config.z_channels, 1)

    def encode(self, x: torch.Tensor) -> Posterior:
        """Posterior of an image in [−1, 1], (B, in_channels, H, W) with H, W multiples of 2**(levels−1)."""
        return Posterior(self.quant_conv(self.encoder(x)))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Image in about [−1, 1] from an *unscaled* latent (B, embed_dim, h, w)."""
        return self.decoder(self.post_quant_conv(z))
