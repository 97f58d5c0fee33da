"""One IPR per image, identical to the untiled model's, computed with bounded memory.

CPEN_S2 is a stack of 3×3 convolutions followed by a *global average pool* and an MLP.  The average of the
last feature map over the whole image can be assembled exactly from tiles: run the convolutions on a tile
plus a halo as wide as their receptive field, keep the tile's core, sum it, and divide the grand total by the
pixel count.  Zero padding at the image border is reproduced because halos are clipped at the border.

So tiled restoration uses the very IPR the untiled model would sample (same condition, same seed), not a
proxy from a downscaled image whose statistics differ from what CPEN saw in training.
"""

from __future__ import annotations

import torch
from torch import nn

from diffir.networks.cpen import prior_lq_part


def receptive_radius(layers: nn.Module) -> int:
    """How many pixels of context each output pixel of ``layers`` depends on, per side."""
    radius = 0
    for m in layers.modules():
        if isinstance(m, nn.Conv2d):
            k, d = m.kernel_size[0], m.dilation[0]
            radius += (k - 1) // 2 * d
    return radius


def _split_pool(cpen: nn.Module) -> tuple[nn.Module, nn.Module] | None:
    """(feature convs, global pool) of a CPEN, or None if it does not end with a global average pool."""
    body = getattr(cpen, "E", None)
    if not isinstance(body, nn.Sequential) or not isinstance(body[-1], nn.AdaptiveAvgPool2d):
        return None
    if body[-1].output_size not in (1, (1, 1)):
        return None
    return body[:-1], body[-1]


@torch.no_grad()
def condition_tiled(model: nn.Module, lq: torch.Tensor, tile: int, device: torch.device) -> torch.Tensor:
    """CPEN_S2(lq) of a (1, C, H, W) CPU image, evaluated tile by tile on ``device`` (float32)."""
    x = prior_lq_part(model.config, lq)  # a pixel reshuffle: same memory, stays on the CPU
    factor = lq.shape[-1] // x.shape[-1]
    cpen = model.condition
    split = _split_pool(cpen)
    _, _, height, width = x.shape
    core = max(8, tile // factor)
    if split is None or (height <= core and width <= core):
        return cpen(x.to(device))
    convs, _ = split
    halo = receptive_radius(convs)
    total = None
    for y in range(0, height, core):
        for x0 in range(0, width, core):
            y_lo, y_hi = max(0, y - halo), min(height, y + core + halo)
            x_lo, x_hi = max(0, x0 - halo), min(width, x0 + core + halo)
            feats = convs(x[:, :, y_lo:y_hi, x_lo:x_hi].to(device))
            inner = feats[:, :, y - y_lo: y - y_lo + min(core, height - y),
                          x0 - x_lo: x0 - x_lo + min(core, width - x0)]
            # Sum on the device in float32 (MPS has no float64), accumulate across tiles in float64.
            part = inner.float().sum(dim=(2, 3)).to("cpu", torch.float64)
            total = part if total is None else total + part
    mean = (total / (height * width)).to(device, x.dtype)
    return cpen.mlp(mean)
