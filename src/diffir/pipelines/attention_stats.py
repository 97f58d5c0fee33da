"""Whole-image attention statistics for tiled restoration.

Every DIRformer attention layer (MDTA) normalises q and k over *all* pixels and mixes channels with the
(C/heads)² matrix q·kᵀ: sums over the whole image.  A tile on its own sees only its own sums, so tiled output
drifts from the untiled one, and larger overlaps do not help because the drift is inside the tiles (measured
with the bundled ×4 model on a 960×540 photo: up to 3.5/255 with 256-pixel tiles, 6.4/255 with 128-pixel
tiles; ``benchmarks/tiling_seams.py``).

The sums are additive over pixels.  So a first pass over the tiles adds up, for every attention layer,
Σ q·kᵀ, Σ q² and Σ k² over each tile's *core* (the cores partition the image: every pixel counts once), and
the second pass attends with these whole-image sums (0.3/255 on the same image).  What remains comes from the
first pass itself, whose layers still saw tile-local statistics upstream.  The cost is one more pass of the
DIRformer body over the tiles (not of the SR tail); memory stays that of one tile.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from diffir.nn.restormer import MDTA
from diffir.pipelines.tiling import TileGrid

Region = tuple[int, int, int, int]  # y0, y1, x0, x1 in tile input pixels
Sums = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # Σ q·kᵀ (heads, c, c), Σ q² (heads, c), Σ k² (heads, c)
_EPS = 1e-12  # F.normalize's eps


def core_spans(starts: Sequence[int], tile: int, length: int, align: int) -> list[tuple[int, int]]:
    """Split [0, length) among tiles along one axis, in each tile's own coordinates.

    Boundaries sit in the middle of each overlap, rounded down to ``align`` so that they fall on whole pixels
    at every U-Net level (the network's size multiple covers its pixel-unshuffle and three down-samplings).
    """
    bounds = [0]
    for a, b in zip(starts[:-1], starts[1:], strict=True):
        bounds.append((b + (a + tile - b) // 2) // align * align)
    bounds.append(length)
    return [(bounds[i] - s, bounds[i + 1] - s) for i, s in enumerate(starts)]


class _Collect:
    """Hook that returns the tile's own attention matrix (as usual) and adds up each layer's sums over the
    tiles' cores."""

    def __init__(self) -> None:
        self.sums: dict[MDTA, Sums] = {}
        self.regions: list[Region] = []
        self.tile_hw = (1, 1)

    def __call__(self, attn: MDTA, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        ry, rx = self.tile_hw[0] // q.shape[-2], self.tile_hw[1] // q.shape[-1]
        gram = q2 = k2 = None
        for n, (y0, y1, x0, x1) in enumerate(self.regions):
            qq = q[n, ..., y0 // ry: y1 // ry, x0 // rx: x1 // rx].flatten(-2).float()
            kk = k[n, ..., y0 // ry: y1 // ry, x0 // rx: x1 // rx].flatten(-2).float()
            part = (qq @ kk.transpose(-2, -1), qq.square().sum(-1), kk.square().sum(-1))
            gram, q2, k2 = part if gram is None else (gram + part[0], q2 + part[1], k2 + part[2])
        # Sum on the device in float32 (MPS has no float64); accumulate across tiles in float64 on the CPU.
        part = tuple(t.to("cpu", torch.float64) for t in (gram, q2, k2))
        old = self.sums.get(attn)
        self.sums[attn] = part if old is None else tuple(a + b for a, b in zip(old, part, strict=True))
        return attn.matrix(q, k)


class _Apply:
    """Hook that gives every tile the attention matrix of the whole-image sums."""

    def __init__(self, sums: dict[MDTA, Sums]) -> None:
        self.sums = sums
        self._matrix: dict[MDTA, torch.Tensor] = {}

    def __call__(self, attn: MDTA, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        matrix = self._matrix.get(attn)
        if matrix is None:
            gram, q2, k2 = self.sums[attn]
            cos = gram / (q2.sqrt().clamp_min(_EPS)[..., :, None] * k2.sqrt().clamp_min(_EPS)[..., None, :])
            matrix = (cos.to(attn.temperature.device, torch.float32) * attn.temperature.float()).softmax(dim=-1)
            self._matrix[attn] = matrix
        return matrix


@contextlib.contextmanager
def attention_hook(model: nn.Module, hook: Callable | None) -> Iterator[None]:
    """Install ``hook`` on every attention layer of ``model`` for the duration of the block."""
    layers = [m for m in model.modules() if isinstance(m, MDTA)]
    for layer in layers:
        layer.stats_hook = hook
    try:
        yield
    finally:
        for layer in layers:
            layer.stats_hook = None


def whole_image_attention(
    model: nn.Module,
    features: Callable[[torch.Tensor], object],
    lq: torch.Tensor,
    grid: TileGrid,
    align: int,
    batch_size: int = 1,
    progress: bool = False,
) -> _Apply:
    """First pass: run ``features`` (the DIRformer body on a batch of tiles) over ``grid`` and return a hook
    that makes every attention layer use whole-image statistics.  Install it with :func:`attention_hook`."""
    _, _, height, width = lq.shape
    spans_y = core_spans(grid.ys, grid.tile_h, height, align)
    spans_x = core_spans(grid.xs, grid.tile_w, width, align)
    boxes = [(y, x, (*spans_y[i], *spans_x[j])) for i, y in enumerate(grid.ys) for j, x in enumerate(grid.xs)]
    collect = _Collect()
    collect.tile_hw = (grid.tile_h, grid.tile_w)
    bar = tqdm(total=len(boxes), desc="tiles (statistics)", unit="tile", leave=False,
               disable=None if progress else True)  # None: shown only when stderr is a terminal
    with attention_hook(model, collect):
        try:
            for k in range(0, len(boxes), batch_size):
                chunk = boxes[k: k + batch_size]
                collect.regions = [region for _, _, region in chunk]
                features(torch.cat([lq[:, :, y: y + grid.tile_h, x: x + grid.tile_w] for y, x, _ in chunk]))
                bar.update(len(chunk))
        finally:
            bar.close()
    return _Apply(collect.sums)


def sums_are_finite(hook: _Apply) -> bool:
    return all(bool(torch.isfinite(t).all()) for sums in hook.sums.values() for t in sums)
