"""On-the-fly degradations, built by name with :func:`build_degradation`.

=====================  ==================================================================================
name                   what it does
=====================  ==================================================================================
``bicubic_x2|x3|x4``   MATLAB bicubic downsampling (§5.1)
``realesrgan_x4|x2|x1`` Real-ESRGAN second-order pipeline (§5.2); options override every range/probability
``diffbir``            DiffBIR first-order model (blur, downsample, noise, JPEG, upsample back), ``scale``
``motion_blur``        real kernels from a folder and random camera-shake trajectories, optional noise
``lama_masks``         LaMa training masks; returns ``mask`` and the 4-channel ``lq``
=====================  ==================================================================================
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from diffir.data.degradations.base import Degradation
from diffir.errors import ConfigError


def _bicubic(scale: int) -> Callable[..., Degradation]:
    def make(**options: Any) -> Degradation:
        from diffir.data.degradations.bicubic import BicubicDegradation

        return BicubicDegradation(scale=scale, **options)

    return make


def _realesrgan(scale: int) -> Callable[..., Degradation]:
    def make(**options: Any) -> Degradation:
        from diffir.data.degradations.realesrgan import RealESRGANDegradation

        return RealESRGANDegradation(scale=scale, **options)

    return make


def _diffbir(**options: Any) -> Degradation:
    from diffir.data.degradations.diffbir import DiffBIRDegradation

    return DiffBIRDegradation(**options)


def _motion(**options: Any) -> Degradation:
    from diffir.data.degradations.motion import MotionBlurDegradation

    return MotionBlurDegradation(**options)


def _lama(**options: Any) -> Degradation:
    from diffir.data.masks import LamaMaskDegradation

    return LamaMaskDegradation(**options)


DEGRADATIONS: dict[str, Callable[..., Degradation]] = {
    "bicubic_x2": _bicubic(2),
    "bicubic_x3": _bicubic(3),
    "bicubic_x4": _bicubic(4),
    "realesrgan_x4": _realesrgan(4),
    "realesrgan_x2": _realesrgan(2),
    "realesrgan_x1": _realesrgan(1),
    "diffbir": _diffbir,
    "motion_blur": _motion,
    "lama_masks": _lama,
}


def list_degradations() -> list[str]:
    return sorted(DEGRADATIONS)


def build_degradation(name: str, **options: Any) -> Degradation:
    """Instantiate a degradation by name; keyword options go to its constructor."""
    key = name.strip().lower()
    if key not in DEGRADATIONS:
        near = difflib.get_close_matches(key, DEGRADATIONS, n=1)
        hint = f"did you mean {near[0]!r}? " if near else ""
        raise ConfigError(f"unknown degradation {name!r}; {hint}choose one of {', '.join(list_degradations())}")
    try:
        return DEGRADATIONS[key](**options)
    except TypeError as exc:
        raise ConfigError(f"bad options for degradation {name!r}: {exc}") from exc


__all__ = ["DEGRADATIONS", "Degradation", "build_degradation", "list_degradations"]
