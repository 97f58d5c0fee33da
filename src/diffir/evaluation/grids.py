"""Side-by-side comparison crops: ``input | baselines… | model | GT`` as one labelled PNG per image.

The crop is chosen on the GT, not on any method's output (so no method is favoured): the window with the most
detail (gradient energy) for SR/deblurring, the window with the largest hole area for inpainting.  The input
is shown at the output scale with nearest-neighbour enlargement (so its pixels stay visible); inpainting
inputs show the hole in magenta.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["choose_crop", "comparison_grid"]

_LABEL_H = 18
_GAP = 4
_HOLE_COLOUR = np.array([255, 0, 255], dtype=np.uint8)


def choose_crop(gt: np.ndarray, size: int, hole: np.ndarray | None = None) -> tuple[int, int, int]:
    """(top, left, side) of a square window of at most ``size`` px on the GT."""
    h, w = gt.shape[:2]
    side = min(size, h, w)
    if hole is not None and hole.any():
        score_map = hole.astype(np.float64)
    else:
        g = gt.astype(np.float64).mean(axis=2)
        score_map = np.zeros_like(g)
        score_map[:, 1:] += np.abs(np.diff(g, axis=1))
        score_map[1:, :] += np.abs(np.diff(g, axis=0))
    integral = np.pad(score_map.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    stride = max(1, side // 4)
    best, best_pos = -1.0, (0, 0)
    for top in range(0, h - side + 1, stride):
        for left in range(0, w - side + 1, stride):
            b, r = top + side, left + side
            total = integral[b, r] - integral[top, r] - integral[b, left] + integral[top, left]
            if total > best:
                best, best_pos = total, (top, left)
    return best_pos[0], best_pos[1], side


def _input_panel(lq: np.ndarray, out_hw: tuple[int, int], hole: np.ndarray | None) -> np.ndarray:
    panel = lq.copy()
    if hole is not None:
        panel[hole.astype(bool)] = _HOLE_COLOUR
    if panel.shape[:2] != out_hw:  # show LR pixels as blocks at the output scale
        ry, rx = out_hw[0] // panel.shape[0], out_hw[1] // panel.shape[1]
        panel = np.repeat(np.repeat(panel, ry, axis=0), rx, axis=1)
        panel = np.pad(panel, ((0, out_hw[0] - panel.shape[0]), (0, out_hw[1] - panel.shape[1]), (0, 0)), "edge")
    return panel


def comparison_grid(
    lq: np.ndarray,
    outputs: dict[str, np.ndarray],
    gt: np.ndarray,
    crop: int = 128,
    zoom: int = 2,
    hole: np.ndarray | None = None,
    captions: dict[str, str] | None = None,
) -> Image.Image:
    """One row of labelled, zoomed crops: input, each entry of ``outputs`` in order, GT."""
    top, left, side = choose_crop(gt, crop, hole)
    window = (slice(top, top + side), slice(left, left + side))
    factor = gt.shape[0] // lq.shape[0]
    input_name = f"input (x{factor} nearest)" if factor > 1 else "input"
    panels = [(input_name, _input_panel(lq, gt.shape[:2], hole)[window])]
    panels += [(name, img[window]) for name, img in outputs.items()]
    panels.append(("GT", gt[window]))
    captions = captions or {}
    cell = side * zoom
    canvas = Image.new("RGB", (len(panels) * (cell + _GAP) - _GAP, cell + _LABEL_H), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (name, pixels) in enumerate(panels):
        x = i * (cell + _GAP)
        tile = Image.fromarray(np.ascontiguousarray(pixels)).resize((cell, cell), Image.Resampling.NEAREST)
        canvas.paste(tile, (x, _LABEL_H))
        label = f"{name} {captions[name]}" if name in captions else name
        draw.text((x + 2, 3), label, fill="black")
    return canvas

