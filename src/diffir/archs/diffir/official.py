"""DiffIR's official key layout: the S2 module also stores its 12 schedule buffers and duplicates of the
denoiser and CPEN_S2 under ``diffusion.*`` (shared storage).  They are derived, not learned: verified and dropped
on load, re-emitted on save."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from diffir.archs.base import StateDict
from diffir.archs.diffir.config import DiffIRConfig
from diffir.archs.diffir.model import DiffIRS1, DiffIRS2
from diffir.diffusion.schedule import BUFFER_NAMES, make_schedule
from diffir.errors import CheckpointError


def official_extras(model: DiffIRS2, sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The entries the official S2 module adds: 12 schedule buffers, then ``diffusion.model.*`` and
    ``diffusion.condition.*`` duplicates (sharing storage with ``denoise.*`` / ``condition.*``)."""
    extra: dict[str, torch.Tensor] = {f"diffusion.{k}": v for k, v in model.diffusion.schedule_state().items()}
    for k, v in sd.items():
        if k.startswith("denoise."):
            extra["diffusion.model." + k.removeprefix("denoise.")] = v
    for k, v in sd.items():
        if k.startswith("condition."):
            extra["diffusion." + k] = v
    return extra


def to_official_state_dict(model: DiffIRS1 | DiffIRS2) -> StateDict:
    """State_dict in the official key layout and order (S2: G, condition, denoise, buffers, duplicates)."""
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    if isinstance(model, DiffIRS2):
        sd.update(official_extras(model, sd))
    return sd


def drop_official_extras(sd: StateDict, config: DiffIRConfig, source: str) -> StateDict:
    """Verify and drop the official S2 duplicates and schedule buffers."""
    if config.stage != 2:
        return sd
    out: StateDict = {}
    schedule = make_schedule(config.timesteps, config.linear_start, config.linear_end)
    for k, v in sd.items():
        if not k.startswith("diffusion."):
            out[k] = v
            continue
        rest = k.removeprefix("diffusion.")
        if rest in BUFFER_NAMES:
            if not torch.equal(v.detach().float().cpu(), schedule[rest]):
                raise CheckpointError(f"{source}: buffer '{k}' differs from the schedule of its own betas")
            continue
        src = "denoise." + rest.removeprefix("model.") if rest.startswith("model.") else rest
        if not rest.startswith(("model.", "condition.")) or src not in sd:
            raise CheckpointError(f"{source}: unexpected key '{k}' (not part of the official DiffIR S2 layout)")
        if not _same(v, sd[src]):
            raise CheckpointError(f"{source}: duplicate '{k}' differs from '{src}'; the file is inconsistent")
    return out


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    # float8 tensors (e.g. the parity files) have no comparison kernels; their float32 casts are exact.
    if a.element_size() == 1 and a.is_floating_point():
        a, b = a.float(), b.float()
    return a.shape == b.shape and torch.equal(a, b)
