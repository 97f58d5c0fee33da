"""diffir — efficient diffusion-based image restoration: DiffIR (ICCV 2023) and HI-Diff (NeurIPS 2023).

Public API (imported lazily so that ``import diffir`` is cheap)::

    diffir.list_models()                     # named presets of every architecture
    diffir.create_model(name, **overrides)   # build a preset (random weights)
    diffir.load_model(path_or_state_dict)    # any official / diffir checkpoint (file, files, folder), inferred
    diffir.save_model(model, path)           # safetensors (default) or official .pth (official=True)
    diffir.Restorer(model, ...)              # restore numpy / PIL / tensor images, with tiling
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "list_models": "diffir.registry",
    "create_model": "diffir.registry",
    "load_model": "diffir.io.checkpoint",
    "save_model": "diffir.io.checkpoint",
    "DiffIRConfig": "diffir.archs.diffir.config",
    "DiffIRS1": "diffir.archs.diffir.model",
    "DiffIRS2": "diffir.archs.diffir.model",
    "HIDiffConfig": "diffir.archs.hidiff.config",
    "HIDiffS1": "diffir.archs.hidiff.model",
    "HIDiffS2": "diffir.archs.hidiff.model",
    "ModelDescriptor": "diffir.archs.base",
    "Restorer": "diffir.pipelines.restorer",
}

__all__ = [
    "__version__",
    "list_models",
    "create_model",
    "load_model",
    "save_model",
    "DiffIRConfig",
    "DiffIRS1",
    "DiffIRS2",
    "HIDiffConfig",
    "HIDiffS1",
    "HIDiffS2",
    "ModelDescriptor",
    "Restorer",
]

if TYPE_CHECKING:  # pragma: no cover
    from diffir.archs.base import ModelDescriptor
    from diffir.archs.diffir.config import DiffIRConfig
    from diffir.archs.diffir.model import DiffIRS1, DiffIRS2
    from diffir.archs.hidiff.config import HIDiffConfig
    from diffir.archs.hidiff.model import HIDiffS1, HIDiffS2
    from diffir.io.checkpoint import load_model, save_model
    from diffir.pipelines.restorer import Restorer
    from diffir.registry import create_model, list_models


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'diffir' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
