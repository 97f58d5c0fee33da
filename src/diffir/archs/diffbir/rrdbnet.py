"""RRDBNet (ESRGAN generator) as BSRNet, DiffBIR's v2 super-resolution cleaner.

Clean-room re-implementation from the parity README §7.2 and spec §B.2, with the official key names
(``conv_first``, ``RRDB_trunk.<i>.RDB<1-3>.conv<1-5>``, ``trunk_conv``, ``upconv1/2``, ``HRconv``, ``conv_last``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from diffir.archs import common
from diffir.errors import ConfigError

SLOPE = 0.2  # LeakyReLU slope everywhere in RRDBNet
RESIDUAL_SCALE = 0.2  # dense blocks and RRDBs add 0.2·(their output) to their input


@dataclass(frozen=True)
class RRDBConfig:
    """The official constructor arguments; defaults are BSRNet's (``configs/inference/bsrnet.yaml``)."""

    in_nc: int = 3
    out_nc: int = 3
    nf: int = 64
    nb: int = 23
    gc: int = 32
    sf: int = 4

    def __post_init__(self) -> None:
        for name in ("in_nc", "out_nc"):
            common.checked_int(name, getattr(self, name), 1, common.MAX_CHANNELS)
        for name in ("nf", "gc"):
            common.checked_int(name, getattr(self, name), 1, common.MAX_WIDTH)
        common.checked_int("nb", self.nb, 1, common.MAX_DEPTH)
        if self.sf not in (2, 4):
            # The official class has one nearest×2 stage, plus a second one only for sf 4.
            raise ConfigError(f"RRDBNet sf must be 2 or 4, got {self.sf}")


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3×3 convs; out = 0.2·conv5 + x."""

    def __init__(self, nf: int, gc: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(nf, gc, 3, 1, 1)
        self.conv2 = nn.Conv2d(nf + gc, gc, 3, 1, 1)
        self.conv3 = nn.Conv2d(nf + 2 * gc, gc, 3, 1, 1)
        self.conv4 = nn.Conv2d(nf + 3 * gc, gc, 3, 1, 1)
        self.conv5 = nn.Conv2d(nf + 4 * gc, nf, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            features.append(F.leaky_relu(conv(torch.cat(features, 1)), SLOPE))
        return self.conv5(torch.cat(features, 1)) * RESIDUAL_SCALE + x


class RRDB(nn.Module):
    """Three dense blocks with an outer scaled residual."""

    def __init__(self, nf: int, gc: int) -> None:
        super().__init__()
        self.RDB1 = ResidualDenseBlock(nf, gc)
        self.RDB2 = ResidualDenseBlock(nf, gc)
        self.RDB3 = ResidualDenseBlock(nf, gc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.RDB3(self.RDB2(self.RDB1(x))) * RESIDUAL_SCALE + x


class RRDBNet(nn.Module):
    """BSRNet: RGB in [0, 1] → ×sf output (no mean shift, no clamp, as the official code)."""

    def __init__(self, config: RRDBConfig | None = None) -> None:
        super().__init__()
        c = self.config = config or RRDBConfig()
        self.conv_first = nn.Conv2d(c.in_nc, c.nf, 3, 1, 1)
        self.RRDB_trunk = nn.Sequential(*(RRDB(c.nf, c.gc) for _ in range(c.nb)))
        self.trunk_conv = nn.Conv2d(c.nf, c.nf, 3, 1, 1)
        self.upconv1 = nn.Conv2d(c.nf, c.nf, 3, 1, 1)
        self.upconv2 = nn.Conv2d(c.nf, c.nf, 3, 1, 1) if c.sf == 4 else None
        self.HRconv = nn.Conv2d(c.nf, c.nf, 3, 1, 1)
        self.conv_last = nn.Conv2d(c.nf, c.out_nc, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fea = self.conv_first(x)
        fea = fea + self.trunk_conv(self.RRDB_trunk(fea))
        for conv in (self.upconv1, self.upconv2):
            if conv is not None:
                fea = F.leaky_relu(conv(F.interpolate(fea, scale_factor=2, mode="nearest")), SLOPE)
        return self.conv_last(F.leaky_relu(self.HRconv(fea), SLOPE))
