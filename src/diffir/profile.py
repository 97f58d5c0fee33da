"""Model accounting: parameters per part and multiply-accumulates via torch's FlopCounterMode."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from diffir.runtime.execution import reference_path


def parameter_breakdown(model: nn.Module) -> dict[str, int]:
    """Parameters per top-level part, labelled by the model's ``part_names`` (e.g. G → DIRformer)."""
    labels: dict[str, str] = getattr(model, "part_names", {})
    out: dict[str, int] = {}
    for name, child in model.named_children():
        n = sum(p.numel() for p in child.parameters())
        if n:
            out[labels.get(name, name)] = n
    out["total"] = sum(p.numel() for p in model.parameters())
    return out


@torch.no_grad()
def count_macs(model: nn.Module, size: int) -> int:
    """MACs of one inference forward on a size×size input (FLOPs / 2, the convention of SR papers' tables).

    Counted on the reference formulation, the one the papers count (the fast path fuses the attention-weighted
    values with ``project_out`` and does a few % fewer).  S1 models also run their prior encoder on a ground
    truth of the output size.  A generative model counts one restore with a single sampling step and no CFG.
    """
    c = model.descriptor  # type: ignore[attr-defined]
    lq = torch.zeros(1, c.in_channels, size, size)
    counter = FlopCounterMode(display=False)
    with counter, reference_path():
        if c.generative:  # one restore with a single sampling step and no CFG: the smallest whole run
            from diffir.archs.generation import GenerationOptions

            model.generate(torch.zeros(1, 3, size, size), GenerationOptions(steps=1, cfg_scale=1.0))
        elif c.stage == 1:
            model(lq, torch.zeros(1, c.out_channels, size * c.scale, size * c.scale))
        else:
            model(lq)
    return counter.get_total_flops() // 2
