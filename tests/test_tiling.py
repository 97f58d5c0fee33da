"""Tile layout, blending window, blended reassembly, the exact tiled IPR condition (CPEN_S2), whole-image
attention statistics, and memory that follows the tile, not the image."""

from __future__ import annotations

import weakref

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

import diffir
from conftest import tiny_model
from diffir.archs.diffir.layers import Attention
from diffir.pipelines.attention_stats import attention_hook, core_spans, whole_image_attention
from diffir.pipelines.prior import condition_tiled, receptive_radius
from diffir.pipelines.tiling import make_grid, run_tiled, window_1d

aligns = st.sampled_from([1, 8, 16, 32])



@settings(max_examples=200, deadline=None)
@given(align=aligns, hk=st.integers(1, 20), wk=st.integers(1, 20), tile=st.integers(1, 300),
       overlap=st.integers(0, 100))
def test_grid_covers_the_image_with_aligned_tiles(align, hk, wk, tile, overlap) -> None:
    h, w = hk * align, wk * align
    grid = make_grid(h, w, tile, overlap, align)
    assert grid.tile_h % align == 0 and grid.tile_w % align == 0
    assert grid.overlap % align == 0 and 0 <= grid.overlap < min(grid.tile_h, grid.tile_w)
    for starts, size, length in ((grid.ys, grid.tile_h, h), (grid.xs, grid.tile_w, w)):
        assert starts[0] == 0 and starts[-1] + size == length
        assert all(s % align == 0 for s in starts)
        assert all(b > a for a, b in zip(starts, starts[1:], strict=False))
        # Neighbours overlap by at least the requested (aligned) overlap, and never leave a gap.
        assert all(a + size - b >= grid.overlap for a, b in zip(starts, starts[1:], strict=False))
        # Tiles are at most the requested size, and there are as few as that size and overlap allow.
        limit = max(align, tile // align * align)
        assert size <= limit
        if length > limit:
            assert len(starts) == -(-(length - grid.overlap) // (limit - grid.overlap))


@pytest.mark.parametrize("ramp", [1, 4, 7, 32])
def test_facing_ramps_sum_to_one_and_never_reach_zero(ramp: int) -> None:
    left = window_1d(64, ramp, ramp_start=False, ramp_end=True)
    right = window_1d(64, ramp, ramp_start=True, ramp_end=False)
    assert torch.allclose(left[64 - ramp:] + right[:ramp], torch.ones(ramp), atol=1e-6)
    assert bool((left > 0).all()) and bool((right > 0).all())
    assert bool((left[: 64 - ramp] == 1).all())


@settings(max_examples=40, deadline=None)
@given(hk=st.integers(1, 9), wk=st.integers(1, 9), tile=st.integers(8, 48), overlap=st.integers(0, 24),
       scale=st.sampled_from([1, 2, 4]), batch=st.integers(1, 5))
def test_blended_tiles_reassemble_a_pointwise_function_exactly(hk, wk, tile, overlap, scale, batch) -> None:
    # Any function without spatial context must come out identical, whatever the tiling: this checks the
    # window normalisation, the output placement and the batching together.
    h, w = hk * 8, wk * 8
    x = torch.rand(1, 3, h, w)

    def fn(t: torch.Tensor) -> torch.Tensor:
        return F.interpolate(torch.sigmoid(3 * t - 1), scale_factor=scale, mode="nearest")

    grid = make_grid(h, w, tile, overlap, 8)
    out = run_tiled(fn, x, grid, scale, out_channels=3, batch_size=batch)
    assert torch.allclose(out, fn(x), atol=1e-6)


def test_blending_hides_tile_borders_that_hard_pasting_shows() -> None:
    # A zero-padded conv is wrong near every tile edge; the sin² window gives those pixels little weight.
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 3, 5, padding=2)
    x = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        whole = conv(x)
        hard = run_tiled(conv, x, make_grid(96, 96, 32, 0, 8), 1)
        blended = run_tiled(conv, x, make_grid(96, 96, 32, 16, 8), 1)
    assert (blended - whole).abs().max() < 0.25 * (hard - whole).abs().max()


@pytest.mark.parametrize("preset", ["diffir_sr_x4_s2", "diffir_sr_x2_s2", "diffir_realsr_x1_s2",
                                    "diffir_deblur_s2", "diffir_inpaint_celeba_s2"])
def test_tiled_condition_equals_whole_image_condition(preset: str) -> None:
    model = tiny_model(preset, n_encoder_res=2)
    x = torch.rand(1, model.config.in_channels, 32, 64)
    with torch.no_grad():
        whole = model.condition_of(x)
        for tile in (16, 24):
            tiled = condition_tiled(model, x, tile, torch.device("cpu"))
            assert torch.allclose(tiled, whole, atol=1e-6, rtol=0), (preset, tile)


def test_receptive_radius_counts_every_conv() -> None:
    model = tiny_model("diffir_sr_x4_s2", n_encoder_res=3)
    # first conv (1) + 3 ResBlocks of two 3×3 convs (6) + three widening convs (3)
    assert receptive_radius(model.condition.E) == 10


# ----------------------------------------------------------------------------- whole-image attention statistics
@settings(max_examples=200, deadline=None)
@given(align=aligns, hk=st.integers(1, 20), tile=st.integers(1, 300), overlap=st.integers(0, 100))
def test_tile_cores_partition_the_image(align, hk, tile, overlap) -> None:
    length = hk * align
    grid = make_grid(length, length, tile, overlap, align)
    spans = core_spans(grid.ys, grid.tile_h, length, align)
    absolute = [(s + a, s + b) for s, (a, b) in zip(grid.ys, spans, strict=True)]
    assert absolute[0][0] == 0 and absolute[-1][1] == length
    assert all(prev[1] == nxt[0] for prev, nxt in zip(absolute, absolute[1:], strict=False))  # no gap, no double
    for a, b in spans:  # inside its own tile, on whole pixels at every U-Net level
        assert 0 <= a <= b <= grid.tile_h
        assert a % align == 0 and (b % align == 0 or b == grid.tile_h)


@pytest.mark.parametrize("preset", ["diffir_sr_x4_s2", "diffir_sr_x2_s2", "diffir_inpaint_celeba_s2"])
def test_one_tile_with_its_own_statistics_is_the_plain_forward(preset: str) -> None:
    """Sums over the only tile are the whole image's: the hooked attention must equal the module's own."""
    model = tiny_model(preset)
    c = model.config
    lq = torch.rand(1, c.in_channels, 2 * c.size_multiple, 3 * c.size_multiple)
    ipr = torch.rand(1, 256)
    grid = make_grid(*lq.shape[-2:], 10_000, 0, c.size_multiple)
    with torch.no_grad():
        hook = whole_image_attention(model, lambda t: model.G.features(t, ipr), lq, grid, c.size_multiple)
        with attention_hook(model, hook):
            hooked = model.G(lq, ipr)
        plain = model.G(lq, ipr)
    assert len(hook.sums) == sum(isinstance(m, Attention) for m in model.modules())
    assert torch.allclose(hooked, plain, atol=1e-5)
    assert all(m.stats_hook is None for m in model.modules() if isinstance(m, Attention))  # uninstalled


# ----------------------------------------------------------------------------------------------------- memory
class _LiveBytes(TorchDispatchMode):
    """Bytes of the tensor storages created inside the block that are still alive, and their maximum."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.current = self.peak = 0

    def _free(self, key: int) -> None:
        self.current -= self.live.pop(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.numel() >= 1024:  # smaller ones cannot be image-sized here
                storage = t.untyped_storage()
                key = storage.data_ptr()
                if key not in self.live:
                    self.live[key] = storage.nbytes()
                    self.current += storage.nbytes()
                    self.peak = max(self.peak, self.current)
                    weakref.finalize(storage, self._free, key)
        return out


@pytest.mark.parametrize("stats", ["global", "local"])
def test_tiled_memory_follows_the_tile_not_the_image(stats: str, monkeypatch) -> None:
    """Two images tiled with the same tiles: the larger may only hold a larger output canvas (and input).

    Holding the tiles' outputs, a float64 or padded copy of the image, a full-size weight map, or a feature map
    of the whole image would each add at least a third of the canvas difference and fail this."""
    import diffir.pipelines.restorer as restorer_module

    tiles: list[tuple[str, int, int]] = []

    def spying(name: str):
        real = getattr(restorer_module, name)

        def spy(*args, **kwargs):
            grid = next(a for a in args if hasattr(a, "tile_h"))
            tiles.append((name, grid.tile_h, grid.tile_w))
            return real(*args, **kwargs)
        return spy

    for name in ("run_tiled", "whole_image_attention"):
        monkeypatch.setattr(restorer_module, name, spying(name))
    r = diffir.Restorer(tiny_model("diffir_sr_x4_s2"), tile=32, tile_overlap=8, tile_stats=stats)
    sizes = [(32, 104), (32, 200)]  # 4 and 8 tiles of 32×32
    peaks = []
    with torch.no_grad():
        r._run_network(torch.rand(1, 3, 32, 56))  # warm-up outside the measurement
        for h, w in sizes:
            tiles.clear()
            with _LiveBytes() as live:
                out = r._run_network(torch.rand(1, 3, h, w))  # the (padded) prediction, before post-processing
            peaks.append((live.peak, sorted(tiles)))
    assert out.shape == (1, 3, 4 * 32, 4 * 200)
    assert peaks[0][1] == peaks[1][1] and len(peaks[0][1]) == (2 if stats == "global" else 1)  # same tiles
    canvas = [3 * 4 * h * w * 16 for h, w in sizes]  # float32 ×4 output
    lq = [3 * 4 * h * w for h, w in sizes]
    assert peaks[1][0] - peaks[0][0] <= (canvas[1] - canvas[0]) + 2 * (lq[1] - lq[0]), (peaks, canvas)
