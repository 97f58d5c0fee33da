"""SCUNet (Swin-Conv-UNet), DiffBIR's v2 denoising cleaner.

Clean-room re-implementation from the parity README §7.2 and spec §B.2, with the official key names
(``m_head``, ``m_down1..3``, ``m_body``, ``m_up3..1``, ``m_tail``; blocks hold ``trans_block``, ``conv1_1``,
``conv1_2``, ``conv_block``).  ``head_dim`` 32, window 8 and the 256 constructor resolution are fixed in the class.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from diffir.archs import common
from diffir.archs.diffbir.swinir import relative_offsets, window_partition, window_reverse
from diffir.errors import ConfigError

HEAD_DIM = 32
WINDOW = 8
INPUT_RESOLUTION = 256  # official default constructor argument; it only decides which blocks shift
PAD_MULTIPLE = 64  # three 2× downsamplings, then 8×8 windows


@dataclass(frozen=True)
class SCUNetConfig:
    """The official constructor arguments; defaults are ``scunet_color_real_psnr`` (``configs/inference``)."""

    in_nc: int = 3
    config: tuple[int, ...] = (4,) * 7  # blocks of down1, down2, down3, body, up3, up2, up1
    dim: int = 64

    def __post_init__(self) -> None:
        common.checked_int("in_nc", self.in_nc, 1, common.MAX_CHANNELS)
        object.__setattr__(self, "config", common.checked_ints("config", self.config, 7, 0, common.MAX_DEPTH))
        common.checked_int("dim", self.dim, 1, common.MAX_WIDTH)
        if self.dim % (2 * HEAD_DIM):
            # The first level's transformer half is dim/2 wide and is split into 32-wide heads.
            raise ConfigError(f"SCUNet dim must be a multiple of {2 * HEAD_DIM}, got {self.dim}")


def wrap_mask(h_windows: int, w_windows: int, shift: int) -> torch.Tensor:
    """(nW, N, N) bool, True where attention is blocked: pairs that straddle the wrap-around in the last window row
    or column of the rolled grid (the official mask, applied with −inf)."""
    low = torch.arange(WINDOW) < WINDOW - shift
    straddles = low[:, None] != low[None, :]  # (query coordinate, key coordinate)
    n = WINDOW * WINDOW
    rows = straddles[:, None, :, None].expand(WINDOW, WINDOW, WINDOW, WINDOW).reshape(n, n)
    cols = straddles[None, :, None, :].expand(WINDOW, WINDOW, WINDOW, WINDOW).reshape(n, n)
    mask = torch.zeros(h_windows, w_windows, n, n, dtype=torch.bool)
    mask[-1] |= rows
    mask[:, -1] |= cols
    return mask.view(h_windows * w_windows, n, n)


class WMSA(nn.Module):
    """(Shifted) window multi-head self-attention on (B, H, W, C) maps."""

    def __init__(self, dim: int, shifted: bool) -> None:
        super().__init__()
        self.heads, self.shifted = dim // HEAD_DIM, shifted
        # Stored as (heads, 2w−1, 2w−1), indexed by (dy + w − 1, dx + w − 1).
        self.relative_position_params = nn.Parameter(torch.zeros(self.heads, 2 * WINDOW - 1, 2 * WINDOW - 1))
        self.embedding_layer = nn.Linear(dim, 3 * dim)
        self.linear = nn.Linear(dim, dim)

    def relative_bias(self) -> torch.Tensor:
        dy, dx = (offset.to(self.relative_position_params.device) for offset in relative_offsets(WINDOW))
        return self.relative_position_params[:, dy, dx]  # (heads, N, N)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shift = WINDOW // 2
        if self.shifted:
            x = torch.roll(x, (-shift, -shift), dims=(1, 2))
        b, h, w, c = x.shape
        hw, ww, n = h // WINDOW, w // WINDOW, WINDOW * WINDOW
        x = window_partition(x, WINDOW)  # (B, nW, N, C), row-major windows as the official rearrange
        # Channels are [q heads…, k heads…, v heads…], each head_dim wide: the same (3, heads, d) split.
        q, k, v = self.embedding_layer(x).view(b, hw * ww, n, 3, self.heads, HEAD_DIM).permute(3, 0, 1, 4, 2, 5)
        bias = self.relative_bias()[None]  # (1, heads, N, N)
        if self.shifted:
            blocked = wrap_mask(hw, ww, shift).to(bias.device)[:, None]
            bias = bias.masked_fill(blocked, float("-inf"))  # (nW, heads, N, N)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))  # scale head_dim^-1/2
        out = window_reverse(self.linear(out.transpose(2, 3).reshape(b, hw * ww, n, c)), WINDOW, h, w)
        if self.shifted:
            out = torch.roll(out, (shift, shift), dims=(1, 2))
        return out


class TransBlock(nn.Module):
    """Pre-norm Swin block: W-MSA then a 4× MLP with exact GELU (official ``Block``)."""

    def __init__(self, dim: int, shifted: bool) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.msa = WMSA(dim, shifted)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.msa(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class ConvTransBlock(nn.Module):
    """1×1 conv, split into a residual conv half and a Swin half, 1×1 conv of both, plus the input."""

    def __init__(self, half: int, shifted: bool) -> None:
        super().__init__()
        self.half = half
        self.trans_block = TransBlock(half, shifted)
        self.conv1_1 = nn.Conv2d(2 * half, 2 * half, 1)
        self.conv1_2 = nn.Conv2d(2 * half, 2 * half, 1)
        self.conv_block = nn.Sequential(nn.Conv2d(half, half, 3, 1, 1, bias=False), nn.ReLU(),
                                        nn.Conv2d(half, half, 3, 1, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv_x, trans_x = torch.split(self.conv1_1(x), (self.half, self.half), dim=1)
        conv_x = self.conv_block(conv_x) + conv_x
        trans_x = self.trans_block(trans_x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return x + self.conv1_2(torch.cat((conv_x, trans_x), dim=1))


def stage_blocks(count: int, half: int, level: int) -> list[nn.Module]:
    """Blocks of one stage: odd blocks shift, unless the stage's constructor resolution fits in one window."""
    resolution = INPUT_RESOLUTION >> level
    return [ConvTransBlock(half, bool(i % 2) and resolution > WINDOW) for i in range(count)]


class SCUNet(nn.Module):
    """SCUNet: RGB in [0, 1] → denoised image of the same size (replicate-padded to 64 inside, cropped back)."""

    def __init__(self, config: SCUNetConfig | None = None) -> None:
        super().__init__()
        c = self.config = config or SCUNetConfig()
        d, n = c.dim, c.config
        self.m_head = nn.Sequential(nn.Conv2d(c.in_nc, d, 3, 1, 1, bias=False))
        self.m_down1 = nn.Sequential(*stage_blocks(n[0], d // 2, 0), nn.Conv2d(d, 2 * d, 2, 2, 0, bias=False))
        self.m_down2 = nn.Sequential(*stage_blocks(n[1], d, 1), nn.Conv2d(2 * d, 4 * d, 2, 2, 0, bias=False))
        self.m_down3 = nn.Sequential(*stage_blocks(n[2], 2 * d, 2), nn.Conv2d(4 * d, 8 * d, 2, 2, 0, bias=False))
        self.m_body = nn.Sequential(*stage_blocks(n[3], 4 * d, 3))
        self.m_up3 = nn.Sequential(nn.ConvTranspose2d(8 * d, 4 * d, 2, 2, 0, bias=False), *stage_blocks(n[4], 2 * d, 2))
        self.m_up2 = nn.Sequential(nn.ConvTranspose2d(4 * d, 2 * d, 2, 2, 0, bias=False), *stage_blocks(n[5], d, 1))
        self.m_up1 = nn.Sequential(nn.ConvTranspose2d(2 * d, d, 2, 2, 0, bias=False), *stage_blocks(n[6], d // 2, 0))
        self.m_tail = nn.Sequential(nn.Conv2d(d, c.in_nc, 3, 1, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        x1 = self.m_head(F.pad(x, (0, -w % PAD_MULTIPLE, 0, -h % PAD_MULTIPLE), mode="replicate"))
        x2 = self.m_down1(x1)
        x3 = self.m_down2(x2)
        x4 = self.m_down3(x3)
        x = self.m_body(x4)
        x = self.m_up3(x + x4)
        x = self.m_up2(x + x3)
        x = self.m_up1(x + x2)
        return self.m_tail(x + x1)[..., :h, :w]
