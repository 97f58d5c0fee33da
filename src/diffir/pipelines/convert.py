"""Between what users pass (numpy, PIL, tensors; masks of any kind) and the float tensors the pipeline uses.

``as_float_batch(image)`` returns ``(x, back)``: ``x`` is a float32 (B, C, H, W) CPU tensor in [0, 1] with
C = 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA); ``back(y)`` turns a result of the same channel layout
into the caller's kind (same dtype, layout, PIL mode, device).  Integer data is scaled by its type's maximum
(uint8 → /255, uint16 → /65535: the depth is carried by the dtype, never guessed from the values).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image

from diffir.errors import ImageError

Back = Callable[[torch.Tensor], Any]
_INT_MAX = {np.dtype(np.uint8): 255, np.dtype(np.uint16): 65535}
#: Float inputs slightly outside [0, 1] (resampling overshoot) are fine; beyond ±0.5 it is the wrong scale.
_FLOAT_SLACK = 1.5


def as_float_batch(image: Any) -> tuple[torch.Tensor, Back]:
    if isinstance(image, Image.Image):
        return _from_pil(image)
    if isinstance(image, np.ndarray):
        return _from_numpy(image)
    if isinstance(image, torch.Tensor):
        return _from_tensor(image)
    raise ImageError(f"cannot restore a {type(image).__name__}; pass a numpy array, a PIL image or a tensor")


# ------------------------------------------------------------------------------------------------ numpy
def _from_numpy(a: np.ndarray) -> tuple[torch.Tensor, Back]:
    squeeze = a.ndim == 2
    if squeeze:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4):
        raise ImageError(f"expected an (H, W) or (H, W, C) array with C in 1..4, got shape {a.shape}")
    dtype = a.dtype
    if dtype in _INT_MAX:
        x = torch.from_numpy(a.astype(np.float32) / _INT_MAX[dtype])
    elif np.issubdtype(dtype, np.floating):
        x = _check_float_range(torch.from_numpy(np.asarray(a, dtype=np.float32).copy()))
    else:
        raise ImageError(f"unsupported pixel type {dtype}; use uint8, uint16 or float in [0, 1]")
    x = x.permute(2, 0, 1)[None].contiguous()

    def back(y: torch.Tensor) -> np.ndarray:
        out = _to_array(y[0], dtype)
        return out[..., 0] if squeeze else out

    return x, back


#: Values converted per step of :func:`_to_array`: its temporaries stay a few MB whatever the image size.
_CHUNK_VALUES = 1 << 21


def _to_array(y: torch.Tensor, dtype: np.dtype) -> np.ndarray:
    """(C, H, W) float image → (H, W, C) array of ``dtype``, clamped to [0, 1] and, for integers, scaled and
    rounded (as BasicSR's tensor2img).  Converted a band of rows at a time into the result, so that a 4K
    output needs the result's bytes, not three float copies of the image on top of it."""
    channels, height, width = y.shape
    out = np.empty((height, width, channels), dtype)
    step = max(1, _CHUNK_VALUES // max(1, channels * width))
    for top in range(0, height, step):
        band = y[:, top:top + step].permute(1, 2, 0).clamp(0, 1).numpy()
        out[top:top + step] = np.rint(band * _INT_MAX[dtype]) if dtype in _INT_MAX else band
    return out


def _check_float_range(x: torch.Tensor) -> torch.Tensor:
    """Float images must be in [0, 1]; 0..255 floats (a common slip) would silently come back white."""
    if x.numel() and (float(x.max()) > _FLOAT_SLACK or float(x.min()) < 1 - _FLOAT_SLACK):
        raise ImageError(f"float images must be in [0, 1], got values in [{float(x.min()):g}, {float(x.max()):g}]; "
                         "divide 8-bit data by 255 (or pass uint8/uint16)")
    return x


# ------------------------------------------------------------------------------------------------ PIL
def _from_pil(im: Image.Image) -> tuple[torch.Tensor, Back]:
    from diffir.io.images import pil_to_array

    a = pil_to_array(im)
    x, back_numpy = _from_numpy(a)

    def back(y: torch.Tensor) -> Image.Image:
        out = back_numpy(y)
        if out.dtype == np.uint16:
            return Image.fromarray(np.ascontiguousarray(out[..., 0]))  # 16-bit gray (I;16)
        mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[out.shape[2]]
        return Image.fromarray(np.ascontiguousarray(out[..., 0] if mode == "L" else out), mode=None).convert(mode)

    return x, back


# ------------------------------------------------------------------------------------------------ torch
def _from_tensor(t: torch.Tensor) -> tuple[torch.Tensor, Back]:
    squeeze = t.ndim == 3
    x = t[None] if squeeze else t
    if x.ndim != 4 or x.shape[1] not in (1, 2, 3, 4):
        raise ImageError(f"expected a (C, H, W) or (B, C, H, W) tensor with C in 1..4, got {tuple(t.shape)}")
    device, dtype = t.device, t.dtype
    if dtype == torch.uint8:
        x = x.float() / 255
    elif dtype.is_floating_point:
        x = _check_float_range(x.float())
    else:
        raise ImageError(f"unsupported tensor dtype {dtype}; use float in [0, 1] or uint8")
    x = x.detach().to("cpu")

    def back(y: torch.Tensor) -> torch.Tensor:
        y = y.clamp(0, 1)
        y = (y * 255).round().to(torch.uint8) if dtype == torch.uint8 else y.to(dtype)
        y = y.to(device)
        return y[0] if squeeze else y

    return x, back


# ------------------------------------------------------------------------------------------------ masks
def as_hole_mask(mask: Any, threshold: float = 0.5) -> torch.Tensor:
    """Any mask → float32 (B, 1, H, W) of 0/1 (1 = hole).  White = hole; colour masks use the channel mean.

    Values are scaled to [0, 1] by their type (bool, uint8, uint16, float) and compared with ``threshold``.
    """
    if isinstance(mask, Image.Image):
        from diffir.io.images import pil_to_array

        mask = pil_to_array(mask.convert("L") if mask.mode in ("1", "P", "PA", "CMYK", "YCbCr") else mask)
    if isinstance(mask, np.ndarray):
        if mask.dtype == np.bool_:
            mask = mask.astype(np.float32)
        m = mask[..., None] if mask.ndim == 2 else mask
        if m.ndim != 3:
            raise ImageError(f"expected an (H, W) or (H, W, C) mask, got shape {mask.shape}")
        x, _ = _from_numpy(m[..., : (3 if m.shape[2] >= 3 else 1)])
    elif isinstance(mask, torch.Tensor):
        t = mask.float() if mask.dtype == torch.bool else mask
        if t.ndim == 2:
            t = t[None]
        x, _ = _from_tensor(t)
        x = x[:, :3]
    else:
        raise ImageError(f"cannot use a {type(mask).__name__} as a mask; pass a numpy array, PIL image or tensor")
    return (x.mean(dim=1, keepdim=True) > threshold).float()
