"""The sampling options of generative models (DiffBIR) on the command line: one argument group, turned into
:class:`~diffir.archs.generation.GenerationOptions` only when one of them is given (a prior-based model then
refuses them with one line instead of ignoring them)."""

from __future__ import annotations

import argparse

from diffir.archs.generation import (
    GUIDANCE_LOSSES,
    GUIDANCE_SPACES,
    SAMPLERS,
    START_POINTS,
    GenerationOptions,
    GuidanceOptions,
)
from diffir.option_values import whole_number

_GUIDANCE = {"guidance_scale": "scale", "guidance_loss": "loss", "guidance_space": "space",
             "guidance_start": "start", "guidance_stop": "stop", "guidance_repeat": "repeat"}
_OPTIONS = {"steps": "steps", "sampler": "sampler", "cfg": "cfg_scale", "rescale_cfg": "rescale_cfg",
            "prompt": "prompt", "negative_prompt": "negative_prompt", "strength": "strength",
            "noise_aug": "noise_aug", "start_point": "start_point", "color_fix": "color_fix",
            "cleaner_tile": "cleaner_tile", "latent_tile": "latent_tile", "vae_tile": "vae_tile"}


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _timestep(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole-number timestep, got {text!r}") from None


def add_generation_arguments(p: argparse.ArgumentParser) -> None:
    d, g = GenerationOptions(), GuidanceOptions()
    group = p.add_argument_group("generative models (DiffBIR)")
    group.add_argument("--steps", type=whole_number(1, 1000, "a number of steps"), metavar="N",
                       help=f"diffusion steps (default: {d.steps})")
    group.add_argument("--sampler", choices=SAMPLERS, help=f"sampler (default: {d.sampler})")
    group.add_argument("--cfg", type=_number, metavar="S",
                       help=f"classifier-free guidance scale; 1 = off (default: {d.cfg_scale:g})")
    group.add_argument("--rescale-cfg", action="store_const", const=True,
                       help="raise the CFG scale from 1 at the first step towards S+1 at the last")
    group.add_argument("--prompt", metavar="TEXT", help="positive prompt (default: empty)")
    group.add_argument("--negative-prompt", metavar="TEXT",
                       help=f"negative prompt (default: {d.negative_prompt!r})")
    group.add_argument("--strength", type=_number, metavar="S",
                       help=f"control strength, the scale of every ControlNet output (default: {d.strength:g})")
    group.add_argument("--noise-aug", type=whole_number(0, 999, "a timestep"), metavar="T",
                       help="noise the condition latent to timestep T (default: 0 = off)")
    group.add_argument("--start-point", choices=START_POINTS,
                       help="start from pure noise (default) or from the noised condition latent")
    group.add_argument("--no-color-fix", dest="color_fix", action="store_const", const=False,
                       help="skip the wavelet colour fix against the cleaner's output")
    group.add_argument("--guidance-scale", type=_number, metavar="S",
                       help="restoration guidance scale s (supplement, Algorithm 1): pulls the result towards "
                            f"the cleaner's output, most in flat regions with w_mse; 0 = off (default: {g.scale:g})")
    group.add_argument("--guidance-loss", choices=GUIDANCE_LOSSES,
                       help=f"w_mse: region-adaptive (1 - tanh of the local gradient); mse: uniform (default: "
                            f"{g.loss})")
    group.add_argument("--guidance-space", choices=GUIDANCE_SPACES,
                       help=f"rgb: through the VAE decoder; latent: against the encoded cleaner output, mse only "
                            f"(default: {g.space})")
    group.add_argument("--guidance-start", type=_timestep, metavar="T",
                       help=f"guide while stop < t+1 < start (model timesteps; default start {g.start})")
    group.add_argument("--guidance-stop", type=_timestep, metavar="T", help=f"(default stop {g.stop})")
    group.add_argument("--guidance-repeat", type=whole_number(1, 100, "a repeat count"), metavar="N",
                       help=f"guidance updates per step (default: {g.repeat})")
    for name, what in (("cleaner", "the cleaner (stage 1)"), ("latent", "the latent diffusion (Gaussian-blended "
                                                                          "latent tiles at every step)"),
                       ("vae", "the VAE (whole-image GroupNorm statistics)")):
        group.add_argument(f"--{name}-tile", type=whole_number(0, what="a tile size"), metavar="N",
                           help=f"tile {what} with N-pixel tiles (output pixels; default 0 = whole image)")


def generation_options(args: argparse.Namespace) -> GenerationOptions | None:
    """The options given on the command line, or None when none was (the model's defaults)."""
    given = {field: getattr(args, arg) for arg, field in _OPTIONS.items() if getattr(args, arg, None) is not None}
    guidance = {field: getattr(args, arg) for arg, field in _GUIDANCE.items()
                if getattr(args, arg, None) is not None}
    if not given and not guidance:
        return None
    if guidance:
        given["guidance"] = GuidanceOptions(**guidance)
    return GenerationOptions(**given)
