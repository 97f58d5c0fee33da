"""What the pipelines, loader, CLI, evaluation and training know about a model: a small typed descriptor and
the restoration interface every architecture implements.  Nothing outside ``diffir/archs/<name>/`` looks at a
model's internals.

Restoring an image is the same recipe for every diffusion-prior architecture here (DiffIR, HI-Diff):

1. ``cond = model.condition_of(lq)`` — a deterministic encoding of the whole (padded) degraded image; tiled
   inference computes it exactly, tile by tile, from :meth:`RestorationModel.condition_encoder`;
2. ``prior = model.sample_prior(cond, generator)`` — the small diffusion, once per image;
3. ``out = model.restore(lq_or_tile, prior)`` — the restoration network, on the image or on each tile.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

from diffir.errors import CheckpointError

StateDict = dict[str, torch.Tensor]


@dataclass(frozen=True)
class ModelDescriptor:
    """The facts about a model that code outside its architecture package may use."""

    architecture: str  #: registered name, e.g. "diffir", "hidiff"
    task: str  #: "sr", "deblur" or "inpaint"
    stage: int  #: 1 = needs the ground truth (training teacher); 2 = restores from the degraded image alone
    scale: int  #: output size / input size
    in_channels: int  #: network input channels (inpainting: RGB·(1−mask) ⊕ mask = 4)
    out_channels: int
    size_multiple: int  #: input height and width must be multiples of this (pipelines reflect-pad to it)
    prior_shape: tuple[int, ...]  #: shape of one image's prior, e.g. (256,) or (16, 256)
    #: Tiled inference: the condition is computed exactly from tiles, and MDTA layers may attend with
    #: whole-image statistics gathered in a first pass (see :mod:`diffir.pipelines.attention_stats`).
    exact_tiled_condition: bool = True
    attention_statistics: bool = True
    #: A generative model (DiffBIR) restores through ``generate(lq, options, generator, report)`` with
    #: :class:`~diffir.archs.generation.GenerationOptions`, not through the prior recipe above; it pads and tiles
    #: inside (its cleaner, latent and VAE each have their own tiles), so ``size_multiple`` is 1.
    generative: bool = False


@dataclass(frozen=True)
class PooledEncoder:
    """An encoder of the form head(pool(features(prepare(lq)))) with an adaptive average pool to ``pool_size``,
    which lets tiled inference assemble the pooled features exactly from tiles (:mod:`diffir.pipelines.prior`)."""

    prepare: Callable[[torch.Tensor], torch.Tensor]  #: cheap re-arrangement of the image (pixel unshuffle)
    features: nn.Module  #: convolutions only (their receptive field gives the tile halo)
    pool_size: tuple[int, int]
    head: Callable[[torch.Tensor], torch.Tensor]  #: pooled (B, C, gh, gw) → condition


class RestorationModel(Protocol):
    """The interface of every architecture's stage-1 / stage-2 wrapper module."""

    config: Any

    @property
    def descriptor(self) -> ModelDescriptor: ...

    # stage 2 (inference and training)
    def condition_of(self, lq: torch.Tensor) -> torch.Tensor: ...
    def condition_encoder(self) -> PooledEncoder | None: ...
    def sample_prior(self, cond: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor: ...
    def restore(self, lq: torch.Tensor, prior: torch.Tensor) -> torch.Tensor: ...
    def attention_pass(self, lq: torch.Tensor, prior: torch.Tensor) -> None: ...

    # stage 1 (the teacher): the prior from the degraded image and its ground truth
    def prior(self, lq: torch.Tensor, gt: torch.Tensor) -> torch.Tensor: ...

    # training (``diffir train``): stage 2 learns to reach the stage-1 prior through the whole reverse chain
    def train_chain(self, prior_s1: torch.Tensor, cond: torch.Tensor, noise: torch.Tensor | None = None,
                    generator: torch.Generator | None = None) -> list[torch.Tensor]: ...
    def prior_parameters(self) -> list[nn.Parameter]: ...
    def init_from_stage1(self, teacher: nn.Module) -> None: ...
    def set_ablation(self, enabled: bool = True, reverse_noise: bool = False, optimization: str = "joint") -> None: ...


@dataclass
class Checkpoint:
    """Tensors read from one or several files (HI-Diff ships one file per network), container unwrapped."""

    parts: dict[str, StateDict]  #: role → state_dict; a single-file checkpoint has the one role ""
    meta: dict[str, Any]  #: diffir safetensors metadata (``config`` parsed), or {}
    source: str  #: for messages

def config_blame(stored: Mapping[str, Any], hints: Mapping[str, Any]) -> str:
    """The fix for an invalid config met while loading: where its values came from."""
    if hints:
        return "check the options given with the checkpoint (and its stored config)"
    if stored:
        return "the config stored in the file was edited or damaged: convert the original checkpoint again"
    return "the tensors do not describe a valid network: the file is damaged or not a diffir/official checkpoint"


def load_strict(model: nn.Module, sd: StateDict, source: str) -> None:
    """``load_state_dict(strict=True)`` with one-line errors naming the file and the first bad key."""
    own = model.state_dict()
    for k in own:
        if k not in sd:
            raise CheckpointError(f"{source}: missing key '{k}' (truncated file, or weights of another architecture)")
    for k, v in sd.items():
        if k not in own:
            raise CheckpointError(
                f"{source}: unexpected key '{k}' (weights of another architecture, or a S1/S2 mix-up)"
            )
        if tuple(v.shape) != tuple(own[k].shape):
            raise CheckpointError(
                f"{source}: key '{k}' has shape {tuple(v.shape)} but the inferred {model.descriptor.task} "
                f"x{model.descriptor.scale} config expects {tuple(own[k].shape)} (mixed checkpoints?)"
            )
        integer_buffer = not own[k].is_floating_point() and v.dtype == own[k].dtype  # index tables (SwinIR)
        if not (v.is_floating_point() or v.dtype in (torch.float8_e4m3fn, torch.float8_e5m2) or integer_buffer):
            raise CheckpointError(f"{source}: key '{k}' has non-float dtype {v.dtype}")
    model.load_state_dict(sd, strict=True)


class Architecture:
    """What an architecture package registers (see :mod:`diffir.archs`)."""

    name: ClassVar[str]
    description: ClassVar[str]

    def presets(self) -> Mapping[str, tuple[Any, str]]:
        """name → (config, one-line description)."""
        raise NotImplementedError

    def config_from_dict(self, data: Mapping[str, Any]) -> Any:
        raise NotImplementedError

    def build(self, config: Any) -> nn.Module:
        raise NotImplementedError

    def recognizes(self, ckpt: Checkpoint) -> bool:
        """Whether these tensors are this architecture's (official or diffir layout)."""
        raise NotImplementedError

    def load(self, ckpt: Checkpoint, config: Any | None, hints: Mapping[str, Any]) -> nn.Module:
        """Infer the config (unless given), convert to the canonical layout and strict-load; eval mode."""
        raise NotImplementedError

    def official_files(self, model: nn.Module) -> dict[str, StateDict]:
        """The model in the official layout: file stem → state_dict ("" for a single file)."""
        raise NotImplementedError

    def official_payload(self, stem: str, sd: StateDict) -> tuple[str, Any]:
        """File name and ``torch.save`` payload of one file of a multi-file official layout (BasicSR's
        ``<network>.pth`` holding ``{"params": state_dict}`` unless the architecture releases another container)."""
        return f"{stem}.pth", {"params": sd}
