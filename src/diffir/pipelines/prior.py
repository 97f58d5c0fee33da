"""The condition of one image, identical to the untiled model's, computed with bounded memory.

The condition encoders here (DiffIR's CPEN_S2, HI-Diff's LE_DM) are a stack of convolutions followed by an
*adaptive average pool* (to 1×1, or to g×g bins) and a head.  Each bin's average over the whole image can be
assembled exactly from tiles: run the convolutions on a tile plus a halo as wide as their receptive field, keep
the tile's core, add up the part of the core inside each bin, and divide each bin's total by its pixel count.
Zero padding at the image border is reproduced because halos are clipped at the border.

So tiled restoration uses the very prior the untiled model would sample (same condition, same seed), not a
proxy from a downscaled image whose statistics differ from what the encoder saw in training.
"""

from __future__ import annotations

import torch
from torch import nn

from diffir.archs.base import PooledEncoder


def receptive_radius(layers: nn.Module) -> int:
    """How many pixels of context each output pixel of ``layers`` depends on, per side."""
    radius = 0
    for m in layers.modules():
        if isinstance(m, nn.Conv2d):
            k, d = m.kernel_size[0], m.dilation[0]
            radius += (k - 1) // 2 * d
    return radius


def adaptive_bins(length: int, bins: int) -> list[tuple[int, int]]:
    """``AdaptiveAvgPool`` bins along one axis: [⌊i·L/n⌋, ⌈(i+1)·L/n⌉) — they overlap when n ∤ L."""
    return [(i * length // bins, -(-(i + 1) * length // bins)) for i in range(bins)]


@torch.no_grad()
def condition_tiled(model: nn.Module, lq: torch.Tensor, tile: int, device: torch.device) -> torch.Tensor:
    """``model.condition_of(lq)`` of a (1, C, H, W) CPU image, evaluated tile by tile on ``device``."""
    encoder: PooledEncoder | None = model.condition_encoder()
    if encoder is None:
        return model.condition_of(lq.to(device))
    x = encoder.prepare(lq)  # a pixel reshuffle: same memory, stays on the CPU
    factor = lq.shape[-1] // x.shape[-1]
    _, _, height, width = x.shape
    core = max(8, tile // factor)
    if height <= core and width <= core:
        return model.condition_of(lq.to(device))
    halo = receptive_radius(encoder.features)
    bins_y, bins_x = adaptive_bins(height, encoder.pool_size[0]), adaptive_bins(width, encoder.pool_size[1])
    total = None
    for y in range(0, height, core):
        for x0 in range(0, width, core):
            y_lo, y_hi = max(0, y - halo), min(height, y + core + halo)
            x_lo, x_hi = max(0, x0 - halo), min(width, x0 + core + halo)
            feats = encoder.features(x[:, :, y_lo:y_hi, x_lo:x_hi].to(device))
            part = _bin_sums(feats, (y, min(y + core, height)), (x0, min(x0 + core, width)), (y_lo, x_lo),
                             bins_y, bins_x)
            total = part if total is None else total + part
    area = torch.tensor([[(b - a) * (d - c) for c, d in bins_x] for a, b in bins_y], dtype=torch.float64)
    pooled = (total / area).to(device, x.dtype)
    return encoder.head(pooled)


def _bin_sums(feats: torch.Tensor, rows: tuple[int, int], cols: tuple[int, int], origin: tuple[int, int],
              bins_y: list[tuple[int, int]], bins_x: list[tuple[int, int]]) -> torch.Tensor:
    """Per-bin sums (B, C, gh, gw) of the tile core ``rows`` × ``cols`` (image coordinates); ``feats`` starts at
    ``origin``.  Summed on the device in float32 (MPS has no float64), accumulated in float64 on the CPU."""
    out = torch.zeros(*feats.shape[:2], len(bins_y), len(bins_x), dtype=torch.float64)
    for i, (by0, by1) in enumerate(bins_y):
        y0, y1 = max(rows[0], by0), min(rows[1], by1)
        if y0 >= y1:
            continue
        for j, (bx0, bx1) in enumerate(bins_x):
            x0, x1 = max(cols[0], bx0), min(cols[1], bx1)
            if x0 >= x1:
                continue
            block = feats[:, :, y0 - origin[0]: y1 - origin[0], x0 - origin[1]: x1 - origin[1]]
            out[:, :, i, j] = block.float().sum(dim=(2, 3)).to("cpu", torch.float64)
    return out
