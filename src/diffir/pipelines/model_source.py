"""The stage-2 model a pipeline runs, from a module, a name or a path (resolved by :mod:`diffir.io.locate`)."""

from __future__ import annotations

import os

from torch import nn

from diffir.archs.base import ModelDescriptor
from diffir.errors import DiffIRError


def load_inference_model(spec: str | os.PathLike | nn.Module) -> nn.Module:
    """A stage-2 model of any architecture in eval mode, from a module, a checkpoint path or a model name."""
    if isinstance(spec, nn.Module):
        model = spec
    else:
        from diffir.io.checkpoint import load_model

        model = load_model(spec)
    descriptor = getattr(model, "descriptor", None)
    if not isinstance(descriptor, ModelDescriptor):
        raise DiffIRError(f"{type(model).__name__} is not a diffir model (see `diffir list`)")
    if descriptor.stage == 1:
        raise DiffIRError("this is a stage-1 (S1) model, which needs the ground truth; restore with a stage-2 model")
    return model.eval()
