"""LPIPS v0.1 (Zhang et al., 2018) with the official linear heads and a user-supplied backbone.

Conventions (``lpips`` package, ``version='0.1'``, as used by DiffIR's ``Metric/LPIPS.py``): RGB in [0, 1] is
mapped to [-1, 1], then shifted/scaled per channel (the "ScalingLayer"); features of five ReLU layers are
unit-normalised along channels (eps 1e-10), their squared difference is weighted by the learned 1×1 heads,
averaged over space and summed over layers.  No crop, no resize, no colour conversion.  Lower is better.
"""

from __future__ import annotations

import os

import torch
from safetensors.torch import load_file
from torch import nn

from diffir.bundled import asset_path
from diffir.metrics.backbones import ALEX_TAPS, VGG16_TAPS, alexnet_features, load_features, vgg16_features
from diffir.metrics.weights import find_weights

__all__ = ["LPIPS"]

_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
_NETS = {
    "alex": (alexnet_features, ALEX_TAPS, "alexnet"),
    "vgg": (vgg16_features, VGG16_TAPS, "vgg16"),
}


class LPIPS(nn.Module):
    """``LPIPS(net='alex'|'vgg', backbone=path)(x, y)`` → per-image distance, inputs NCHW RGB in [0, 1].

    ``backbone=None`` looks for the torchvision ImageNet file in ``$DIFFIR_METRIC_WEIGHTS``; raises
    :class:`~diffir.metrics.weights.MissingWeightsError` if absent.  ``backbone=False`` keeps random
    backbone weights (tests only; the numbers are meaningless).
    """

    def __init__(self, net: str = "alex", backbone: str | os.PathLike | None | bool = None) -> None:
        super().__init__()
        if net not in _NETS:
            raise ValueError(f"LPIPS net must be one of {sorted(_NETS)}, got {net!r}")
        make, self.taps, backbone_name = _NETS[net]
        self.features = make()
        if backbone is not False:
            path = find_weights(backbone_name, backbone or None, metric=f"lpips ({net})")
            load_features(self.features, path, backbone_name)
        heads = load_file(str(asset_path(f"lpips_v0.1_{net}_heads.safetensors")))
        self.heads = nn.ParameterList([nn.Parameter(heads[f"lin{i}"], requires_grad=False) for i in range(5)])
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1))
        self.eval().requires_grad_(False)

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, layer in enumerate(self.features[: self.taps[-1] + 1]):
            x = layer(x)
            if i in self.taps:
                out.append(x)
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        fx = self._taps(((x * 2 - 1) - self.shift) / self.scale)
        fy = self._taps(((y * 2 - 1) - self.shift) / self.scale)
        total = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
        for a, b, w in zip(fx, fy, self.heads, strict=True):
            a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + nn.functional.conv2d((a - b) ** 2, w.to(a.dtype)).mean(dim=(1, 2, 3))
        return total
