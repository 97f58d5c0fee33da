"""MLP-Mixer block on token tensors (B, N, C), as used by HI-Diff's latent encoders and ``denoising`` network.

Attribute names follow the official state_dict layout (``patch_mixer.{0,2}``, ``channel_mixer.{0,2}``,
``norm1``, ``norm2``, registered in that order).
"""

from __future__ import annotations

import torch
from torch import nn


def _mlp(width: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))  # exact (erf) GELU


class MixerBlock(nn.Module):
    """x + token_mix(LN1(x)), then x + channel_mix(LN2(x)).

    Hidden widths are truncated like the official code: ``int(patch_expansion·N)`` (0.5·9 → 4) and
    ``int(channel_expansion·C)`` (HI-Diff pitfall list, spec §A.11 / README item 11).
    """

    def __init__(self, num_tokens: int, channels: int, patch_expansion: float, channel_expansion: float) -> None:
        super().__init__()
        self.patch_mixer = _mlp(num_tokens, int(patch_expansion * num_tokens))
        self.channel_mixer = _mlp(channels, int(channel_expansion * channels))
        self.norm1 = nn.LayerNorm(channels)  # eps 1e-5
        self.norm2 = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.patch_mixer(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.channel_mixer(self.norm2(x))
