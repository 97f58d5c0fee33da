"""Infer every DiffIR hyper-parameter from a state_dict's tensor shapes and key presence (spandrel-style).

Works on the canonical key layout (``G.*``, ``E.*`` for S1, ``condition.*`` + ``denoise.*`` for S2, optional
``diffusion.*`` schedule buffers).  Nothing is guessed silently: a value that cannot be read from the tensors
(e.g. the β range of a checkpoint that does not carry the schedule) is taken from ``hints`` or the official
default and recorded in ``config.meta["assumed"]``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from diffir.archs.diffir.config import DiffIRConfig
from diffir.archs.tensors import count_indexed, expansion_factor
from diffir.diffusion.schedule import make_schedule
from diffir.errors import CheckpointError

LEVELS = ("encoder_level1", "encoder_level2", "encoder_level3", "latent")
#: What a checkpoint without schedule buffers is assumed to use: the config defaults (the official values).
DEFAULT_DIFFUSION = {k: getattr(DiffIRConfig, k) for k in ("timesteps", "linear_start", "linear_end")}


def _diffusion_params(sd: Mapping[str, torch.Tensor]) -> dict[str, Any] | None:
    betas = sd.get("diffusion.betas")
    if betas is None:
        return None
    betas = betas.detach().double().cpu()
    timesteps = betas.numel()
    stored = {k.split(".", 1)[1]: v for k, v in sd.items() if k.startswith("diffusion.") and k.count(".") == 1}
    b0, b1 = float(betas[0]), float(betas[-1])
    for digits in [*range(1, 9), None]:
        start = b0 if digits is None else round(b0, digits)
        end = b1 if digits is None else round(b1, digits)
        if timesteps == 1:  # linspace of one point is the start: the end is unobservable and irrelevant
            end = DEFAULT_DIFFUSION["linear_end"]
        sched = make_schedule(timesteps, start, end)
        if all(torch.equal(sched[k], v.detach().float().cpu()) for k, v in stored.items() if k in sched):
            return {"timesteps": timesteps, "linear_start": start, "linear_end": end}
    # Report the first buffer that disagrees with the schedule whose betas match the stored ones.
    for digits in range(1, 9):
        sched = make_schedule(timesteps, round(b0, digits), round(b1, digits))
        if torch.equal(sched["betas"], betas.float()):
            break
    bad = next((k for k, v in stored.items() if k in sched and not torch.equal(sched[k], v.float().cpu())), "betas")
    raise CheckpointError(
        f"buffer 'diffusion.{bad}' does not follow DiffIR's β schedule (make_schedule) of its betas "
        f"{[round(b, 6) for b in betas.tolist()]}: the file was edited or is not a DiffIR checkpoint"
    )


def infer_config(sd: Mapping[str, torch.Tensor], hints: Mapping[str, Any] | None = None) -> DiffIRConfig:
    """Build the :class:`DiffIRConfig` that ``sd`` was saved from.

    ``hints`` is the config stored in diffir safetensors metadata.  A complete one is used as is after checking
    that it builds exactly the tensors in ``sd`` (it keeps values the shapes cannot show, e.g. the exact FFN
    factor 2.66 vs 2.7 or the diffusion settings of a S1 model).
    """
    hints = dict(hints or {})
    if set(DiffIRConfig.field_names()) <= set(hints):
        return _checked_hint(sd, hints)
    if "G.patch_embed.proj.weight" not in sd:
        sample = ", ".join(list(sd)[:3]) or "<empty>"
        raise CheckpointError(
            f"no DiffIR network found (missing 'G.patch_embed.proj.weight'; keys start with: {sample})"
        )
    stage = 2 if "condition.E.0.weight" in sd else 1 if "E.E.0.weight" in sd else 0
    if stage == 0:
        raise CheckpointError("found a DIRformer but no CPEN ('E.E.0.weight' for S1 or 'condition.E.0.weight' for S2)")
    dim, embed_channels = sd["G.patch_embed.proj.weight"].shape[:2]

    if "G.tail.1.weight" in sd:
        task = "sr"
        out_channels = sd["G.tail.1.weight"].shape[0]
        ratio = embed_channels // out_channels
        scales = {1: 4, 4: 2, 16: 1}
        if embed_channels % out_channels or ratio not in scales:
            raise CheckpointError(
                f"SR checkpoint with {embed_channels} input channels for {out_channels} output channels: "
                "not a x4/x2/x1 DiffIR layout"
            )
        scale, in_channels = scales[ratio], out_channels
    elif "G.output.weight" in sd:
        out_channels = sd["G.output.weight"].shape[0]
        in_channels, scale = embed_channels, 1
        has_refinement = any(k.startswith("G.refinement.") for k in sd)
        task = hints.get("task") or ("deblur" if has_refinement or in_channels != 4 else "inpaint")
    else:
        raise CheckpointError("found no output head ('G.tail.*' for SR or 'G.output.weight' for deblur/inpainting)")

    num_blocks = tuple(count_indexed(sd, f"G.{lvl}.", ".norm1.body.weight") for lvl in LEVELS)
    heads, pairs = [], []
    for i, lvl in enumerate(LEVELS):
        width = dim * 2**i
        temp = sd.get(f"G.{lvl}.0.attn.temperature")
        heads.append(int(temp.shape[0]) if temp is not None else (1, 2, 4, 8)[i])
        proj_out = sd.get(f"G.{lvl}.0.ffn.project_out.weight")
        if proj_out is not None:
            pairs.append((width, int(proj_out.shape[1])))
    refine = count_indexed(sd, "G.refinement.", ".norm1.body.weight")
    dec1 = sd.get("G.decoder_level1.0.ffn.project_out.weight")
    if dec1 is not None:
        pairs.append((2 * dim, int(dec1.shape[1])))
    if not pairs:
        raise CheckpointError("cannot infer the FFN width: the DIRformer has no transformer blocks")
    first = next(k for k in sd if k.startswith("G.") and k.endswith(".norm1.body.weight"))
    layernorm = "WithBias" if first.replace(".weight", ".bias") in sd else "BiasFree"
    bias = any(k.endswith(".attn.qkv.bias") for k in sd)

    cpen = "E.E." if stage == 1 else "condition.E."
    # ResBlocks sit at E.2 ... E.(1+R) (index 0 is the first conv, 1 its activation).
    n_encoder_res = sum(1 for k in sd if re.fullmatch(re.escape(cpen) + r"\d+\.body\.0\.weight", k))
    data: dict[str, Any] = dict(
        task=task, stage=stage, scale=scale, in_channels=in_channels, out_channels=out_channels, dim=dim,
        num_blocks=num_blocks, num_refinement_blocks=refine, heads=tuple(heads),
        ffn_expansion_factor=expansion_factor(pairs), bias=bias, layernorm=layernorm,
        dual_pixel="G.skip_conv.weight" in sd, n_encoder_res=n_encoder_res,
    )
    assumed: list[str] = []
    if stage == 2:
        data["n_denoise_res"] = sum(1 for k in sd if re.fullmatch(r"denoise\.resmlp\.\d+\.resmlp\.0\.weight", k))
        diff = _diffusion_params(sd)
        if diff is None:
            diff = {k: hints.get(k, v) for k, v in DEFAULT_DIFFUSION.items()}
            assumed = [k for k in DEFAULT_DIFFUSION if k not in hints]
        data.update(diff)
    config = DiffIRConfig(**data)
    config.meta["assumed"] = assumed
    _check_cpen_channels(sd, config)
    return config


def _check_cpen_channels(sd: Mapping[str, torch.Tensor], config: DiffIRConfig) -> None:
    key = "E.E.0.weight" if config.stage == 1 else "condition.E.0.weight"
    want = config.cpen_s1_channels if config.stage == 1 else config.cpen_s2_channels
    got = sd[key].shape[1]
    if got != want:
        raise CheckpointError(
            f"'{key}' takes {got} channels but a {config.task} x{config.scale} DiffIR CPEN takes {want}: "
            "the DIRformer and CPEN come from different task/scale configurations"
        )


def _checked_hint(sd: Mapping[str, torch.Tensor], hints: Mapping[str, Any]) -> DiffIRConfig:
    from diffir.archs.diffir.model import build_model

    config = DiffIRConfig.from_dict(dict(hints))
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in build_model(config).state_dict().items()}
    got = {k: tuple(v.shape) for k, v in sd.items() if not k.startswith("diffusion.")}
    if expected != got:
        diff = sorted(set(expected.items()) ^ set(got.items()))[:1]
        raise CheckpointError(f"the config stored in the file does not match its tensors (first difference: {diff})")
    config.meta["assumed"] = []
    return config
