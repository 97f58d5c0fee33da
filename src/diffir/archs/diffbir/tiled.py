"""DiffBIR's three tiled stages (spec §B.7), so a large image runs in the memory of one tile.

* Cleaner and latent diffusion: overlapping windows (stride = half a tile, a last window flush with the border),
  each output weighted by the official peaked Gaussian (:func:`~diffir.archs.diffbir.tiles.gaussian_weights`)
  and the sum divided by the summed weights.  The latent diffusion blends the model outputs at *every* step
  (mixture-of-diffusers), so tiles agree along their overlaps as the sample forms.
* VAE: non-overlapping core tiles, each run with a margin of context (32 image pixels into the encoder, 11
  latent pixels into the decoder, as the official Tiled VAE), keeping only its core.  Every GroupNorm normalises
  with whole-image statistics: a first pass over the tiles adds up Σx and Σx² of each norm's input over the
  tiles' cores (the cores partition the image, so every position counts once), and the second pass normalises
  with those sums — the idea of DiffIR's whole-image attention statistics
  (:mod:`diffir.pipelines.attention_stats`), applied to GroupNorm.  What remains differs from the untiled
  result only through the first pass's own tile-local statistics upstream and the mid-block attention, which
  attends within the tile.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

import torch
from torch import nn

from diffir.archs.diffbir.tiles import gaussian_weights, sliding_windows
from diffir.nn.padding import pad_to_multiple

#: Context around each VAE core tile (official Tiled VAE): image pixels for the encoder, latent pixels for the
#: decoder.
ENCODER_MARGIN, DECODER_MARGIN = 32, 11


def _blend(run: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tile: int, scale: int) -> torch.Tensor:
    """Gaussian-weighted average of ``run`` over windows of ``tile`` (stride tile/2) of ``x``; output ×scale."""
    b, _, h, w = x.shape
    tile_h, tile_w = min(tile, h), min(tile, w)
    if tile_h == h and tile_w == w:
        return run(x)
    weights = torch.from_numpy(gaussian_weights(tile_w * scale, tile_h * scale)).to(x.device, torch.float32)
    out = total = None
    for hi, hi_end, wi, wi_end in _windows(h, w, tile_h, tile_w):
        y = run(x[..., hi:hi_end, wi:wi_end])
        if out is None:
            out = torch.zeros(b, y.shape[1], h * scale, w * scale, device=y.device, dtype=torch.float32)
            total = torch.zeros(h * scale, w * scale, device=y.device, dtype=torch.float32)
        box = (slice(hi * scale, hi_end * scale), slice(wi * scale, wi_end * scale))
        out[(..., *box)] += y.float() * weights
        total[box] += weights
    return out / total


def _windows(h: int, w: int, tile_h: int, tile_w: int) -> list[tuple[int, int, int, int]]:
    """Official sliding windows, for a tile that may be clipped to a short side."""
    rows = sliding_windows(h, h, tile_h, max(1, tile_h // 2))
    cols = sliding_windows(w, w, tile_w, max(1, tile_w // 2))
    ys = sorted({(r[0], r[1]) for r in rows})
    xs = sorted({(c[2], c[3]) for c in cols})
    return [(y0, y1, x0, x1) for y0, y1 in ys for x0, x1 in xs]


def tiled_cleaner(cleaner: nn.Module, image: torch.Tensor, tile: int, scale: int) -> torch.Tensor:
    """The cleaner over Gaussian-blended tiles of ``tile`` input pixels (rounded to the cleaner's multiple)."""
    multiple = cleaner_multiple(cleaner)
    tile = max(multiple, tile // multiple * multiple)
    padded = pad_to_multiple(image, multiple)
    out = _blend(cleaner, padded, tile, scale)
    return out[..., : image.shape[-2] * scale, : image.shape[-1] * scale]


def cleaner_multiple(cleaner: nn.Module) -> int:
    """Input sides a cleaner needs: SwinIR's token grid (pixels / unshuffle factor) must split into windows."""
    config = getattr(cleaner, "config", None)
    if config is not None and hasattr(config, "window_size"):
        return config.window_size * (config.unshuffle_scale if config.unshuffle else 1)
    return 1


def tiled_denoiser(denoiser: Callable, tile: int) -> Callable:
    """``model(x, t, cond)`` over Gaussian-blended latent tiles of ``tile`` latent pixels (stride tile/2);
    the condition latent is cut with the same window, the text context is shared."""
    tile = max(8, tile // 8 * 8)  # the UNet's three down-samplings

    def run(x: torch.Tensor, t: torch.Tensor, cond: dict[str, torch.Tensor]) -> torch.Tensor:
        c_img = cond["c_img"]

        def one(window: torch.Tensor, box: tuple[int, int, int, int]) -> torch.Tensor:
            hi, hi_end, wi, wi_end = box
            return denoiser(window, t, {**cond, "c_img": c_img[..., hi:hi_end, wi:wi_end]})

        return _blend_boxes(one, x, tile)

    return run


def _blend_boxes(run: Callable[[torch.Tensor, tuple[int, int, int, int]], torch.Tensor], x: torch.Tensor,
                 tile: int) -> torch.Tensor:
    """:func:`_blend` for a function that also needs the window's box."""
    h, w = x.shape[-2:]
    tile_h, tile_w = min(tile, h), min(tile, w)
    weights = torch.from_numpy(gaussian_weights(tile_w, tile_h)).to(x.device, torch.float32)
    out = torch.zeros(x.shape, device=x.device, dtype=torch.float32)
    total = torch.zeros(h, w, device=x.device, dtype=torch.float32)
    for box in _windows(h, w, tile_h, tile_w):
        hi, hi_end, wi, wi_end = box
        out[..., hi:hi_end, wi:wi_end] += run(x[..., hi:hi_end, wi:wi_end], box).float() * weights
        total[hi:hi_end, wi:wi_end] += weights
    return (out / total).to(x.dtype)


# ------------------------------------------------------------------------------------------------ VAE
class _SharedNormStatistics:
    """Every tile runs in its own thread; at each GroupNorm it adds Σx and Σx² of its core to the shared sums,
    waits for all tiles (a barrier), and normalises with the whole image's mean and variance.  Tiles therefore
    stay in step norm by norm, as the official Tiled VAE's task queue keeps them."""

    def __init__(self, tiles: int) -> None:
        self.barrier = threading.Barrier(tiles)
        self.lock = threading.Lock()
        self.local = threading.local()  # this thread's core, as fractions of its tile (y0, y1, x0, x1)
        self.sums: dict[int, list] = {}
        self.calls: dict[int, int] = {}

    def norm(self, module: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        groups = x.float().reshape(b, module.num_groups, -1, h, w)
        y0, y1, x0, x1 = self.local.core
        core = groups[..., round(y0 * h): round(y1 * h), round(x0 * w): round(x1 * w)]
        key = id(module)
        with self.lock:
            total = self.sums.setdefault(key, [0.0, 0.0, 0])
            total[0] = total[0] + core.sum(dim=(2, 3, 4), dtype=torch.float64)
            total[1] = total[1] + core.double().square().sum(dim=(2, 3, 4))
            total[2] += core[0, 0].numel()
        self.barrier.wait()  # every tile has added its core
        s, s2, n = self.sums[key]
        mean = (s / n)[..., None, None, None]
        var = ((s2 / n)[..., None, None, None] - mean.square()).clamp_min(0)
        if self.barrier.wait() == 0:  # every tile has read the sums: the norm may be called again (next forward)
            del self.sums[key]
        normed = ((groups - mean) / torch.sqrt(var + module.eps)).float().reshape(b, c, h, w)
        return (normed * module.weight.view(1, -1, 1, 1) + module.bias.view(1, -1, 1, 1)).to(x.dtype)


@contextlib.contextmanager
def _whole_image_norms(module: nn.Module, stats: _SharedNormStatistics) -> Iterator[None]:
    norms = [m for m in module.modules() if isinstance(m, nn.GroupNorm)]
    for m in norms:
        m.forward = (lambda mod: (lambda x: stats.norm(mod, x)))(m)  # type: ignore[method-assign]
    try:
        yield
    finally:
        for m in norms:
            del m.forward  # back to the class's forward


def tiled_vae(fn: Callable[[torch.Tensor], torch.Tensor], vae: nn.Module, tile: int, which: str) -> Callable:
    """``fn`` (the VAE encode or decode of a whole image) computed over core tiles with whole-image GroupNorm
    statistics; ``tile`` in image pixels (the decoder's tiles are tile/8 latent pixels)."""
    encoder = which == "encoder"
    core = max(8, tile // 8 * 8) if encoder else max(1, tile // 8)
    margin = ENCODER_MARGIN if encoder else DECODER_MARGIN

    def run(x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if max(h, w) <= core + 2 * margin:  # official: one tile covers it
            return fn(x)
        boxes = [(y, min(y + core, h), xx, min(xx + core, w)) for y in range(0, h, core) for xx in range(0, w, core)]
        stats = _SharedNormStatistics(len(boxes))
        results: list[torch.Tensor | BaseException | None] = [None] * len(boxes)

        def one(i: int, box: tuple[int, int, int, int]) -> None:
            y0, y1, x0, x1 = box
            py0, py1, px0, px1 = max(0, y0 - margin), min(h, y1 + margin), max(0, x0 - margin), min(w, x1 + margin)
            th, tw = py1 - py0, px1 - px0
            stats.local.core = ((y0 - py0) / th, (y1 - py0) / th, (x0 - px0) / tw, (x1 - px0) / tw)
            try:
                y = fn(x[..., py0:py1, px0:px1])
                r = y.shape[-1] / tw  # output pixels per input pixel (1/8 encoding, 8 decoding)
                oy, ox, ch, cw = (round((y0 - py0) * r), round((x0 - px0) * r), round((y1 - y0) * r),
                                  round((x1 - x0) * r))
                results[i] = y[..., oy: oy + ch, ox: ox + cw]
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                results[i] = exc
                stats.barrier.abort()  # the other tiles stop waiting for this one

        with _whole_image_norms(vae, stats), torch.inference_mode(torch.is_inference_mode_enabled()):
            threads = [threading.Thread(target=one, args=(i, box)) for i, box in enumerate(boxes)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            real = [e for e in errors if not isinstance(e, threading.BrokenBarrierError)]
            raise (real or errors)[0]
        r = results[0].shape[-1] / (boxes[0][3] - boxes[0][2])
        out = torch.zeros(*results[0].shape[:2], round(h * r), round(w * r), device=x.device,
                          dtype=results[0].dtype)
        for (y0, _, x0, _), y in zip(boxes, results, strict=True):
            out[..., round(y0 * r): round(y0 * r) + y.shape[-2], round(x0 * r): round(x0 * r) + y.shape[-1]] = y
        return out

    return run
