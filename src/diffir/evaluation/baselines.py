"""Classical reference rows printed next to the model in every table.

* SR: MATLAB **bicubic** (the field's "Bicubic" row) and Pillow **Lanczos** (a=3) upscaling of the LQ.
* deblurring: the blurry **input** itself.
* inpainting: **harmonic fill** of the hole (see :mod:`diffir.evaluation.fill`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image

from diffir.data.imresize import imresize
from diffir.evaluation.fill import harmonic_fill

__all__ = ["Baseline", "baselines_for"]

# (lq uint8 HWC, hole mask HW or None) -> restored uint8 HWC at the output size
Baseline = Callable[[np.ndarray, "np.ndarray | None"], np.ndarray]


def _bicubic(scale: int) -> Baseline:
    return lambda lq, mask: imresize(lq, scale)


def _lanczos(scale: int) -> Baseline:
    def run(lq: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        h, w = lq.shape[:2]
        return np.asarray(Image.fromarray(lq).resize((w * scale, h * scale), Image.Resampling.LANCZOS))

    return run


def _identity(lq: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    return lq


def _fill(lq: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    if mask is None:
        raise ValueError("the inpainting baseline needs a mask")
    return harmonic_fill(lq, mask)


def baselines_for(task: str, scale: int) -> dict[str, Baseline]:
    if task == "inpaint":
        return {"harmonic fill": _fill}
    if scale == 1:
        return {"input": _identity}
    return {"bicubic": _bicubic(scale), "lanczos": _lanczos(scale)}
