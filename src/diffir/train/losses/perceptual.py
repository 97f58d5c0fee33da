"""VGG19 perceptual loss, with the network defined here in plain torch (no torchvision needed).

The layer indices of ``features`` follow torchvision's ``vgg19().features`` so an ImageNet VGG19 state_dict
(``features.N.weight``; from torchvision or converted to safetensors) loads as is.  Weights are never
downloaded: the user points ``losses.perceptual.vgg_weights`` at a file, or asks for ``random``: a seeded,
randomly-weighted VGG19.  Liu et al. (CVPR 2021, "Generic Perceptual Loss for Modeling Structured Output
Dependencies") found such a loss on par with the ImageNet one for super-resolution: the multi-layer structure, not
the trained weights, carries the multi-scale statistics.  That is what a machine without the ImageNet file can use.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from diffir.errors import ConfigError
from diffir.train.losses.weights_file import read_state_dict

# (name, out channels) per conv; "M" = 2×2 max-pool.  Blocks of 2, 2, 4, 4, 4 convs.
_VGG19 = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]
RANDOM = "random"  # losses.perceptual.vgg_weights: a seeded random-weight VGG19 instead of a file
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _layer_names() -> list[str]:
    """Name of every module in ``features`` in torchvision order: conv1_1, relu1_1, …, pool5."""
    names, block, conv = [], 1, 1
    for v in _VGG19:
        if v == "M":
            names.append(f"pool{block}")
            block, conv = block + 1, 1
        else:
            names += [f"conv{block}_{conv}", f"relu{block}_{conv}"]
            conv += 1
    return names


class VGG19Features(nn.Module):
    """VGG19 convolutional trunk returning the pre-activation outputs of the requested conv layers."""

    NAMES = _layer_names()

    def __init__(self, layers: list[str]) -> None:
        super().__init__()
        unknown = [n for n in layers if n not in self.NAMES]
        if unknown:
            raise ConfigError(f"unknown VGG19 layer {unknown[0]!r}; use names like conv3_4 or relu5_4")
        last = max(self.NAMES.index(n) for n in layers)
        modules: list[nn.Module] = []
        in_ch = 3
        for v in _VGG19:
            if v == "M":
                modules.append(nn.MaxPool2d(2, 2))
            else:
                modules += [nn.Conv2d(in_ch, int(v), 3, padding=1), nn.ReLU(inplace=False)]
                in_ch = int(v)
        self.features = nn.Sequential(*modules[: last + 1])
        self.layers = set(layers)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {}
        for name, module in zip(self.NAMES, self.features, strict=False):
            x = module(x)
            if name in self.layers:
                out[name] = x
        return out

    def randomise(self, seed: int = 0) -> None:
        """Seeded He-normal weights and zero biases: each ReLU layer keeps its input's scale, so deep and shallow
        layers contribute comparably (the 'robust initialisation' the random-weight loss needs)."""
        gen = torch.Generator().manual_seed(seed)
        for m in self.features:
            if isinstance(m, nn.Conv2d):
                fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
                with torch.no_grad():
                    m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
                    m.bias.zero_()

    def load_weights(self, path: str | Path) -> None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(
                f"VGG19 weights not found: {p}. Put torchvision's ImageNet VGG19 (vgg19-dcbb9e9d.pth, or a "
                "safetensors copy) there, or point to it with DIFFIR_VGG19=/path (shipped configs) or --set "
                "losses.perceptual.vgg_weights=/path; or train without it: --set losses.perceptual.weight=0"
            )
        sd = read_state_dict(p, "torchvision's ImageNet VGG19 weights", "losses.perceptual.vgg_weights")
        sd = {k.removeprefix("module.").removeprefix("vgg.") : v for k, v in sd.items()}
        sd = {k if k.startswith("features.") else f"features.{k}": v for k, v in sd.items()}
        own = self.state_dict()
        missing = [k for k in own if k not in sd]
        if missing:
            raise ConfigError(f"{p}: not a VGG19 state_dict (missing {missing[0]!r})")
        for k in own:
            if sd[k].shape != own[k].shape:
                raise ConfigError(f"{p}: {k} has shape {tuple(sd[k].shape)}, VGG19 expects {tuple(own[k].shape)}")
        self.load_state_dict({k: sd[k] for k in own})


class VGGPerceptualLoss(nn.Module):
    """Σ_layer w_layer · L1(VGG(pred), VGG(target)) on pre-ReLU features (BasicSR ``PerceptualLoss`` semantics:
    ImageNet normalisation of [0, 1] inputs, no range normalisation, no style term).  The VGG is frozen."""

    def __init__(self, layer_weights: dict[str, float], weights_path: str | Path | None,
                 imagenet_norm: bool = True) -> None:
        super().__init__()
        if weights_path is None:
            raise ConfigError(
                "losses.perceptual.weight > 0 needs a VGG19 weights file: --set losses.perceptual.vgg_weights="
                "/path/to/vgg19-dcbb9e9d.pth (torchvision's ImageNet VGG19, .pth or .safetensors; never downloaded), "
                "vgg_weights=random (a seeded random-weight VGG19), or --set losses.perceptual.weight=0")
        self.layer_weights = dict(layer_weights)
        self.vgg = VGG19Features(list(self.layer_weights))
        if str(weights_path) == RANDOM:
            self.vgg.randomise()
        else:
            self.vgg.load_weights(weights_path)
        self.vgg.requires_grad_(False).eval()
        self.imagenet_norm = imagenet_norm
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> VGGPerceptualLoss:
        super().train(mode)
        self.vgg.eval()  # a frozen feature extractor stays in eval mode
        return self

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std if self.imagenet_norm else x

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        fp = self.vgg(self._norm(pred.float()))
        with torch.no_grad():
            ft = self.vgg(self._norm(target.float()))
        return sum(w * F.l1_loss(fp[k], ft[k]) for k, w in self.layer_weights.items())  # type: ignore[return-value]
