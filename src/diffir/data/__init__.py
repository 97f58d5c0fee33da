"""Training data: datasets, on-the-fly degradations, inpainting masks, progressive patch schedule.

Imported lazily so that ``import diffir.data`` stays cheap::

    from diffir.data import PairedImageDataset, ImageFolderDataset, InpaintDataset, seed_worker
    from diffir.data import build_degradation, LamaMaskGenerator, ProgressiveSchedule, cut_batch
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "PairedImageDataset": "diffir.data.datasets",
    "ImageFolderDataset": "diffir.data.datasets",
    "InpaintDataset": "diffir.data.datasets",
    "seed_worker": "diffir.data.datasets",
    "list_images": "diffir.data.files",
    "ImageFolderError": "diffir.data.files",
    "read_image": "diffir.data.files",
    "Degradation": "diffir.data.degradations",
    "build_degradation": "diffir.data.degradations",
    "list_degradations": "diffir.data.degradations",
    "BicubicDegradation": "diffir.data.degradations.bicubic",
    "RealESRGANDegradation": "diffir.data.degradations.realesrgan",
    "TrainingPairPool": "diffir.data.degradations.realesrgan",
    "USMSharp": "diffir.data.degradations.realesrgan",
    "DiffBIRDegradation": "diffir.data.degradations.diffbir",
    "MotionBlurDegradation": "diffir.data.degradations.motion",
    "load_kernels": "diffir.data.motion",
    "random_trajectory_kernels": "diffir.data.motion",
    "LamaMaskGenerator": "diffir.data.masks",
    "LamaMaskDegradation": "diffir.data.masks",
    "ProgressiveSchedule": "diffir.data.progressive",
    "cut_batch": "diffir.data.progressive",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'diffir.data' has no attribute {name!r}")
