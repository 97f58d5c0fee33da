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
