"""Code every architecture package shares: its config's conversions and the stage-1/stage-2 model base."""

from __future__ import annotations

import dataclasses
import difflib
import json
from typing import Any, TypeVar

import torch
from torch import nn

from diffir.archs.base import ModelDescriptor
from diffir.errors import ConfigError

C = TypeVar("C", bound="ConfigMixin")


# Generous upper bounds of the hyper-parameters: far above every released configuration, low enough that a
# damaged or hand-edited config fails here instead of trying to allocate (or loop over) billions of layers.
MAX_WIDTH = 4096  #: dim, embed_dim, denoiser widths
MAX_DEPTH = 256  #: blocks per level, residual blocks
MAX_HEADS = 256
MAX_CHANNELS = 64  #: image channels
MAX_TIMESTEPS = 10_000  #: same bound as ``diffusion.timesteps`` of the training config
MAX_FACTOR = 64.0  #: expansion factors


def _shown(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def checked_int(name: str, value: Any, low: int, high: int) -> int:
    """``value`` as an int in [low, high], else a ConfigError naming the field ("dim must be a positive ...")."""
    if isinstance(value, float) and value.is_integer():  # 8.0 from a YAML/JSON writer is 8
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        what = "a positive integer" if low == 1 else f"an integer >= {low}"
        raise ConfigError(f"{name} must be {what} (at most {high}), got {_shown(value)}")
    return value


def checked_ints(name: str, value: Any, length: int, low: int, high: int) -> tuple[int, ...]:
    """A list/tuple of ``length`` ints in [low, high]."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != length:
        raise ConfigError(f"{name} must be a list of {length} integers (levels 1-{length} of the U-Net), "
                          f"got {_shown(value)}")
    return tuple(checked_int(f"{name}[{i}]", v, low, high) for i, v in enumerate(value))


def checked_float(name: str, value: Any, low: float, high: float) -> float:
    """``value`` as a float with low < value <= high (finite)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low < value <= high:
        raise ConfigError(f"{name} must be a number in ({low:g}, {high:g}], got {_shown(value)}")
    return float(value)


def checked_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {_shown(value)}")
    return value


def checked_choice(name: str, value: Any, choices: tuple) -> Any:
    if not isinstance(value, type(choices[0])) or value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(map(str, choices))}; got {_shown(value)}")
    return value


def checked_beta_range(start: Any, end: Any) -> tuple[float, float]:
    """The β range of a linear schedule: 0 < linear_start < linear_end < 1."""
    for name, value in (("linear_start", start), ("linear_end", end)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
            raise ConfigError(f"{name} must be a number in (0, 1), got {_shown(value)}")
    if not start < end:
        raise ConfigError(f"the beta range needs linear_start < linear_end, got {start:g}..{end:g}")
    return float(start), float(end)


def check_keys(data: dict[str, Any], allowed: list[str], what: str) -> None:
    """Reject unknown keys with a did-you-mean suggestion."""
    for key in data:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; allowed: {', '.join(allowed)}"
            raise ConfigError(f"unknown {what} key {key!r}{hint}")


class ConfigMixin:
    """Conversions of a frozen config dataclass with a ``meta`` field (provenance, never part of the network)."""

    #: How unknown keys are named in errors ("model config", "HI-Diff config" ...).
    KIND = "model config"

    def replace(self: C, **changes: Any) -> C:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)  # type: ignore[call-overload]
        d.pop("meta")
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any], **extra: Any) -> C:
        data = {**data, **extra}
        check_keys(data, cls.field_names(), cls.KIND)
        return cls(**data)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls) if f.name != "meta"]  # type: ignore[arg-type]


class PriorModel(nn.Module):
    """Base of the stage-1/stage-2 wrappers whose restoration network ``G(lq, prior)`` has a ``features`` body."""

    architecture: str  #: the registered name
    #: 1 or 2 in the stage wrappers: a config of the other stage is built as this one (S2 from an S1 preset ...)
    STAGE: int = 0
    config: Any
    G: nn.Module

    def __init__(self, config: Any) -> None:
        super().__init__()
        if self.STAGE and config.stage != self.STAGE:
            config = config.replace(stage=self.STAGE)
        self.config = config

    @property
    def prior_shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    @property
    def descriptor(self) -> ModelDescriptor:
        c = self.config
        return ModelDescriptor(
            architecture=self.architecture, task=c.task, stage=c.stage, scale=c.scale, in_channels=c.in_channels,
            out_channels=c.out_channels, size_multiple=c.size_multiple, prior_shape=self.prior_shape,
        )

    def restore(self, lq: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        """The restoration network with a given prior (tiling shares one prior across tiles)."""
        return self.G(lq, prior.to(lq.dtype))

    def attention_pass(self, lq: torch.Tensor, prior: torch.Tensor) -> None:
        """Everything that feeds the attention layers (the body of ``G``, not its output head)."""
        self.G.features(lq, prior.to(lq.dtype))
