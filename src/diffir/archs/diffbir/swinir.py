"""SwinIR as DiffBIR's stage-1 cleaner ("nearest+conv" upsampler fed by a pixel-unshuffled input).

Clean-room re-implementation from the parity README §7.1 and spec §B.2.  Sub-module names and buffers follow the
official ``state_dict`` layout exactly (``relative_position_index`` in every block, ``attn_mask`` only in shifted
blocks, sized for ``img_size``) so the released ``.ckpt``/``.pth`` files load with ``strict=True``.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from diffir.archs import common
from diffir.errors import ConfigError, ImageError

RGB_MEAN = (0.4488, 0.4371, 0.4040)
UPSAMPLERS = ("nearest+conv",)
RESI_CONNECTIONS = ("1conv",)
NUM_FEAT = 64  # width of the official upsampling tail, fixed in the class
MASKED = -100.0  # the official shift mask is -100 between regions, not -inf


@dataclass(frozen=True)
class SwinIRConfig:
    """The official constructor arguments; defaults are DiffBIR's ``configs/inference/swinir.yaml``."""

    img_size: int = 64
    patch_size: int = 1
    in_chans: int = 3
    embed_dim: int = 180
    depths: tuple[int, ...] = (6,) * 8
    num_heads: tuple[int, ...] = (6,) * 8
    window_size: int = 8
    mlp_ratio: float = 2.0
    sf: int = 8
    img_range: float = 1.0
    upsampler: str = "nearest+conv"
    resi_connection: str = "1conv"
    unshuffle: bool = True
    unshuffle_scale: int | None = 8

    def __post_init__(self) -> None:
        fix = object.__setattr__  # frozen: normalise json/yaml lists to tuples and ints to floats once
        for name, high in (("depths", common.MAX_DEPTH), ("num_heads", common.MAX_HEADS)):
            value = getattr(self, name)
            if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or not value:
                raise ConfigError(f"SwinIR {name} must be a non-empty list of integers, got {value!r}")
            fix(self, name, tuple(common.checked_int(f"{name}[{i}]", v, 1, high) for i, v in enumerate(value)))
        fix(self, "mlp_ratio", common.checked_float("mlp_ratio", self.mlp_ratio, 0.0, common.MAX_FACTOR))
        fix(self, "img_range", common.checked_float("img_range", self.img_range, 0.0, 1e6))
        for name in ("img_size", "patch_size", "in_chans", "embed_dim", "window_size"):
            common.checked_int(name, getattr(self, name), 1, common.MAX_WIDTH)
        common.checked_bool("unshuffle", self.unshuffle)
        rules = (
            (self.upsampler in UPSAMPLERS, f"upsampler {self.upsampler!r} is not supported; use 'nearest+conv'"),
            (self.resi_connection in RESI_CONNECTIONS, f"resi_connection {self.resi_connection!r} is not supported"),
            (self.sf in (4, 8), f"sf must be 4 or 8 with the 'nearest+conv' upsampler, got {self.sf!r}"),
            # The official conv_first unshuffles by sf but sizes its conv for unshuffle_scale: they must agree.
            (not self.unshuffle or self.unshuffle_scale == self.sf,
             f"unshuffle_scale ({self.unshuffle_scale}) must equal sf ({self.sf})"),
            (len(self.depths) == len(self.num_heads), "depths and num_heads must have the same length"),
            (all(self.embed_dim % h == 0 for h in self.num_heads), "embed_dim must be divisible by every head count"),
        )
        problem = next((message for ok, message in rules if not ok), None)
        if problem:
            raise ConfigError(f"SwinIR {problem}")


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) → (B, nW, window², C), windows in row-major order."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // window) * (w // window), window * window, c)


def window_reverse(windows: torch.Tensor, window: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`."""
    b, c = windows.shape[0], windows.shape[-1]
    x = windows.view(b, h // window, w // window, window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, c)


def relative_offsets(window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(dy + w − 1, dx + w − 1) of every (query, key) pair of a window, each (N, N) int64, in [0, 2w − 2]."""
    ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    return ys[:, None] - ys[None, :] + window - 1, xs[:, None] - xs[None, :] + window - 1


def relative_position_index(window: int) -> torch.Tensor:
    """(N, N) int64 index into the flat (2w−1)² bias table (the official buffer)."""
    dy, dx = relative_offsets(window)
    return dy * (2 * window - 1) + dx


def shift_mask(h: int, w: int, window: int, shift: int) -> torch.Tensor:
    """(nW, N, N) float32: −100 between tokens of different regions of the rolled grid, else 0 (official rule)."""
    regions = torch.zeros(1, h, w, 1)
    cuts = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    for i, rows in enumerate(cuts):
        for j, cols in enumerate(cuts):
            regions[:, rows, cols, :] = 3 * i + j
    ids = window_partition(regions, window)[0, :, :, 0]  # (nW, N)
    differ = ids[:, None, :] != ids[:, :, None]
    return torch.zeros(differ.shape).masked_fill(differ, MASKED)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows with a learned relative-position bias."""

    def __init__(self, dim: int, window: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x: (B, nW, N, C); mask: (nW, N, N) or None."""
        b, nw, n, c = x.shape
        # Official channel layout of qkv: (3, heads, head_dim).
        q, k, v = self.qkv(x).view(b, nw, n, 3, self.heads, c // self.heads).permute(3, 0, 1, 4, 2, 5)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(n, n, self.heads).permute(2, 0, 1)  # (heads, N, N)
        if mask is not None:
            bias = bias + mask[:, None].to(bias.dtype)  # (nW, heads, N, N)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))  # scale head_dim^-1/2
        return self.proj(out.transpose(2, 3).reshape(b, nw, n, c))


class SwinBlock(nn.Module):
    """Swin transformer block; ``shift`` > 0 rolls the grid and masks across the wrapped regions."""

    def __init__(self, dim: int, resolution: int, heads: int, window: int, shift: int, mlp_ratio: float) -> None:
        super().__init__()
        if resolution <= window:  # official constructor rule: one window covers the grid, no shift
            window, shift = resolution, 0
        self.resolution, self.window, self.shift = resolution, window, shift
        # A buffer registered as None is absent from state_dict: unshifted blocks have no attn_mask key.
        self.register_buffer("attn_mask", shift_mask(resolution, resolution, window, shift) if shift else None)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, heads)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(OrderedDict(fc1=nn.Linear(dim, hidden), act=nn.GELU(), fc2=nn.Linear(hidden, dim)))

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        h, w = size
        b, _, c = x.shape
        y = self.norm1(x).view(b, h, w, c)
        mask = None
        if self.shift:
            y = torch.roll(y, (-self.shift, -self.shift), dims=(1, 2))
            # Official quirk: the stored buffer is used only when the token grid equals img_size; any other grid
            # recomputes the same rule for its own size.
            same = (h, w) == (self.resolution, self.resolution)
            mask = self.attn_mask if same else shift_mask(h, w, self.window, self.shift).to(x.device)
        y = window_reverse(self.attn(window_partition(y, self.window), mask), self.window, h, w)
        if self.shift:
            y = torch.roll(y, (self.shift, self.shift), dims=(1, 2))
        x = x + y.reshape(b, h * w, c)
        return x + self.mlp(self.norm2(x))


class BasicLayer(nn.Module):
    """The Swin blocks of one RSTB (official ``residual_group``): odd blocks shift by window_size // 2."""

    def __init__(self, c: SwinIRConfig, depth: int, heads: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinBlock(c.embed_dim, c.img_size // c.patch_size, heads, c.window_size, c.window_size // 2 * (i % 2),
                      c.mlp_ratio) for i in range(depth))

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, size)
        return x


def tokens_to_map(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:  # the official PatchUnEmbed
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], *size)


def map_to_tokens(x: torch.Tensor) -> torch.Tensor:  # the official PatchEmbed without norm: row-major tokens
    return x.flatten(2).transpose(1, 2)


class RSTB(nn.Module):
    """Residual Swin transformer block: blocks, un-embed, 3×3 conv, re-embed (no norm), plus the input."""

    def __init__(self, config: SwinIRConfig, depth: int, heads: int) -> None:
        super().__init__()
        self.residual_group = BasicLayer(config, depth, heads)
        self.conv = nn.Conv2d(config.embed_dim, config.embed_dim, 3, 1, 1)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return map_to_tokens(self.conv(tokens_to_map(self.residual_group(x, size), size))) + x


class PatchEmbed(nn.Module):
    """Feature map → tokens, then LayerNorm (the official ``patch_embed.norm``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(map_to_tokens(x))


class SwinIR(nn.Module):
    """SwinIR with the official key layout.  ``forward`` takes RGB in [0, 1] and returns the official output."""

    def __init__(self, config: SwinIRConfig | None = None) -> None:
        super().__init__()
        c = self.config = config or SwinIRConfig()
        dim = c.embed_dim
        if c.unshuffle:
            self.conv_first = nn.Sequential(nn.PixelUnshuffle(c.sf),
                                            nn.Conv2d(c.in_chans * c.unshuffle_scale ** 2, dim, 3, 1, 1))
        else:
            self.conv_first = nn.Conv2d(c.in_chans, dim, 3, 1, 1)
        self.patch_embed = PatchEmbed(dim)
        self.layers = nn.ModuleList(RSTB(c, d, h) for d, h in zip(c.depths, c.num_heads, strict=True))
        self.norm = nn.LayerNorm(dim)
        self.conv_after_body = nn.Conv2d(dim, dim, 3, 1, 1)
        # LeakyReLU default slope 0.01 here, 0.2 in the rest of the tail (official quirk).
        self.conv_before_upsample = nn.Sequential(nn.Conv2d(dim, NUM_FEAT, 3, 1, 1), nn.LeakyReLU())
        self.conv_up1 = nn.Conv2d(NUM_FEAT, NUM_FEAT, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(NUM_FEAT, NUM_FEAT, 3, 1, 1)
        self.conv_up3 = nn.Conv2d(NUM_FEAT, NUM_FEAT, 3, 1, 1) if c.sf == 8 else None
        self.conv_hr = nn.Conv2d(NUM_FEAT, NUM_FEAT, 3, 1, 1)
        self.conv_last = nn.Conv2d(NUM_FEAT, c.in_chans, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.config
        h, w = x.shape[-2:]
        # Official padding: reflect to a multiple of window_size in *pixels* (not of sf·window); the final crop
        # to (sf·H, sf·W) removes nothing after unshuffling, so the output keeps the padded size.
        x = F.pad(x, (0, -w % c.window_size, 0, -h % c.window_size), mode="reflect")
        mean = torch.tensor(RGB_MEAN if c.in_chans == 3 else (0.0,), dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        step = min(c.window_size, c.img_size // c.patch_size) * (c.sf if c.unshuffle else 1)
        if x.shape[-2] % step or x.shape[-1] % step:
            raise ImageError(f"SwinIR needs image sides that are multiples of {step} pixels (the token grid must "
                             f"tile into windows), got {h}x{w}: pad the image first")
        x = self.conv_first((x - mean) * c.img_range)
        x = self.conv_after_body(self.forward_features(x)) + x
        x = self.conv_before_upsample(x)
        for conv in (self.conv_up1, self.conv_up2, self.conv_up3):
            if conv is not None:
                x = F.leaky_relu(conv(F.interpolate(x, scale_factor=2, mode="nearest")), 0.2)
        x = self.conv_last(F.leaky_relu(self.conv_hr(x), 0.2))
        x = x / c.img_range + mean
        return x[:, :, : h * c.sf, : w * c.sf]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        size = (x.shape[-2], x.shape[-1])
        tokens = self.patch_embed(x)
        for layer in self.layers:
            tokens = layer(tokens, size)
        return tokens_to_map(self.norm(tokens), size)
