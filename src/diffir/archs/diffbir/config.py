"""Typed description of one DiffBIR pipeline: the cleaner (stage 1), the latent diffusion (UNet, IRControlNet,
VAE, text tower) and its schedule, and how images enter and leave it.

Each network keeps its own config dataclass next to its code (``swinir.SwinIRConfig``, ``unet.UNetConfig`` ...),
whose fields are the official constructor arguments; this config holds them as plain dicts (so it round-trips
through JSON, as every diffir config does) and validates each by building its dataclass.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from diffir.archs.common import ConfigMixin, checked_bool, checked_choice, checked_float, checked_int
from diffir.errors import ConfigError

CLEANERS = ("swinir", "bsrnet", "scunet", "none")
PARAMETERIZATIONS = ("eps", "v")


def cleaner_config_class(kind: str) -> Any:
    from diffir.archs.diffbir.cleaners import CLEANERS as classes

    return classes[kind][0]


def _as_dict(component: Any) -> dict[str, Any]:
    to_dict = getattr(component, "to_dict", None)
    data = to_dict() if to_dict is not None else dataclasses.asdict(component)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items() if k != "meta"}


def _component(name: str, cls: Any, data: Any) -> Any:
    """The component's dataclass built from ``data`` (its own checks name the bad field)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{name} must be a mapping of its official constructor arguments, got {data!r}")
    try:
        return cls(**data)
    except TypeError as exc:  # unknown or missing constructor argument
        raise ConfigError(f"{name}: {exc}") from None


@dataclass(frozen=True)
class DiffBIRConfig(ConfigMixin):
    """Hyper-parameters of a DiffBIR pipeline.  Defaults: the released v2.1 configuration (SwinIR cleaner trained
    on Real-ESRGAN degradations, SD 2.1-base with zero terminal SNR and v-prediction)."""

    task: str = "sr"
    #: 2: the whole pipeline (restores); 1: the cleaner alone (stage-1 training).
    stage: int = 2
    cleaner: str = "swinir"
    cleaner_config: dict[str, Any] = field(default_factory=dict)
    unet: dict[str, Any] = field(default_factory=dict)
    controlnet: dict[str, Any] = field(default_factory=dict)
    vae: dict[str, Any] = field(default_factory=dict)
    text: dict[str, Any] = field(default_factory=dict)
    parameterization: str = "v"
    zero_snr: bool = True
    timesteps: int = 1000
    linear_start: float = 0.00085
    linear_end: float = 0.012
    latent_scale: float = 0.18215
    #: Output size / input size.  A SwinIR or SCUNet cleaner works at the output size (the input is first
    #: resized bicubically by this factor); BSRNet upscales ×4 itself.
    upscale: int = 4
    #: The cleaner's output is resized so that its short side is at least this (official: 512, the size SD 2.1
    #: was trained at); tiny test pipelines use less.
    min_size: int = 512
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)

    KIND = "DiffBIR config"

    def __post_init__(self) -> None:
        checked_choice("task", self.task, ("sr", "denoise", "face"))
        checked_int("stage", self.stage, 1, 2)
        checked_choice("cleaner", self.cleaner, CLEANERS)
        checked_choice("parameterization", self.parameterization, PARAMETERIZATIONS)
        checked_bool("zero_snr", self.zero_snr)
        checked_int("timesteps", self.timesteps, 2, 10_000)
        checked_float("latent_scale", self.latent_scale, 0.0, 100.0)
        checked_int("upscale", self.upscale, 1, 16)
        checked_int("min_size", self.min_size, 8, 4096)
        if self.zero_snr and self.parameterization == "eps":
            raise ConfigError("zero_snr needs parameterization 'v' (an eps model has no x0 at the last timestep)")
        if self.cleaner == "none" and self.stage == 1:
            raise ConfigError("a stage-1 DiffBIR model is its cleaner: choose swinir, bsrnet or scunet")
        if self.cleaner == "bsrnet" and self.cleaner_config and self.cleaner_config.get("sf", 4) != self.upscale:
            raise ConfigError(f"a BSRNet cleaner upscales x{self.cleaner_config.get('sf')}: set upscale to match")
        # Every component as its full constructor arguments: configs compare equal however they were written
        # (a preset's few overrides or a config inferred from tensors), and a saved config is explicit.
        for name, component in self.components().items():
            object.__setattr__(self, "cleaner_config" if name == "cleaner" else name, _as_dict(component))

    def components(self) -> dict[str, Any]:
        """The component dataclasses (only the cleaner's for stage 1)."""
        out: dict[str, Any] = {}
        if self.cleaner != "none":
            out["cleaner"] = _component(f"cleaner_config ({self.cleaner})", cleaner_config_class(self.cleaner),
                                        self.cleaner_config)
        if self.stage == 2:
            from diffir.archs.diffbir.text import TextConfig
            from diffir.archs.diffbir.unet import UNetConfig
            from diffir.archs.diffbir.vae import VAEConfig

            out["unet"] = _component("unet", UNetConfig, self.unet)
            out["controlnet"] = _component("controlnet", UNetConfig, self.controlnet)
            out["vae"] = _component("vae", VAEConfig, self.vae)
            out["text"] = _component("text", TextConfig, self.text)
        return out

    @property
    def scale(self) -> int:
        return self.upscale

    @property
    def pre_resize(self) -> bool:
        """Whether the input is resized to the output size before the cleaner (all but BSRNet)."""
        return self.cleaner != "bsrnet"
