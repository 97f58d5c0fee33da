"""LaMa's "high receptive field" perceptual loss (ResNet-PL), optional: needs the user's ADE20k encoder weights.

The network is the ADE20k segmentation encoder ``resnet50dilated`` (a ResNet-50 with a three-conv "deep stem" of
64/64/128 channels, and layers 3 and 4 turned from stride 2 into dilation 2 and 4, so the output stride is 8),
defined here in plain torch with the upstream parameter names so ``encoder_epoch_20.pth`` loads as is.
Loss = weight · Σ over the four stage outputs of MSE(features(pred), features(target)), on ImageNet-normalised
inputs; the encoder is frozen.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from diffir.errors import ConfigError
from diffir.train.losses.weights_file import read_state_dict

_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


class _Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int, dilation: int, downsample: nn.Module | None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet50Dilated(nn.Module):
    """Returns the outputs of layer1..layer4 (strides 4, 8, 8, 8)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 64, 3, 2, 1, bias=False), nn.BatchNorm2d(64)
        self.conv2, self.bn2 = nn.Conv2d(64, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64)
        self.conv3, self.bn3 = nn.Conv2d(64, 128, 3, 1, 1, bias=False), nn.BatchNorm2d(128)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.inplanes = 128
        # (planes, blocks, stride of the first block, dilation of the first block, dilation of the others)
        self.layer1 = self._layer(64, 3, 1, 1, 1)
        self.layer2 = self._layer(128, 4, 2, 1, 1)
        self.layer3 = self._layer(256, 6, 1, 1, 2)  # stride 2 removed: first block dilation 1, then 2
        self.layer4 = self._layer(512, 3, 1, 2, 4)  # stride 2 removed: first block dilation 2, then 4

    def _layer(self, planes: int, blocks: int, stride: int, first_dilation: int, dilation: int) -> nn.Sequential:
        out = planes * 4
        down = nn.Sequential(nn.Conv2d(self.inplanes, out, 1, stride, bias=False), nn.BatchNorm2d(out))
        layers = [_Bottleneck(self.inplanes, planes, stride, first_dilation, down)]
        self.inplanes = out
        layers += [_Bottleneck(out, planes, 1, dilation, None) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = self.maxpool(F.relu(self.bn3(self.conv3(x))))
        feats = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            feats.append(x)
        return feats


class ResNetPLLoss(nn.Module):
    def __init__(self, weights_path: str | Path | None) -> None:
        super().__init__()
        if weights_path is None:
            raise ConfigError("losses.resnet_pl.weight > 0 needs losses.resnet_pl.weights (ade20k encoder file)")
        p = Path(weights_path)
        if not p.is_file():
            raise ConfigError(f"ResNet-PL weights not found: {p} (the ade20k resnet50dilated encoder_epoch_20.pth; "
                              "or set losses.resnet_pl.weight: 0)")
        self.encoder = ResNet50Dilated()
        sd = read_state_dict(p, "the ade20k resnet50dilated encoder_epoch_20.pth", "losses.resnet_pl.weights")
        sd = {k.removeprefix("module.").removeprefix("encoder."): v for k, v in sd.items()}
        own = self.encoder.state_dict()
        missing = [k for k in own if k not in sd]
        if missing:
            raise ConfigError(f"{p}: not a resnet50dilated encoder state_dict (missing {missing[0]!r})")
        self.encoder.load_state_dict({k: sd[k] for k in own})
        self.encoder.requires_grad_(False).eval()
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> ResNetPLLoss:
        super().train(mode)
        self.encoder.eval()
        return self

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        fp = self.encoder((pred.float() - self.mean) / self.std)
        with torch.no_grad():
            ft = self.encoder((target.float() - self.mean) / self.std)
        return torch.stack([F.mse_loss(a, b) for a, b in zip(fp, ft, strict=True)]).sum()
