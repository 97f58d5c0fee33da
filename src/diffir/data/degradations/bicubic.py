"""Bicubic downsampling (the classic SR training pairs of §5.1, made on the fly)."""

from __future__ import annotations

import torch

from diffir.data.degradations.base import Degradation
from diffir.data.resize import matlab_bicubic


class BicubicDegradation(Degradation):
    """LQ = MATLAB ``imresize(GT, 1/scale, 'bicubic')``.

    The GT is first cut (top-left) to a multiple of ``scale``, as the benchmark LR sets were made.  With
    ``quantize`` (default) the resize rounds to 8 bits after each pass like MATLAB on uint8 images, so
    on-the-fly pairs equal pre-made ``LR_bicubic`` folders.
    """

    def __init__(self, scale: int = 4, quantize: bool = True):
        super().__init__()
        self.scale = int(scale)
        self.quantize = quantize

    @torch.no_grad()
    def forward(self, gt: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        self._check(gt)
        s = self.scale
        h, w = gt.shape[-2:]
        gt = gt[..., : h - h % s, : w - w % s]
        # quantize: behave like MATLAB on uint8 images (the GT came from 8-bit files); bit-exact with the
        # benchmark LR_bicubic folders.  Otherwise a float resize with no rounding at all.
        lq = matlab_bicubic(gt, 1.0 / s, (h // s, w // s), round_uint8=self.quantize).clamp(0, 1)
        return {"lq": lq.contiguous(), "gt": gt}
