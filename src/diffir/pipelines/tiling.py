"""Overlapping tiles blended with a smooth window; the full image never leaves CPU memory.

Layout along each axis: as few tiles as a ``tile``-pixel maximum and an ``overlap`` allow, all of one size
(the smallest that covers the axis with them) and spread evenly, the first flush with the start and the last
with the end.  Starts, sizes and overlaps are multiples of ``align`` (the network's size multiple) so every
tile sees the same pixel-unshuffle / down-sampling phase as the whole image would.  (Tiles of exactly ``tile``
pixels every ``tile − overlap`` pixels would push the last tile back to the end, overlapping its neighbour by
up to a whole tile: 960 pixels in 256-pixel tiles overlapping by 32 would be 1280 pixels of work, 1120 here.)

Blending: each tile's output is weighted by a separable window that is 1 in its interior and falls with a
sin² ramp across each overlap it shares with a neighbour (no ramp at image borders).  Two facing ramps sum to
exactly 1, and the accumulated weights are divided out anyway, so an irregular last overlap is still a proper
weighted average.  Because every tile's window is ``w_row(y)·w_col(x)``, the total weight is the outer product
of two 1-D sums, and no full-size weight map is needed.

Memory: besides one batch of tiles and its outputs, only the float32 output canvas is image-sized; tiles are
added into it in place (``addcmul_``) and it is normalised in place.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

TileFn = Callable[[torch.Tensor], torch.Tensor]
#: Progress callback of the tiled passes: (pass name, tiles done, tiles in the pass).
TileReport = Callable[[str, int, int], None]


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
    """Tile layout for an image whose sides are multiples of ``align``; ``tile`` is the largest tile side."""
    if height % align or width % align:
        raise ValueError(f"image {height}x{width} is not padded to a multiple of {align}")
    tile = align_down(tile, align)
    # Overlap rounded up to the alignment, and kept below the tile so that tiles advance.
    overlap = min(-(-max(overlap, 0) // align) * align, min(tile, height, width) - align)
    overlap = max(overlap, 0)
    tile_h, ys = _axis(height, tile, overlap, align)
    tile_w, xs = _axis(width, tile, overlap, align)
    return TileGrid(ys, xs, tile_h, tile_w, overlap)


def _axis(length: int, tile: int, overlap: int, align: int) -> tuple[int, tuple[int, ...]]:
    """(tile size, starts) along one axis: the fewest tiles of at most ``tile`` that overlap by at least
    ``overlap``, shrunk to the smallest aligned size that still covers ``length``, starts spread evenly."""
    if length <= tile:
        return length, (0,)
    count = -(-(length - overlap) // (tile - overlap))
    # n tiles of size t overlapping by ``overlap`` cover n·t − (n−1)·overlap pixels.
    size = min(tile, -(-(length + (count - 1) * overlap) // (count * align)) * align)
    span = length - size  # multiple of align; (count − 1)·(size − overlap) >= span, so no gap
    starts = [i * span // (count - 1) // align * align for i in range(count)]
    starts[-1] = span
    return size, tuple(starts)


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


def canvas(lq: torch.Tensor, scale: int, out_channels: int = 3) -> torch.Tensor:
    """The float32 output buffer of :func:`run_tiled` for ``lq``.  Allocating it before the other passes over
    the tiles keeps this long-lived block out of the holes their freed activations leave (a freed block is
    reused by the allocator, and a long-lived one in its middle splits it for every tile after)."""
    _, _, height, width = lq.shape
    return torch.zeros(1, out_channels, height * scale, width * scale, dtype=torch.float32)


def run_tiled(
    fn: TileFn,
    lq: torch.Tensor,
    grid: TileGrid,
    scale: int,
    out_channels: int = 3,
    batch_size: int = 1,
    progress: bool = False,
    out: torch.Tensor | None = None,
    report: TileReport | None = None,
) -> torch.Tensor:
    """Apply ``fn`` (tiles (N, C, th, tw) → (N, out_channels, th·scale, tw·scale)) over ``grid`` and blend.

    ``lq`` is a (1, C, H, W) CPU tensor; the result is a float32 (1, out_channels, H·scale, W·scale) CPU tensor:
    ``out`` if given (overwritten; see :func:`canvas`), else a new one.  ``fn`` is responsible for moving tiles
    to its device and the outputs back.  ``report("tiles", done, total)`` is called after every batch of tiles.
    """
    _, _, height, width = lq.shape
    if out is None:
        out = canvas(lq, scale, out_channels)
    else:
        out.zero_()
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
                out[0, :, y * scale: y * scale + th, x * scale: x * scale + tw].addcmul_(result[n], weight)
            del result
            bar.update(len(chunk))
            if report is not None:
                report("tiles", min(k + batch_size, len(boxes)), len(boxes))
    finally:
        bar.close()
    # Divide by the total weight row by row and column by column: no image-sized weight map.
    out.div_(row_total[:, None]).div_(col_total)
    return out
