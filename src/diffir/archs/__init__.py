"""One package per restoration architecture; this module is their registry.

Adding an architecture = adding a folder ``diffir/archs/<name>/`` whose ``arch.py`` defines ``ARCHITECTURE`` (a
:class:`~diffir.archs.base.Architecture`: presets, build, checkpoint detection and loading, official layout) and
whose models implement :class:`~diffir.archs.base.RestorationModel`, then adding its name to ``_PACKAGES``.
Packages are imported on first use, never at ``import diffir``.
"""

from __future__ import annotations

import importlib

from diffir.archs.base import Architecture, Checkpoint, ModelDescriptor, PooledEncoder, RestorationModel

#: Registered architectures, in the order checkpoints are offered to them for detection.
_PACKAGES = ("diffir", "hidiff", "diffbir")

__all__ = [
    "Architecture", "Checkpoint", "ModelDescriptor", "PooledEncoder", "RestorationModel",
    "architecture", "architectures", "architecture_of",
]


def architecture(name: str) -> Architecture:
    if name not in _PACKAGES:
        raise KeyError(f"unknown architecture {name!r}; registered: {', '.join(_PACKAGES)}")
    return importlib.import_module(f"diffir.archs.{name}.arch").ARCHITECTURE


def architectures() -> list[Architecture]:
    return [architecture(name) for name in _PACKAGES]


def architecture_of(model: object) -> Architecture:
    """The architecture of a built model (from its descriptor)."""
    descriptor = getattr(model, "descriptor", None)
    if not isinstance(descriptor, ModelDescriptor):
        raise TypeError(f"{type(model).__name__} is not a diffir model (it has no ModelDescriptor)")
    return architecture(descriptor.architecture)
