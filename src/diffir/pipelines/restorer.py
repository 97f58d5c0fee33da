"""``diffir.Restorer``: restore one image of any kind with a stage-2 model of any architecture and task.

    >>> r = diffir.Restorer("diffir_sr_x4_small", tile=512, precision="fp32", device="auto", seed=0)
    >>> out = r.restore(np.asarray(PIL.Image.open("lr.png")))           # numpy in, numpy out
    >>> out = diffir.Restorer(inpaint_model).restore(pil_image, mask=pil_mask)   # white = hole (mask_hole="black")

Per image: split off alpha, replicate gray to RGB, reflect-pad to the size multiple, compute **one** prior
(the condition tile by tile — exactly the untiled value — then the seeded diffusion), run the restoration
network on the whole image or on blended overlapping tiles sharing that prior (and, from a first pass,
whole-image attention statistics), crop, composite (inpainting), and put gray/alpha back.  Only the model's
descriptor and restoration interface are used (:mod:`diffir.archs.base`).  Sampling is stochastic: every image
draws its prior noise from a fresh CPU generator seeded with ``seed``, so a result depends only on the image,
the model and the seed (not on batch or order).
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from diffir.archs.generation import GenerationOptions
from diffir.bundled import DEFAULT_MODEL
from diffir.errors import DiffIRError, ImageError
from diffir.nn.padding import crop_to, pad_to_multiple
from diffir.pipelines.attention_stats import attention_hook, stats_grid, sums_are_finite, whole_image_attention
from diffir.pipelines.convert import as_float_batch, as_hole_mask
from diffir.pipelines.files import hole_map
from diffir.pipelines.limits import DEFAULT_MAX_OUTPUT_PIXELS, MAX_OUTSCALE, MAX_SEED
from diffir.pipelines.model_source import load_inference_model
from diffir.pipelines.precision import (
    Calibration,
    CompiledNetwork,
    all_finite,
    autocast,
    calibrate,
    free_device_memory,
    is_out_of_memory,
    resolve_device,
    resolve_precision,
)
from diffir.pipelines.prior import condition_tiled
from diffir.pipelines.tiling import TileGrid, TileReport, align_down, canvas, make_grid, run_tiled
from diffir.runtime import keep_freed_memory

#: ``tile="auto"``: images whose padded LQ side exceeds this are tiled with tiles of at most this size (LQ
#: pixels).  ×4 SR works on 16× more output pixels per LQ pixel, hence the smaller tile: with 128 a 960×540 →
#: 3840×2160 restore by the official-size network peaked at 1247 MiB RSS on a CPU (whole process, whole-image
#: statistics; 1747 MiB with 256), see docs/restore.md, "Tiling".
AUTO_TILE = {4: 128, 2: 384, 1: 512}
#: Statistics pass of ``tile_stats="global"``: its largest tile side relative to the output tile, by SR scale
#: (others: 1).  The ×4 body without its SR tail holds about half the tensor bytes per pixel of a whole restore
#: (measured: 141 vs 305 MB for a 208×224 tile of the bundled ×4 model, 173 vs 313 MB for a 120×128 tile of the
#: official-size one), so 1.5× the side costs about the memory of an output tile, with fewer tiles to overlap.
STATS_TILE = {4: 1.5}
#: Luma weights (ITU-R BT.601, as Pillow's RGB→L) used to return gray images as gray.
_LUMA = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)


class Restorer:
    """Restore images with a stage-2 model (SR ×1/×2/×4, real-world SR, motion deblur, inpainting).

    Args:
        model: a stage-2 model (``DiffIRS2``, ``HIDiffS2`` ...), a checkpoint path, or a model name (see
            ``diffir restore --help``).
        tile: largest LQ tile side in pixels; ``0`` = whole image; ``"auto"`` = tile only images larger than
            ``AUTO_TILE`` (the default).  Rounded down to the model's size multiple; the tiles actually used are
            as few as this allows and shrunk to even out their overlaps.
        tile_overlap: overlap between neighbouring tiles (LQ pixels), blended with a sin² window.
        tile_stats: ``"global"`` (default): a first pass over the tiles gathers whole-image attention
            statistics that every tile then uses (tiled ≈ untiled, one extra pass of the network body);
            ``"local"``: each tile attends with its own statistics (faster, larger tiled-vs-whole drift).
        precision: ``"fp32"`` (default), ``"bf16"`` or ``"fp16"`` (autocast; an image whose output has NaN/Inf is
            redone in fp32, the next one tries the reduced precision again), or ``"auto"``: measured on first use
            (:func:`~diffir.pipelines.precision.calibrate`: the fastest precision within 2/255 of fp32; cached per
            model and device in the process; the outcome in ``calibration``).
        device: ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``.
        seed: seed of the prior's sampling noise (``None`` = fresh randomness each call).
        batch_size: tiles per forward pass.
        outscale: final scale relative to the input (e.g. 3.5 with a ×4 model); ``None`` = the model's scale.
        mask_threshold: mask values above this (after scaling to [0, 1]) are holes.
        mask_hole: ``"white"`` (default): bright mask pixels are holes (LaMa, DiffIR); ``"black"``: dark ones
            are (MAT masks), i.e. values at or below ``mask_threshold``.
        progress: show a tqdm bar over the tiles of large images (only when stderr is a terminal).
        on_progress: called after every batch of tiles of a tiled image with (pass, tiles done, tiles in the
            pass); pass is ``"statistics"`` (the first pass of ``tile_stats="global"``) or ``"tiles"``.
        compile: run the restoration network under ``torch.compile`` (compiled on the first image, its time printed
            once on stderr; a failure to compile warns once and runs uncompiled).
        generation: sampling options of a generative model (DiffBIR: steps, sampler, CFG, prompts, restoration
            guidance, its tiles; :class:`~diffir.archs.generation.GenerationOptions`); ``None`` = its defaults.
            A ``tile`` size then sets the latent-diffusion tile unless ``generation`` sets one.
        max_output_pixels: refuse an image whose output (``max(scale, outscale)``² × input pixels) is larger,
            before any work; ``None`` or 0 = no limit.
    """

    def __init__(
        self,
        model: nn.Module | str | os.PathLike = DEFAULT_MODEL,
        *,
        tile: int | str = "auto",
        tile_overlap: int = 32,
        tile_stats: str = "global",
        precision: str = "fp32",
        device: str | torch.device = "auto",
        seed: int | None = 0,
        batch_size: int = 1,
        outscale: float | None = None,
        mask_threshold: float = 0.5,
        mask_hole: str = "white",
        progress: bool = False,
        compile: bool = False,
        max_output_pixels: int | None = DEFAULT_MAX_OUTPUT_PIXELS,
        on_progress: TileReport | None = None,
        generation: GenerationOptions | None = None,
    ) -> None:
        check_outscale(outscale)
        check_seed(seed)
        check_mask_threshold(mask_threshold)
        if max_output_pixels is not None and max_output_pixels < 0:
            raise DiffIRError(f"max_output_pixels must be >= 0 (0 = no limit), got {max_output_pixels}")
        if mask_hole not in ("white", "black"):
            raise DiffIRError(f"mask_hole must be 'white' or 'black', got {mask_hole!r}")
        if not (tile == "auto" or (isinstance(tile, int) and tile >= 0)):
            raise DiffIRError(f"tile must be a size >= 0 or 'auto', got {tile!r}")
        if tile_stats not in ("global", "local"):
            raise DiffIRError(f"tile_stats must be 'global' or 'local', got {tile_stats!r}")
        if batch_size < 1:
            raise DiffIRError(f"batch_size must be >= 1, got {batch_size}")
        self.device = resolve_device(device)
        self.precision = precision
        #: The configured precision (None until ``auto`` is measured); ``dtype`` is the one the current (or last)
        #: image runs in: the configured one, or float32 after a NaN/Inf fallback for that image only.
        self._dtype = None if precision == "auto" else resolve_precision(precision, self.device)
        self.dtype = self._dtype or torch.float32
        self.calibration: Calibration | None = None
        keep_freed_memory()  # freed activations stay mapped: no page-fault storm per layer (runtime.allocator)
        self.model = load_inference_model(model).to(self.device)
        self.descriptor = self.model.descriptor
        self._param_dtype = next(self.model.parameters()).dtype
        self.tile = tile
        self.tile_overlap = max(0, int(tile_overlap))
        self.tile_stats = tile_stats
        self.seed = seed
        self.batch_size = batch_size
        self.outscale = outscale
        self.mask_threshold = mask_threshold
        self.max_output_pixels = max_output_pixels
        self.mask_hole = mask_hole
        self.progress = progress
        self.on_progress = on_progress
        self._warned_fallback = False
        self.fallbacks = 0  #: images redone in float32 because of NaN/Inf in reduced precision
        if self.descriptor.generative:
            if compile:
                raise DiffIRError("--compile is for the prior-based models; a generative model runs uncompiled")
            self.generation = generation or GenerationOptions()
            if isinstance(tile, int) and tile and not self.generation.latent_tile:
                self.generation = self.generation.replace(latent_tile=tile)  # checked there (e.g. vs guidance)
            self._network = None
            return
        if generation is not None:
            raise DiffIRError(f"sampling options (steps, sampler, prompt, guidance ...) are for generative models "
                              f"such as DiffBIR; this {self.descriptor.architecture} model samples only its prior "
                              "(--seed)")
        self.generation = None
        self._network = CompiledNetwork(self.model.restore) if compile else self.model.restore

    # ---------------------------------------------------------------------------------------------- public
    @property
    def task(self) -> str:
        return self.descriptor.task

    @property
    def scale(self) -> int:
        return self.descriptor.scale

    def choose_precision(self) -> torch.dtype:
        """The configured precision; with ``precision="auto"`` measured now if not yet (see ``calibration``)."""
        if self._dtype is None and self.descriptor.generative:
            # No calibration image for a latent diffusion: float32 on the CPU, half precision (with the official
            # float32 islands) on a GPU.
            self._dtype = torch.float32 if self.device.type == "cpu" else torch.float16
        if self._dtype is None:
            self.calibration = calibrate(self.model, self.device)
            self._dtype = self.calibration.dtype
        return self._dtype

    def restore(self, image: Any, mask: Any = None) -> Any:
        """Restore ``image`` (numpy HWC/HW uint8/uint16/float, PIL, or (B,)C,H,W tensor); same kind returned.

        Inpainting models need ``mask`` (same size; white/1 = hole).  Alpha and grayscale are preserved.
        """
        size = _input_size(image)
        if size is not None:  # before the float copy of the input, which is already large for a huge image
            self.check_output_size(*size)
        x, back = as_float_batch(image)
        hole = self._check_mask(mask, x)
        outs = []
        for b in range(x.shape[0]):
            outs.append(self.restore_float(x[b: b + 1], None if hole is None else hole[b % hole.shape[0]][None]))
        return back(outs[0] if len(outs) == 1 else torch.cat(outs))

    @torch.no_grad()  # not inference_mode: results handed back to the caller stay usable with autograd
    def restore_float(self, x: torch.Tensor, hole: torch.Tensor | None = None) -> torch.Tensor:
        """(1, C, H, W) float CPU image in [0, 1] (C = 1..4) → restored (1, C, H', W') float, clamped."""
        self.dtype = self.choose_precision()  # every image starts in it: a float32 fallback lasts one image
        _, channels, height, width = x.shape
        alpha = x[:, channels - 1:] if channels in (2, 4) else None
        rgb = x[:, :3] if channels >= 3 else x[:, :1].expand(-1, 3, -1, -1)
        lq = torch.cat([rgb * (1 - hole), hole], dim=1) if self.task == "inpaint" else rgb
        pred = self._run_network(lq.contiguous())
        if not all_finite(pred):
            raise DiffIRError("the model produced NaN/Inf even in float32 (broken or mismatched weights?)")
        scale = self.scale
        pred = crop_to(pred, height * scale, width * scale)
        if self.task == "inpaint":
            pred = hole * pred + (1 - hole) * rgb  # keep every known pixel exactly
        if channels < 3:
            pred = (pred * _LUMA).sum(dim=1, keepdim=True)
        if alpha is not None:
            pred = torch.cat([pred, _resize(alpha, pred.shape[-2:])], dim=1)
        if self.outscale is not None and self.outscale != scale:
            size = (max(1, round(height * self.outscale)), max(1, round(width * self.outscale)))
            pred = _resize(pred, size)
        return pred.clamp_(0, 1)  # in place: pred is always this method's own tensor (4K: 100 MB saved)

    def check_output_size(self, height: int, width: int, name: str = "image") -> None:
        """Raise :class:`ImageError` if restoring a ``width`` x ``height`` input exceeds ``max_output_pixels``."""
        factor = max(float(self.scale), self.outscale or 0.0)
        out_h, out_w = math.ceil(height * factor), math.ceil(width * factor)
        limit = self.max_output_pixels
        if limit and out_h * out_w > limit:
            smaller = "; or a smaller --outscale" if factor > self.scale else ""
            raise ImageError(f"{name}: restoring this {width}x{height} image makes a {out_w}x{out_h} = "
                             f"{out_h * out_w:,}-pixel output, over the limit of {limit:,} output pixels (raise it "
                             f"with --max-output-pixels N, none = no limit; Python: max_output_pixels=N, None = no "
                             f"limit{smaller})")

    # ---------------------------------------------------------------------------------------------- internals
    def _check_mask(self, mask: Any, x: torch.Tensor) -> torch.Tensor | None:
        if self.task != "inpaint":
            if mask is not None:
                raise DiffIRError(f"a mask was given but the model does {self.task}, not inpainting")
            return None
        if mask is None:
            raise DiffIRError("this is an inpainting model: pass a mask (white = hole)")
        if isinstance(mask, np.ndarray) and mask.dtype in (np.uint8, np.uint16) and mask.ndim in (2, 3):
            # Pixels as read from a file: alpha-only holes and 16-bit files of 8-bit values read as from the CLI.
            pixels = mask[..., None] if mask.ndim == 2 else mask
            if pixels.shape[2] not in (1, 2, 3, 4):
                raise ImageError(f"expected an (H, W) or (H, W, C) mask with C in 1..4, got shape {mask.shape}")
            holes, _ = hole_map(pixels, self.mask_threshold, "white")
            hole = torch.from_numpy(holes.astype(np.float32))[None, None]
        else:
            hole = as_hole_mask(mask, self.mask_threshold)
        if self.mask_hole == "black":
            hole = 1 - hole
        if hole.shape[-2:] != x.shape[-2:]:
            raise ImageError(f"mask is {hole.shape[-1]}x{hole.shape[-2]} but the image is "
                             f"{x.shape[-1]}x{x.shape[-2]} (W x H); they must match")
        if hole.shape[0] not in (1, x.shape[0]):
            raise ImageError(f"{hole.shape[0]} masks for {x.shape[0]} images")
        return hole

    def _tile_for(self, height: int, width: int) -> int:
        """LQ tile size for a padded image (0 = whole image)."""
        multiple = self.descriptor.size_multiple
        if self.tile == "auto":
            limit = AUTO_TILE[self.scale if self.task == "sr" else 1]
            return 0 if max(height, width) <= limit else align_down(limit, multiple)
        return 0 if self.tile == 0 or max(height, width) <= self.tile else align_down(self.tile, multiple)

    def _run_network(self, lq: torch.Tensor) -> torch.Tensor:
        """Padded-size prediction of a (1, C, H, W) CPU LQ; on device OOM the tile is halved and retried."""
        if self.descriptor.generative:  # it pads and tiles inside (cleaner, latent and VAE tiles)
            try:
                return self._predict(lq, 0)
            except Exception as exc:  # noqa: BLE001 - only out-of-memory is handled, the rest re-raised
                if not is_out_of_memory(exc):
                    raise
                free_device_memory(self.device)
                raise DiffIRError(f"out of memory on {self.device}: tile the stages with --cleaner-tile, "
                                  "--latent-tile and --vae-tile (e.g. 512), or use a smaller image") from None
        multiple = self.descriptor.size_multiple
        padded = pad_to_multiple(lq, multiple)
        tile = self._tile_for(*padded.shape[-2:])
        while True:
            try:
                return self._predict(padded, tile)
            except Exception as exc:  # noqa: BLE001 - only out-of-memory is handled, the rest re-raised
                if not is_out_of_memory(exc):
                    raise
                free_device_memory(self.device)
                current = tile or max(padded.shape[-2:])
                smaller = align_down(current // 2, multiple)
                if smaller >= current or current // 2 < multiple:
                    raise DiffIRError(f"out of memory on {self.device} even with {current}-pixel tiles; "
                                      "use --device cpu or a smaller image") from None
                warnings.warn(f"out of memory on {self.device} with tile {current}: retrying with tile {smaller}",
                              stacklevel=2)
                tile = smaller

    def _predict(self, padded: torch.Tensor, tile: int) -> torch.Tensor:
        generator = None
        if self.seed is not None:
            generator = torch.Generator(device="cpu").manual_seed(self.seed)
        if self.descriptor.generative:
            out = self.model.generate(padded.to(self.device), self.generation, generator=generator,
                                      report=self.on_progress, dtype=self.dtype)
            return out.to("cpu", torch.float32)
        # The prior path runs outside autocast, in the weights' precision: it is a few % of the compute, and one
        # global prior steers every pixel.
        padded = padded.to(dtype=self._param_dtype)
        # Tiled: the output buffer first, before the condition and statistics passes (see tiling.canvas).
        out = canvas(padded, self.scale, self.descriptor.out_channels) if tile else None
        if tile and self.descriptor.exact_tiled_condition:
            cond = condition_tiled(self.model, padded, tile, self.device)
        else:
            cond = self.model.condition_of(padded.to(self.device))
        prior = self.model.sample_prior(cond, generator=generator)
        if not tile:
            return self._forward(padded, prior)
        grid = make_grid(*padded.shape[-2:], tile, self.tile_overlap, self.descriptor.size_multiple)
        dtype = self.dtype
        hook = self._tiled(padded, grid, tile, prior, out)
        if hook is not None and self.dtype != dtype:
            # A tile fell back to float32, but the statistics came from the reduced-precision pass: redo.
            self._tiled(padded, grid, tile, prior, out)
        return out

    def _tiled(self, padded: torch.Tensor, grid: TileGrid, tile: int, prior: torch.Tensor,
               out: torch.Tensor) -> Any:
        """Statistics pass (if any), then the blended tiles into ``out``; returns the statistics hook."""
        hook = self._whole_image_attention(padded, tile, prior) if len(grid) > 1 else None
        with attention_hook(self.model, hook):
            run_tiled(lambda t: self._forward(t, prior), padded, grid, self.scale, self.descriptor.out_channels,
                      self.batch_size, self.progress, out=out, report=self.on_progress)
        return hook

    def _whole_image_attention(self, padded: torch.Tensor, tile: int, prior: torch.Tensor) -> Any:
        """First tiling pass: whole-image attention statistics (``tile_stats="global"``), or None.

        It runs on its own layout (:func:`~diffir.pipelines.attention_stats.stats_grid`): tiles up to
        ``STATS_TILE`` times the output tile (the body without the ×4 SR tail needs less memory per pixel
        than a whole restore), overlapping only by the context margin around their cores."""
        if self.tile_stats != "global" or not self.descriptor.attention_statistics:
            return None

        def features(tiles: torch.Tensor) -> None:
            tiles = tiles.to(self.device, self._param_dtype, non_blocking=True)
            with autocast(self.device, self.dtype):
                self.model.attention_pass(tiles, _batched(prior, tiles.shape[0]))

        align = self.descriptor.size_multiple
        factor = STATS_TILE.get(self.scale, 1.0) if self.task == "sr" else 1.0
        grid = stats_grid(*padded.shape[-2:], align_down(int(tile * factor), align), align)
        hook = whole_image_attention(self.model, features, padded, grid, align, self.batch_size, self.progress,
                                     self.on_progress)
        if not sums_are_finite(hook) and self.dtype != torch.float32:
            if not self._warned_fallback:
                warnings.warn(f"NaN/Inf in {str(self.dtype).removeprefix('torch.')} attention statistics: "
                              "recomputing in float32 for this image (every image tries the reduced precision "
                              "first; later fallbacks are counted in Restorer.fallbacks, not reported)", stacklevel=2)
                self._warned_fallback = True
            self.dtype = torch.float32
            self.fallbacks += 1
            hook = whole_image_attention(self.model, features, padded, grid, align, self.batch_size, self.progress,
                                         self.on_progress)
        return hook

    def _forward(self, lq: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        lq = lq.to(self.device, self._param_dtype, non_blocking=True)
        prior = _batched(prior, lq.shape[0])
        with autocast(self.device, self.dtype):
            out = self._network(lq, prior)
        if self.dtype != torch.float32 and not all_finite(out):
            if not self._warned_fallback:
                warnings.warn(f"NaN/Inf in the {str(self.dtype).removeprefix('torch.')} output: recomputing in "
                              "float32 for this image (every image tries the reduced precision first; later "
                              "fallbacks are counted in Restorer.fallbacks, not reported)", stacklevel=2)
                self._warned_fallback = True
            self.dtype = torch.float32
            self.fallbacks += 1
            out = self._network(lq, prior)
        return out.to("cpu", torch.float32)


def check_outscale(value: float | None, name: str = "outscale") -> float | None:
    """``value`` if it is None or a finite scale in (0, MAX_OUTSCALE], else a one-line error naming ``name``."""
    if value is None:
        return None
    if not (isinstance(value, (int, float)) and math.isfinite(value) and 0 < value <= MAX_OUTSCALE):
        raise DiffIRError(f"{name} {value}: expected a finite scale above 0 and at most {MAX_OUTSCALE:g} "
                          "(e.g. 2 or 3.5)")
    return float(value)


def check_seed(value: int | None, name: str = "seed") -> int | None:
    """``value`` if it is None or in torch's seed range 0 .. 2**64-1, else a one-line error naming ``name``."""
    if value is not None and not (isinstance(value, int) and 0 <= value <= MAX_SEED):
        raise DiffIRError(f"{name} {value}: expected a whole number from 0 to 2**64-1 = {MAX_SEED} "
                          "(torch's seed range)")
    return value


def check_mask_threshold(value: float, name: str = "mask_threshold") -> float:
    """``value`` if it is a finite number strictly between 0 and 1, else a one-line error naming ``name``."""
    if not (isinstance(value, (int, float)) and math.isfinite(value) and 0 < value < 1):
        raise DiffIRError(f"{name} {value}: expected a number between 0 and 1 (exclusive), e.g. 0.5; mask values "
                          "are scaled to 0..1 before the comparison")
    return float(value)


def _input_size(image: Any) -> tuple[int, int] | None:
    """(height, width) of an image argument without converting it (None if the kind is unknown)."""
    if isinstance(image, np.ndarray) and image.ndim >= 2:  # (H, W[, C])
        return int(image.shape[0]), int(image.shape[1])
    if isinstance(image, torch.Tensor) and image.ndim >= 2:  # ([B,] C, H, W)
        return int(image.shape[-2]), int(image.shape[-1])
    size = getattr(image, "size", None)  # PIL: (width, height)
    if isinstance(size, tuple) and len(size) == 2:
        return int(size[1]), int(size[0])
    return None


def _batched(prior: torch.Tensor, batch: int) -> torch.Tensor:
    """One image's prior (leading batch axis of 1) repeated for a batch of tiles, without a copy."""
    return prior.expand(batch, *prior.shape[1:])


def _resize(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Bicubic resize (antialiased when shrinking); used for alpha and for --outscale."""
    size = (int(size[0]), int(size[1]))
    if tuple(x.shape[-2:]) == size:
        return x
    antialias = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=antialias).clamp(0, 1)
