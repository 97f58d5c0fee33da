"""Whole-image attention statistics for tiled restoration.

Every DIRformer attention layer (MDTA) normalises q and k over *all* pixels and mixes channels with the
(C/heads)² matrix q·kᵀ: sums over the whole image.  A tile on its own sees only its own sums, so tiled output
drifts from the untiled one, and larger overlaps do not help because the drift is inside the tiles (measured
with the bundled ×4 model on a 960×540 photo: up to 4/255 with 256-pixel tiles, 6/255 with 128-pixel tiles;
``benchmarks/tiling_attention_stats.py``).

The sums are additive over pixels.  So a first pass adds up, for every attention layer, Σ q·kᵀ, Σ q² and Σ k²
over each tile's *core* (the cores partition the image: every pixel counts once), and the second pass attends
with these whole-image sums.  What remains comes from the first pass itself, whose layers still saw
tile-local statistics upstream; it shrinks as that pass's tiles grow.

The first pass has its own layout (:func:`stats_grid`): it only runs the network body (not the ×4 SR tail)
and keeps nothing but the sums, so its tiles can be larger than the output tiles, and they overlap only by a
context margin on each side of their cores.  An image whose padded size fits one such tile gets the exact
whole-image statistics from a single body pass.  Memory stays that of one tile.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from diffir.nn.restormer import MDTA
from diffir.pipelines.tiling import TileGrid, TileReport, make_grid

Region = tuple[int, int, int, int]  # y0, y1, x0, x1 in tile input pixels
Sums = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # Σ q·kᵀ (heads, c, c), Σ q² (heads, c), Σ k² (heads, c)
_EPS = 1e-12  # F.normalize's eps

#: Context kept on every inner side of a statistics tile's core (input pixels; the overlap, twice this, is
#: rounded up to the network's size multiple): the cores' features then differ from the whole image's mostly
#: through the attention statistics upstream, not through the zero padding at the tile's edge.  Measured on
#: barbara 960×540, bundled ×4 model, mean |tiled − whole| in grey levels with 128/32 output tiles: 0.023 with
#: 4, 0.0084 with 8, 0.0086 with 16 (and 0.045 without context on a 128² image).
STATS_MARGIN = 8


def stats_grid(height: int, width: int, tile: int, align: int, margin: int = STATS_MARGIN) -> TileGrid:
    """Layout of the statistics pass: the fewest tiles of at most ``tile`` whose cores (see :func:`core_spans`)
    keep about ``margin`` pixels of context from every inner tile edge (at most an eighth of the tile)."""
    return make_grid(height, width, tile, min(2 * margin, tile // 4), align)


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


def _sums(q: torch.Tensor, k: torch.Tensor) -> Sums:
    """Σ q·kᵀ, Σ q², Σ k² over the pixels of (heads, c, h, w) q and k (any strides), in float32."""
    qq = q.reshape(*q.shape[:-2], -1).float()
    kk = k.reshape(*k.shape[:-2], -1).float()
    return (qq @ kk.transpose(-2, -1), torch.linalg.vector_norm(qq, dim=-1).square(),
            torch.linalg.vector_norm(kk, dim=-1).square())


def _add(a: Sums | None, b: Sums) -> Sums:
    return b if a is None else (a[0] + b[0], a[1] + b[1], a[2] + b[2])


def attention_matrix(sums: Sums, temperature: torch.Tensor) -> torch.Tensor:
    """softmax(cos(q, k)·temperature) from the sums: exactly :meth:`MDTA.matrix` over the summed pixels."""
    gram, q2, k2 = sums
    cos = gram / (q2.sqrt().clamp_min(_EPS)[..., :, None] * k2.sqrt().clamp_min(_EPS)[..., None, :])
    return (cos * temperature.to(cos.dtype)).softmax(dim=-1)


def _no_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """Sums in float32 even inside a reduced-precision autocast region."""
    try:
        return torch.autocast(device_type=device.type, enabled=False)
    except RuntimeError:  # a device type without autocast
        return contextlib.nullcontext()


class _AllCollected(Exception):
    """Raised by the statistics hook once every attention layer has its sums: the rest of the body (the last
    block's value projection and feed-forward, anything after) cannot change them and is skipped."""


class _Collect:
    """Hook of the statistics pass: adds up each layer's sums over the tiles' cores, and lets each tile go on
    with its own statistics (the sums over the whole tile: its core's plus those of the strips around it)."""

    def __init__(self, layers: int) -> None:
        self.sums: dict[MDTA, Sums] = {}
        self.regions: list[Region] = []
        self.tile_hw = (1, 1)
        self.layers = layers  # attention layers in the model
        self.seen: set[MDTA] = set()  # layers done for the current batch of tiles

    def __call__(self, attn: MDTA, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        _, _, _, h, w = q.shape
        ry, rx = self.tile_hw[0] // h, self.tile_hw[1] // w
        cores: Sums | None = None
        matrices = []
        with _no_autocast(q.device):
            for n, (y0, y1, x0, x1) in enumerate(self.regions):
                y0, y1, x0, x1 = y0 // ry, y1 // ry, x0 // rx, x1 // rx
                core = _sums(q[n, ..., y0:y1, x0:x1], k[n, ..., y0:y1, x0:x1])
                cores = _add(cores, core)
                tile = core
                for ys, xs in ((slice(0, y0), slice(0, w)), (slice(y1, h), slice(0, w)),
                               (slice(y0, y1), slice(0, x0)), (slice(y0, y1), slice(x1, w))):
                    if ys.stop > ys.start and xs.stop > xs.start:
                        tile = _add(tile, _sums(q[n, ..., ys, xs], k[n, ..., ys, xs]))
                matrices.append(attention_matrix(tile, attn.temperature))
        # Summed on the device in float32 (MPS has no float64); accumulated across tiles in float64 on the CPU.
        part = tuple(t.to("cpu", torch.float64) for t in cores)
        old = self.sums.get(attn)
        self.sums[attn] = part if old is None else tuple(a + b for a, b in zip(old, part, strict=True))
        self.seen.add(attn)
        if len(self.seen) == self.layers:
            raise _AllCollected
        return torch.stack(matrices)


class _Apply:
    """Hook that gives every tile the attention matrix of the whole-image sums."""

    def __init__(self, sums: dict[MDTA, Sums]) -> None:
        self.sums = sums
        self._matrix: dict[MDTA, torch.Tensor] = {}

    def __call__(self, attn: MDTA, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        matrix = self._matrix.get(attn)
        if matrix is None:
            sums = tuple(t.to(attn.temperature.device, torch.float32) for t in self.sums[attn])
            matrix = attention_matrix(sums, attn.temperature.detach().float())
            self._matrix[attn] = matrix
        return matrix.expand(q.shape[0], *matrix.shape)  # (B, heads, c, c), as MDTA.matrix


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
    report: TileReport | None = None,
) -> _Apply:
    """First pass: run ``features`` (the network body on a batch of tiles) over ``grid`` (e.g. a
    :func:`stats_grid`) and return a hook that makes every attention layer use whole-image statistics.
    Install it with :func:`attention_hook`.  Only the sums are kept, never the tiles' features.
    ``report("statistics", done, total)`` is called after every batch of tiles."""
    _, _, height, width = lq.shape
    spans_y = core_spans(grid.ys, grid.tile_h, height, align)
    spans_x = core_spans(grid.xs, grid.tile_w, width, align)
    boxes = [(y, x, (*spans_y[i], *spans_x[j])) for i, y in enumerate(grid.ys) for j, x in enumerate(grid.xs)]
    collect = _Collect(sum(isinstance(m, MDTA) for m in model.modules()))
    collect.tile_hw = (grid.tile_h, grid.tile_w)
    bar = tqdm(total=len(boxes), desc="tiles (statistics)", unit="tile", leave=False,
               disable=None if progress and len(boxes) > 1 else True)  # None: shown only if stderr is a terminal
    with attention_hook(model, collect):
        try:
            for k in range(0, len(boxes), batch_size):
                chunk = boxes[k: k + batch_size]
                collect.regions = [region for _, _, region in chunk]
                collect.seen.clear()
                with contextlib.suppress(_AllCollected):
                    features(torch.cat([lq[:, :, y: y + grid.tile_h, x: x + grid.tile_w] for y, x, _ in chunk]))
                bar.update(len(chunk))
                if report is not None:
                    report("statistics", min(k + batch_size, len(boxes)), len(boxes))
        finally:
            bar.close()
    return _Apply(collect.sums)


def sums_are_finite(hook: _Apply) -> bool:
    return all(bool(torch.isfinite(t).all()) for sums in hook.sums.values() for t in sums)
