"""Options of generative restoration (a latent diffusion regenerates the image: DiffBIR), shared by the CLI, the
Python API and every generative architecture.  Prior-based models (DiffIR, HI-Diff) take none of these.

Values are checked here, once, so a bad option is one line naming the option and the fix, wherever it came from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

from diffir.errors import ConfigError

SAMPLERS = ("spaced", "ddim", "dpm++_m2")
START_POINTS = ("noise", "cond")
GUIDANCE_LOSSES = ("w_mse", "mse")
GUIDANCE_SPACES = ("rgb", "latent")

#: DiffBIR's default prompts (its inference CLI, v2.1); the text tower always runs, even on "".
DEFAULT_PROMPT = ""
DEFAULT_NEGATIVE_PROMPT = ("low quality, blurry, low-resolution, noisy, unsharp, weird textures")


@dataclass(frozen=True)
class GuidanceOptions:
    """Restoration guidance (DiffBIR supplement, Algorithm 1): at each step the predicted clean latent is pulled
    towards the stage-1 (cleaner) output, weighted by 1 − tanh(local gradient) for ``w_mse`` so flat regions
    follow the cleaner and textured ones are left to the generative prior.

    ``scale`` is the paper's s (0 = off); the step is applied while ``stop < t + 1 < start`` (model timesteps),
    ``repeat`` times per step, in ``rgb`` space (through the VAE decoder) or ``latent`` space (``mse`` only)."""

    scale: float = 0.0
    loss: str = "w_mse"
    space: str = "rgb"
    start: int = 1001
    stop: int = -1
    repeat: int = 1

    def __post_init__(self) -> None:
        _finite("guidance scale", self.scale, minimum=0.0)
        _choice("guidance loss", self.loss, GUIDANCE_LOSSES)
        _choice("guidance space", self.space, GUIDANCE_SPACES)
        if self.loss == "w_mse" and self.space == "latent":
            raise ConfigError("guidance loss w_mse works in rgb space only (its weight map is computed from the "
                              "RGB image); use --guidance-space rgb or --guidance-loss mse")
        if not isinstance(self.repeat, int) or self.repeat < 1:
            raise ConfigError(f"guidance repeat {self.repeat!r}: expected a whole number >= 1")
        if self.stop >= self.start:
            raise ConfigError(f"guidance window: stop {self.stop} must be below start {self.start} (model "
                              "timesteps, e.g. start 1001 stop -1 = every step)")

    @property
    def enabled(self) -> bool:
        return self.scale > 0


@dataclass(frozen=True)
class GenerationOptions:
    """How a generative model samples one image."""

    steps: int = 10
    sampler: str = "spaced"
    cfg_scale: float = 4.0
    rescale_cfg: bool = False
    prompt: str = DEFAULT_PROMPT
    negative_prompt: str = DEFAULT_NEGATIVE_PROMPT
    strength: float = 1.0  #: scale of every ControlNet output (control strength)
    noise_aug: int = 0  #: noise the condition latent to this timestep (0 = off)
    start_point: str = "noise"  #: "noise" or "cond" (q_sample of the condition latent at the last timestep)
    color_fix: bool = True  #: wavelet colour fix against the cleaner's output
    guidance: GuidanceOptions = field(default_factory=GuidanceOptions)
    #: Tiles, in output pixels (0 = whole image): the cleaner, the latent diffusion (Gaussian-blended latent
    #: tiles at every step) and the VAE (exact whole-image GroupNorm statistics).
    cleaner_tile: int = 0
    latent_tile: int = 0
    vae_tile: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or not 1 <= self.steps <= 1000:
            raise ConfigError(f"steps {self.steps!r}: expected a whole number from 1 to 1000")
        _choice("sampler", self.sampler, SAMPLERS)
        _finite("cfg scale", self.cfg_scale, minimum=0.0)
        _finite("strength", self.strength, minimum=0.0)
        if not isinstance(self.noise_aug, int) or not 0 <= self.noise_aug < 1000:
            raise ConfigError(f"noise_aug {self.noise_aug!r}: expected a timestep from 0 (off) to 999")
        _choice("start point", self.start_point, START_POINTS)
        for name in ("cleaner_tile", "latent_tile", "vae_tile"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name} {value!r}: expected a size in pixels >= 0 (0 = whole image)")
        if self.guidance.enabled and self.latent_tile:
            raise ConfigError("restoration guidance needs whole-image latent sampling: drop --latent-tile "
                              "(or --guidance-scale 0)")

    def replace(self, **changes: Any) -> GenerationOptions:
        return replace(self, **changes)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


def _choice(what: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{what} {value!r}: choose one of {', '.join(allowed)}")


def _finite(what: str, value: object, minimum: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < minimum:
        raise ConfigError(f"{what} {value!r}: expected a finite number >= {minimum:g}")
