"""Overlapping tiles blended with a smooth window; the full image never leaves CPU memory.

Layout along each axis: tiles of ``tile`` pixels every ``tile − overlap`` pixels, the last one flush with
the end.  Starts, sizes and overlaps are multiples of ``align`` (the network's size multiple) so every tile
sees the same pixel-unshuffle / down-sampling phase as the whole image would.

Blending: each tile's output is weighted by a separable window that is 1 in its interior and falls with a
sin² ramp across each overlap it shares with a neighbour (no ramp at image borders).  Two facing ramps sum to
exactly 1, and the accumulated weights are divided out anyway, so an irregular last overlap is still a proper
weighted average.  Because every tile's window is ``w_row(y)·w_col(x)``, the total weight is the outer product
of two 1-D sums, and no full-size weight map is needed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

TileFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class TileGrid:
    """Tile starts along each axis of a (padded) LQ image, and the tile size actually used."""

    ys: tuple[int, ...]
    xs: tuple[int, ...]
    tile_h: int
    tile_w: int
    overlap: int

    def __len__(self) -> int:
        return len(self.ys) * len(self.xs)

    def boxes(self) -> list[tuple[int, int]]:
        return [(y, x) for y in self.ys for x in self.xs]


def align_down(value: int, align: int) -> int:
    return max(align, value // align * align)


def make_grid(height: int, width: int, tile: int, overlap: int, align: int) -> TileGrid:
    """Tile layout for an image whose sides are multiples of ``align``."""
    if height % align or width % align:
        raise ValueError(f"image {height}x{width} is not padded to a multiple of {align}")
    tile = align_down(tile, align)
    tile_h, tile_w = min(tile, height), min(tile, width)
    # Overlap rounded up to the alignment, and kept below the tile so that tiles advance.
    overlap = min(-(-max(overlap, 0) // align) * align, min(tile_h, tile_w) - align)
    overlap = max(overlap, 0)
    return TileGrid(_starts(height, tile_h, overlap), _starts(width, tile_w, overlap), tile_h, tile_w, overlap)


def _starts(length: int, tile: int, overlap: int) -> tuple[int, ...]:
    if length <= tile:
        return (0,)
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return tuple(starts)


def window_1d(size: int, ramp: int, ramp_start: bool, ramp_end: bool) -> torch.Tensor:
    """1 everywhere, with a sin² ramp of ``ramp`` samples at the start and/or end (never exactly 0)."""
    w = torch.ones(size, dtype=torch.float32)
    ramp = min(ramp, size)
    if ramp > 0:
        t = (torch.arange(ramp, dtype=torch.float64) + 0.5) / ramp
        up = torch.sin(t * math.pi / 2).pow(2).float()
        if ramp_start:
            w[:ramp] = up
        if ramp_end:
            w[size - ramp:] = torch.minimum(w[size - ramp:], up.flip(0))
    return w


def _axis_windows(starts: tuple[int, ...], tile: int, overlap: int, scale: int) -> list[torch.Tensor]:
    last = len(starts) - 1
    return [window_1d(tile * scale, overlap * scale, i > 0, i < last) for i in range(len(starts))]


def run_tiled(
    fn: TileFn,
    lq: torch.Tensor,
    grid: TileGrid,
    scale: int,
    out_channels: int = 3,
    batch_size: int = 1,
    progress: bool = False,
) -> torch.Tensor:
    """Apply ``fn`` (tiles (N, C, th, tw) → (N, out_channels, th·scale, tw·scale)) over ``grid`` and blend.

    ``lq`` is a (1, C, H, W) CPU tensor; the result is a float32 (1, out_channels, H·scale, W·scale) CPU tensor.
    ``fn`` is responsible for moving tiles to its device and the outputs back.
    """
    _, _, height, width = lq.shape
    out = torch.zeros(1, out_channels, height * scale, width * scale, dtype=torch.float32)
    wy = _axis_windows(grid.ys, grid.tile_h, grid.overlap, scale)
    wx = _axis_windows(grid.xs, grid.tile_w, grid.overlap, scale)
    row_total = torch.zeros(height * scale)
    col_total = torch.zeros(width * scale)
    th, tw = grid.tile_h * scale, grid.tile_w * scale
    for i, y in enumerate(grid.ys):
        row_total[y * scale: y * scale + th] += wy[i]
    for j, x in enumerate(grid.xs):
        col_total[x * scale: x * scale + tw] += wx[j]

    boxes = [(i, j, y, x) for i, y in enumerate(grid.ys) for j, x in enumerate(grid.xs)]
    # disable=None: tqdm shows the bar only when its output (stderr) is a terminal
    show = progress and len(boxes) > 1
    bar = tqdm(total=len(boxes), desc="tiles", unit="tile", leave=False, disable=None if show else True)
    try:
        for k in range(0, len(boxes), batch_size):
            chunk = boxes[k: k + batch_size]
            tiles = torch.cat([lq[:, :, y: y + grid.tile_h, x: x + grid.tile_w] for _, _, y, x in chunk])
            result = fn(tiles).to("cpu", torch.float32)
            for n, (i, j, y, x) in enumerate(chunk):
                weight = wy[i][:, None] * wx[j][None, :]
                out[0, :, y * scale: y * scale + th, x * scale: x * scale + tw] += result[n] * weight
            bar.update(len(chunk))
    finally:
        bar.close()
    out /= row_total[:, None] * col_total[None, :]
    return out
