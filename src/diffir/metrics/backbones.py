"""AlexNet / VGG16 feature extractors in plain torch, with torchvision's layer indices.

Only ``features.*`` is defined, indexed exactly as ``torchvision.models.alexnet().features`` and
``vgg16().features`` so that the torchvision ImageNet files (``alexnet-owt-7be5be79.pth``,
``vgg16-397923af.pth``) load as they are; ``classifier.*`` keys in those files are ignored.  torchvision itself
is not needed (and is not installable beside our CPU torch on many machines).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from diffir.errors import CheckpointError
from diffir.metrics.weights import load_state_dict

__all__ = ["alexnet_features", "vgg16_features", "load_features", "ALEX_TAPS", "VGG16_TAPS"]

# Indices (in ``features``) of the ReLUs whose outputs LPIPS / DISTS read.
ALEX_TAPS = (1, 4, 7, 9, 11)  # relu1..relu5 -> 64, 192, 384, 256, 256 channels
VGG16_TAPS = (3, 8, 15, 22, 29)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 -> 64, 128, 256, 512, 512
_VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def alexnet_features() -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(),
        nn.MaxPool2d(3, stride=2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(),
        nn.MaxPool2d(3, stride=2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(3, stride=2),
    ]  # fmt: skip
    return nn.Sequential(*layers)


def vgg16_features(pool: Callable[[int], nn.Module] | None = None) -> nn.Sequential:
    """VGG16 ``features``; ``pool(channels)`` replaces each max-pool (DISTS uses an L2 pooling)."""
    layers: list[nn.Module] = []
    channels = 3
    for item in _VGG16_CFG:
        if item == "M":
            layers.append(pool(channels) if pool else nn.MaxPool2d(2, stride=2))
        else:
            layers += [nn.Conv2d(channels, int(item), 3, padding=1), nn.ReLU()]
            channels = int(item)
    return nn.Sequential(*layers)


def load_features(features: nn.Sequential, path: Path, what: str) -> None:
    """Load the conv tensors of a torchvision-format file (``features.N.weight|bias``) into ``features``."""
    state = load_state_dict(path)
    own = {k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")} or dict(state)
    # Only conv layers carry learned tensors; buffers of replacement pooling layers are fixed and not in the file.
    targets = {
        f"{i}.{name}": tensor
        for i, layer in enumerate(features)
        if isinstance(layer, nn.Conv2d)
        for name, tensor in layer.state_dict(keep_vars=True).items()
    }
    missing = sorted(k for k in targets if k not in own)
    if missing:
        raise CheckpointError(f"{path}: not a {what} weights file (no features.{missing[0]})")
    with torch.no_grad():
        for key, tensor in targets.items():
            if tuple(own[key].shape) != tuple(tensor.shape):
                raise CheckpointError(
                    f"{path}: not a {what} weights file (features.{key} has shape {tuple(own[key].shape)}, "
                    f"expected {tuple(tensor.shape)})"
                )
            tensor.copy_(own[key].to(tensor.dtype))
