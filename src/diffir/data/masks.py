"""LaMa-style hole masks for inpainting: irregular brush strokes and rectangles (specs §5.4, §6.3).

Behaviour restated from the LaMa recipe used by DiffIR:

* irregular ("line" brush): ``n`` stroke groups, each starting at a random pixel and drawing 1–5 connected
  segments; segment angle 0.01 + U{0..max_angle−1} rad, mirrored to 2π − angle for even-numbered groups;
  length 10 + U{0..max_len−1}; brush width 5 + U{0..max_width−1}; end points truncated to int and clipped
  to [0, W] × [0, H].  LaMa's generator passes ``max_times + 1`` to the drawing routine, whose draw is
  inclusive, so the number of groups is **min_times … max_times + 1** (1–6 for the training 1/5 setting);
  we keep that off-by-one so masks have the same statistics as the published models were trained on.
* box: ``min_times … max_times`` rectangles, each side U{min_size … min(max_size, H − 2·margin,
  W − 2·margin)}, placed fully inside the margin.
* mixed: each mask is either irregular or box, chosen with the (renormalised) probabilities.

Masks are float32 (1, H, W) tensors, 1 = hole.  Drawing is NumPy on the CPU (one small mask at a time, in
DataLoader workers); :class:`LamaMaskDegradation` wraps it for batches on any device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from diffir.data import rng
from diffir.data.degradations.base import Degradation


@dataclass(frozen=True)
class IrregularMaskSpec:
    max_angle: int = 4
    max_len: int = 200
    max_width: int = 100
    min_times: int = 1
    max_times: int = 5

    def strokes(self, h: int, w: int, rs: np.random.Generator) -> list[list[tuple[int, int, int, int, int]]]:
        """Stroke groups of one mask, each a list of connected segments (x0, y0, x1, y1, brush width)."""
        out = []
        groups = int(rs.integers(self.min_times, self.max_times + 2))  # LaMa's off-by-one: up to max+1
        for i in range(groups):
            group: list[tuple[int, int, int, int, int]] = []
            out.append(group)
            x, y = int(rs.integers(w)), int(rs.integers(h))
            for _ in range(1 + int(rs.integers(5))):
                angle = 0.01 + int(rs.integers(self.max_angle))
                if i % 2 == 0:
                    angle = 2 * math.pi - angle
                length = 10 + int(rs.integers(self.max_len))
                width = 5 + int(rs.integers(self.max_width))
                x1 = min(max(int(x + length * math.sin(angle)), 0), w)
                y1 = min(max(int(y + length * math.cos(angle)), 0), h)
                group.append((x, y, x1, y1, width))
                x, y = x1, y1
        return out


@dataclass(frozen=True)
class BoxMaskSpec:
    margin: int = 10
    min_size: int = 30
    max_size: int = 150
    min_times: int = 1
    max_times: int = 4

    def boxes(self, h: int, w: int, rs: np.random.Generator) -> list[tuple[int, int, int, int]]:
        """Rectangles (x, y, width, height) of one mask, all inside the margin."""
        max_size = min(self.max_size, h - 2 * self.margin, w - 2 * self.margin)
        if max_size < self.min_size:
            raise ValueError(f"image {h}x{w} too small for boxes of {self.min_size}px with margin {self.margin}")
        out = []
        for _ in range(int(rs.integers(self.min_times, self.max_times + 1))):
            bw = int(rs.integers(self.min_size, max_size + 1))
            bh = int(rs.integers(self.min_size, max_size + 1))
            x = int(rs.integers(self.margin, w - self.margin - bw + 1))
            y = int(rs.integers(self.margin, h - self.margin - bh + 1))
            out.append((x, y, bw, bh))
        return out


def draw_strokes(h: int, w: int, groups: list[list[tuple[int, int, int, int, int]]]) -> np.ndarray:
    """Rasterise thick segments with round caps (pixels within width/2 of the segment), like a brush."""
    mask = np.zeros((h, w), dtype=bool)
    for x0, y0, x1, y1, width in (seg for group in groups for seg in group):
        r = width / 2
        xa, xb = max(0, int(min(x0, x1) - r)), min(w, int(max(x0, x1) + r) + 1)
        ya, yb = max(0, int(min(y0, y1) - r)), min(h, int(max(y0, y1) + r) + 1)
        if xa >= xb or ya >= yb:
            continue
        py, px = np.mgrid[ya:yb, xa:xb].astype(np.float64)
        dx, dy = x1 - x0, y1 - y0
        seg2 = dx * dx + dy * dy
        t = np.clip(((px - x0) * dx + (py - y0) * dy) / seg2, 0, 1) if seg2 > 0 else np.zeros_like(px)
        dist2 = (px - x0 - t * dx) ** 2 + (py - y0 - t * dy) ** 2
        mask[ya:yb, xa:xb] |= dist2 <= r * r
    return mask


def draw_boxes(h: int, w: int, boxes: list[tuple[int, int, int, int]]) -> np.ndarray:
    mask = np.zeros((h, w), dtype=bool)
    for x, y, bw, bh in boxes:
        mask[y : y + bh, x : x + bw] = True
    return mask


@dataclass(frozen=True)
class LamaMaskGenerator:
    """``gen(height, width, generator=None) -> (1, H, W)`` float32 mask, 1 = hole.

    Default: the DiffIR/LaMa training mix (irregular 1–6 groups, max width 100, max length 200, angle 4;
    boxes 30–150 px, 1–4, margin 10; 50/50).  ``LamaMaskGenerator.preset(name)`` gives the evaluation mask
    sets of §6.3 (``thick_256``, ``thin_256``, ``medium_256``, ``thick_512``, ``thin_512``; ``thick``/
    ``thin``/``medium`` are the 256 ones), which also reject masks covering more than half the image.
    """

    irregular: IrregularMaskSpec = field(default_factory=IrregularMaskSpec)
    box: BoxMaskSpec = field(default_factory=BoxMaskSpec)
    irregular_proba: float = 1.0
    box_proba: float = 1.0
    max_hole_fraction: float | None = None
    max_tries: int = 20

    @classmethod
    def preset(cls, name: str) -> LamaMaskGenerator:
        key = {"thick": "thick_256", "thin": "thin_256", "medium": "medium_256"}.get(name, name)
        if key == "train":
            return cls()
        if key not in _PRESETS:
            raise ValueError(f"unknown mask preset {name!r}; choose from train, {', '.join(sorted(_PRESETS))}")
        return _PRESETS[key]

    def sample(self, h: int, w: int, rs: np.random.Generator) -> tuple[np.ndarray, str, list]:
        """(bool mask, "irregular"|"box", the strokes or boxes) — exposed for tests and visualisation."""
        for _ in range(self.max_tries):
            total = self.irregular_proba + self.box_proba
            if rs.random() * total < self.irregular_proba:
                kind, shapes = "irregular", self.irregular.strokes(h, w, rs)
                mask = draw_strokes(h, w, shapes)
            else:
                kind, shapes = "box", self.box.boxes(h, w, rs)
                mask = draw_boxes(h, w, shapes)
            if self.max_hole_fraction is None or mask.mean() <= self.max_hole_fraction:
                break
        return mask, kind, shapes

    def __call__(self, height: int, width: int, generator: torch.Generator | None = None) -> torch.Tensor:
        rs = np.random.default_rng(rng.draw_seed(generator))
        mask, _, _ = self.sample(height, width, rs)
        return torch.from_numpy(mask.astype(np.float32))[None]


_EVAL = LamaMaskGenerator(irregular_proba=1.0, box_proba=0.3, max_hole_fraction=0.5)
_PRESETS: dict[str, LamaMaskGenerator] = {
    "thick_256": replace(
        _EVAL,
        irregular=IrregularMaskSpec(max_angle=4, max_len=200, max_width=100, min_times=1, max_times=5),
        box=BoxMaskSpec(margin=10, min_size=30, max_size=150, min_times=1, max_times=3),
    ),
    "thin_256": replace(
        _EVAL,
        irregular=IrregularMaskSpec(max_angle=4, max_len=40, max_width=10, min_times=4, max_times=50),
        box_proba=0.0,
    ),
    "medium_256": replace(
        _EVAL,
        irregular=IrregularMaskSpec(max_angle=4, max_len=100, max_width=50, min_times=4, max_times=5),
        box=BoxMaskSpec(margin=0, min_size=10, max_size=50, min_times=1, max_times=5),
    ),
    "thick_512": replace(
        _EVAL,
        irregular=IrregularMaskSpec(max_angle=4, max_len=450, max_width=250, min_times=1, max_times=5),
        box=BoxMaskSpec(margin=10, min_size=30, max_size=300, min_times=1, max_times=4),
    ),
    "thin_512": replace(
        _EVAL,
        irregular=IrregularMaskSpec(max_angle=4, max_len=100, max_width=20, min_times=4, max_times=70),
        box_proba=0.0,
    ),
}


class LamaMaskDegradation(Degradation):
    """Batch version for inpainting: ``deg(gt) -> {"gt", "mask", "lq"}`` with lq = cat(gt·(1−mask), mask)."""

    def __init__(self, preset: str = "train", generator: LamaMaskGenerator | None = None):
        super().__init__()
        self.masks = generator if generator is not None else LamaMaskGenerator.preset(preset)

    @torch.no_grad()
    def forward(self, gt: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        self._check(gt)
        gen = rng.param_generator(generator)
        h, w = gt.shape[-2:]
        mask = torch.stack([self.masks(h, w, gen) for _ in range(gt.shape[0])])
        mask = mask.to(device=gt.device, dtype=gt.dtype)
        return {"gt": gt, "mask": mask, "lq": torch.cat([gt * (1 - mask), mask], dim=1)}
