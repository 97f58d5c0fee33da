"""Where metric weights come from, and the error raised when they are missing.

Shipped with the package (small parameter files, see ``diffir/assets/README.md``): NIQE pristine parameters,
LPIPS v0.1 linear heads, DISTS alpha/beta.  **Not** shipped (large, licence-encumbered, and never downloaded by
diffir): the AlexNet / VGG16 backbones for LPIPS and DISTS and the Inception network for FID.  Supply them as a
file path, or put them in a folder named by ``$DIFFIR_METRIC_WEIGHTS`` (default ``~/.cache/diffir/metrics``)
under one of the accepted names below (the torchvision / pytorch-fid release names work as they are).
"""

from __future__ import annotations

import os
from pathlib import Path

from diffir.errors import DiffIRError

__all__ = ["MissingWeightsError", "find_weights", "load_state_dict", "BACKBONE_FILES"]

# backbone -> (file-name patterns searched in the weights folder, where users usually get the file)
BACKBONE_FILES: dict[str, tuple[tuple[str, ...], str]] = {
    "alexnet": (
        ("alexnet*.pth", "alexnet*.safetensors"),
        "torchvision's AlexNet ImageNet weights (alexnet-owt-7be5be79.pth; diffir eval --alexnet PATH)",
    ),
    "vgg16": (
        ("vgg16-*.pth", "vgg16.pth", "vgg16*.safetensors"),
        "torchvision's VGG16 ImageNet weights (vgg16-397923af.pth; diffir eval --vgg16 PATH)",
    ),
    "inception_fid": (
        ("pt_inception-2015-12-05*.pth", "inception_fid*.pth", "inception_fid*.safetensors"),
        "pytorch-fid's FID Inception weights (pt_inception-2015-12-05-6726825d.pth; diffir eval --inception PATH)",
    ),
}


class MissingWeightsError(DiffIRError, FileNotFoundError):
    """A metric cannot run because a weights file is absent.  The evaluator skips the metric and says why."""


def weights_dir() -> Path:
    return Path(os.environ.get("DIFFIR_METRIC_WEIGHTS", Path.home() / ".cache" / "diffir" / "metrics")).expanduser()


def find_weights(backbone: str, path: str | os.PathLike | None = None, metric: str = "") -> Path:
    """Resolve the user's weights file for ``backbone`` or raise :class:`MissingWeightsError` saying how to fix it."""
    patterns, origin = BACKBONE_FILES[backbone]
    who = f"{metric}: " if metric else ""
    if path is not None:
        p = Path(path).expanduser()
        if p.is_file():
            return p
        raise MissingWeightsError(f"{who}weights file {p} does not exist (expected {origin})")
    folder = weights_dir()
    for pattern in patterns:
        hits = sorted(folder.glob(pattern)) if folder.is_dir() else []
        if hits:
            return hits[0]
    raise MissingWeightsError(
        f"{who}needs {origin}; diffir never downloads weights. Put the file in {folder} "
        f"(or set DIFFIR_METRIC_WEIGHTS)"
    )


def load_state_dict(path: Path) -> dict:
    """Tensors of a ``.safetensors`` or ``.pth`` file (pickles are loaded tensors-only)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    from diffir.io.torchfile import read_torch_file

    state = read_torch_file(path)
    for key in ("state_dict", "params", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return state
