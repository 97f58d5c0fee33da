"""Exponential moving average of the network weights (BasicSR semantics: parameters only, every iteration)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEMA:
    """``ema ← decay·ema + (1 − decay)·param`` over the parameters that train; buffers are copied.

    Frozen parameters (``requires_grad`` False when the EMA is made: DiffBIR's SD UNet, VAE, text tower and cleaner
    while its ControlNet trains) are shared with the model, not copied: averaging a constant would only add
    rounding, and a copy of a 1.3 G-parameter frozen base would double the memory.

    Unlike the official S2 (whose EMA copy of CPEN_S2/denoiser starts from an independent random init, specs §7.12)
    the EMA starts as an exact copy of the initialised network.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        shared = {id(p): p for p in model.parameters() if not p.requires_grad}
        self.module = copy.deepcopy(model, memo=shared).eval()
        self.trained = {name for name, p in model.named_parameters() if p.requires_grad}
        for name, p in self.module.named_parameters():
            if name in self.trained:
                p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        ema_params = dict(self.module.named_parameters())
        for name, p in model.named_parameters():
            if name in self.trained:
                ema_params[name].mul_(self.decay).add_(p.detach(), alpha=1 - self.decay)
        ema_buffers = dict(self.module.named_buffers())
        for name, b in model.named_buffers():
            ema_buffers[name].copy_(b)
