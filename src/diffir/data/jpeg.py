"""JPEG compression artefacts through a Pillow encode/decode round-trip.

Real-ESRGAN uses a differentiable JPEG re-implementation on the GPU; a real codec per image is simpler,
exact (libjpeg, 4:2:0 chroma subsampling, standard tables) and fast enough for training batches.  It runs on
the CPU, so on a GPU the batch makes one device round-trip per JPEG step; the input is quantised to 8 bits
first, as a real JPEG file would be.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image


def jpeg_roundtrip(x: torch.Tensor, quality: torch.Tensor | list[int]) -> torch.Tensor:
    """Compress every image of a (B, 3, H, W) [0, 1] batch at its own quality (1–100) and decode it."""
    q = [int(round(float(v))) for v in quality]
    arr = (x.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    out = np.empty_like(arr)
    for i in range(arr.shape[0]):
        buf = io.BytesIO()
        Image.fromarray(arr[i]).save(buf, format="JPEG", quality=max(1, min(100, q[i])))
        buf.seek(0)
        with Image.open(buf) as im:
            out[i] = np.asarray(im.convert("RGB"))
    res = torch.from_numpy(out).permute(0, 3, 1, 2)
    return res.to(device=x.device, dtype=x.dtype) / 255
