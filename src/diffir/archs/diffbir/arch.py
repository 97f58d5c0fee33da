"""DiffBIR as a registered architecture: presets, detection and zero-config loading of the released files.

A DiffBIR pipeline comes as three official files, recognised by their tensors (never by their names):
the Stable Diffusion 2.1-base checkpoint (``model.diffusion_model.*``, ``first_stage_model.*``,
``cond_stage_model.*``), an IRControlNet (bare keys with ``zero_convs.*``) and a stage-1 cleaner (SwinIR,
BSRNet or SCUNet).  Give them as a folder or comma-separated; every configuration is read off the tensors.
What the tensors cannot show is a hint: ``num_head_channels`` (64 in SD 2.x), ``text_heads`` (width / 64, as
OpenCLIP's towers), ``parameterization`` (from the
SD file's schedule buffers when present: a zero-terminal-SNR schedule is the v2.1 v-prediction model; else eps,
as SD 2.1-base), ``upscale`` (4; BSRNet's own factor) and ``task``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from diffir.archs.base import Architecture, Checkpoint, StateDict, config_blame, load_strict
from diffir.archs.diffbir.config import DiffBIRConfig
from diffir.errors import CheckpointError, ConfigError

#: Roles of the official files, and the names diffir writes them under (``save_model(..., official=True)``).
OFFICIAL_FILES = {"sd": "sd.ckpt", "controlnet": "controlnet.pth"}
_NEEDED = ("the Stable Diffusion 2.1-base checkpoint (v2-1_512-ema-pruned.ckpt or its diffusers folder, or "
           "sd2.1-base-zsnr-laionaes5.ckpt for v2.1)", "the IRControlNet (v2.pth, DiffBIR_v2.1.pt, v1_general.pth ...)",
           "a stage-1 cleaner (BSRNet.pth, realesrgan_s4_swinir_100k.pth, scunet_color_real_psnr.pth ...)")


def _role(sd: Mapping[str, Any]) -> str | None:
    from diffir.archs.diffbir.cleaners import detect_cleaner

    if any(k.startswith("model.diffusion_model.") for k in sd):
        return "sd"
    if "zero_convs.0.0.weight" in sd and "input_blocks.0.0.weight" in sd:
        return "controlnet"
    return "cleaner" if detect_cleaner(sd) else None


def _is_ours(sd: Mapping[str, Any]) -> bool:
    return any(k.startswith(("cldm.unet.", "cleaner.")) for k in sd)


class DiffBIRArchitecture(Architecture):
    name = "diffbir"
    description = ("DiffBIR: a regression cleaner, then IRControlNet on Stable Diffusion 2.1-base regenerates "
                   "detail (blind SR, denoising, faces), with region-adaptive restoration guidance")

    def presets(self) -> Mapping[str, tuple[DiffBIRConfig, str]]:
        from diffir.archs.diffbir.presets import PRESETS

        return PRESETS

    def config_from_dict(self, data: Mapping[str, Any]) -> DiffBIRConfig:
        return DiffBIRConfig.from_dict(dict(data))

    def build(self, config: DiffBIRConfig) -> nn.Module:
        from diffir.archs.diffbir.model import DiffBIR

        return DiffBIR(config)

    def recognizes(self, ckpt: Checkpoint) -> bool:
        if ckpt.meta.get("architecture") == self.name:
            return True
        roles = [_role(sd) for sd in ckpt.parts.values()]
        if len(ckpt.parts) == 1:
            sd = next(iter(ckpt.parts.values()))
            return _is_ours(sd) or roles[0] in ("sd", "controlnet")  # a lone cleaner is read as DiffBIR's stage 1
        return any(r in ("sd", "controlnet") for r in roles) or ("cleaner" in roles and None not in roles)

    def official_parts(self, ckpt: Checkpoint) -> dict[str, StateDict]:
        parts: dict[str, StateDict] = {}
        for name, sd in ckpt.parts.items():
            role = _role(sd)
            if role is None:
                raise CheckpointError(f"{name or ckpt.source}: not a DiffBIR file (expected {'; '.join(_NEEDED)})")
            if role in parts:
                raise CheckpointError(f"{ckpt.source}: two {role} files given; pass one of each")
            parts[role] = sd
        return parts

    def load(self, ckpt: Checkpoint, config: DiffBIRConfig | None, hints: Mapping[str, Any]) -> nn.Module:
        stored = ckpt.meta.get("config") if isinstance(ckpt.meta.get("config"), Mapping) else {}
        if len(ckpt.parts) == 1 and _is_ours(next(iter(ckpt.parts.values()))):
            sd = next(iter(ckpt.parts.values()))
            if config is None:
                if not stored:
                    raise CheckpointError(f"{ckpt.source}: a diffir DiffBIR file without its config metadata; "
                                          "write it again with diffir.save_model")
                try:
                    config = DiffBIRConfig.from_dict(dict(stored))
                except ConfigError as exc:
                    raise CheckpointError(f"{ckpt.source}: invalid model config ({exc}); "
                                          f"{config_blame(stored, {})}") from None
            model = self.build(config)
            load_strict(model, sd, ckpt.source)
            return model
        parts = self.official_parts(ckpt)
        if config is None:
            try:
                config = infer_config(parts, dict(hints), ckpt.source)
            except ConfigError as exc:
                raise CheckpointError(f"{ckpt.source}: invalid model config ({exc}); {config_blame({}, hints)}") \
                    from None
        model = self.build(config)
        load_strict(model, to_model_keys(parts), ckpt.source)
        return model

    def official_files(self, model: nn.Module) -> dict[str, StateDict]:
        sd = {k: v.detach() for k, v in model.state_dict().items()}
        files: dict[str, StateDict] = {}
        if model.config.stage == 2:
            files["sd"] = {**_moved(sd, "cldm.unet.", "model.diffusion_model."),
                           **_moved(sd, "cldm.vae.", "first_stage_model."), **_moved(sd, "text.", "cond_stage_model.")}
            files["controlnet"] = _moved(sd, "cldm.controlnet.", "")
        if model.config.cleaner != "none":
            files[model.config.cleaner] = _moved(sd, "cleaner.", "")
        return files

    def official_payload(self, stem: str, sd: StateDict) -> tuple[str, Any]:
        """The released containers: the SD checkpoint as a Lightning ``.ckpt`` (``state_dict`` entry), the
        ControlNet and the cleaner as bare state_dicts."""
        if stem == "sd":
            return OFFICIAL_FILES["sd"], {"state_dict": sd}
        return OFFICIAL_FILES.get(stem, f"{stem}.pth"), sd


def _moved(sd: StateDict, prefix: str, new_prefix: str) -> StateDict:
    """The entries under ``prefix``, with ``new_prefix`` in its place."""
    return {new_prefix + k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def to_model_keys(parts: Mapping[str, StateDict]) -> StateDict:
    """Official files → the state_dict of :class:`~diffir.archs.diffbir.model.DiffBIR` (float8/16 cast later by
    ``load_state_dict``); the SD file's schedule buffers and other extras are dropped, as the official loader
    ignores them."""
    from diffir.archs.diffbir.ldm import split_sd_state_dict

    out: StateDict = {}
    if "sd" in parts:
        sd = split_sd_state_dict(parts["sd"])
        out.update(_moved(sd.unet, "", "cldm.unet."))
        out.update(_moved(sd.vae, "", "cldm.vae."))
        out.update(_moved({k: v for k, v in sd.text.items() if not k.startswith("model.visual.")}, "", "text."))
    if "controlnet" in parts:
        out.update(_moved(parts["controlnet"], "", "cldm.controlnet."))
    if "cleaner" in parts:
        out.update(_moved(parts["cleaner"], "", "cleaner."))
    return out


def _schedule(other: Mapping[str, torch.Tensor]) -> str | None:
    """'v' for a zero-terminal-SNR SD checkpoint, 'eps' for a plain one, None without schedule buffers."""
    alphas = other.get("alphas_cumprod")
    if alphas is None or alphas.numel() == 0:
        return None
    return "v" if float(alphas.float()[-1]) == 0.0 else "eps"


def infer_config(parts: Mapping[str, StateDict], hints: dict[str, Any], source: str) -> DiffBIRConfig:
    """The pipeline's config from its official files; ``hints`` fill what the tensors do not store."""
    from diffir.archs.diffbir.cleaners import detect_cleaner, infer_cleaner_config
    from diffir.archs.diffbir.ldm import (
        TEXT_PREFIX,
        UNET_PREFIX,
        VAE_PREFIX,
        infer_controlnet_config,
        infer_unet_config,
        infer_vae_config,
        split_sd_state_dict,
    )
    from diffir.archs.diffbir.text import infer_text_config

    assumed: list[str] = []
    fields: dict[str, Any] = {}
    kind = hints.pop("cleaner", None)
    if "cleaner" in parts:
        kind = detect_cleaner(parts["cleaner"])
        cfg = infer_cleaner_config(kind, parts["cleaner"])
        fields["cleaner_config"] = {k: list(v) if isinstance(v, tuple) else v
                                    for k, v in dataclasses.asdict(cfg).items() if k != "meta"}
    elif "sd" in parts and kind != "none":
        raise CheckpointError(f"{source}: no stage-1 cleaner given; also give {_NEEDED[2]} (or the hint "
                              "cleaner='none' to run the diffusion on the resized input)")
    fields["cleaner"] = kind or "none"
    if "sd" not in parts or "controlnet" not in parts:
        if set(parts) == {"cleaner"}:
            return DiffBIRConfig(stage=1, task=hints.pop("task", "sr"), cleaner=fields["cleaner"],
                                 cleaner_config=fields["cleaner_config"], upscale=_upscale(fields, hints),
                                 meta={"assumed": assumed})
        missing = [what for role, what in zip(("sd", "controlnet"), _NEEDED, strict=False) if role not in parts]
        raise CheckpointError(f"{source}: a DiffBIR pipeline also needs {' and '.join(missing)}; give the files "
                              "comma-separated or in one folder")
    if "num_head_channels" not in hints:
        assumed.append("num_head_channels=64 (SD 2.x)")
    heads = int(hints.pop("num_head_channels", 64))
    sd = split_sd_state_dict(parts["sd"])
    if not sd.text:
        raise CheckpointError(f"{source}: the SD checkpoint has no text tower ({TEXT_PREFIX}*); use the full SD "
                              "2.1-base checkpoint")
    unet = infer_unet_config(sd.unet, heads, source=source, prefix=UNET_PREFIX)
    fields["unet"] = unet.to_dict()
    fields["controlnet"] = infer_controlnet_config(parts["controlnet"], heads, unet.in_channels,
                                                   source=source).to_dict()
    fields["vae"] = infer_vae_config(sd.vae, source=source, prefix=VAE_PREFIX).to_dict()
    text = {k: v for k, v in sd.text.items() if not k.startswith("model.visual.")}
    fields["text"] = dataclasses.asdict(infer_text_config(text, heads=hints.pop("text_heads", None)))
    fields["text"].pop("meta", None)
    parameterization = hints.pop("parameterization", None) or _schedule(sd.other)
    if parameterization is None:
        parameterization = "eps"
        assumed.append("parameterization=eps (SD 2.1-base; pass parameterization='v' for the v2.1 zero-SNR model)")
    upscale = _upscale(fields, hints)
    task = hints.pop("task", "sr" if upscale > 1 else "denoise")
    if hints:
        raise CheckpointError(f"{source}: unknown DiffBIR hint(s) {', '.join(sorted(hints))}; known: upscale, "
                              "task, parameterization, num_head_channels, cleaner")
    return DiffBIRConfig(task=task, parameterization=parameterization, zero_snr=parameterization == "v",
                         upscale=upscale, meta={"assumed": assumed}, **fields)


def _upscale(fields: Mapping[str, Any], hints: dict[str, Any]) -> int:
    if fields["cleaner"] == "bsrnet":
        hints.pop("upscale", None)
        return int(fields["cleaner_config"]["sf"])  # BSRNet upscales by itself; the output follows it
    return int(hints.pop("upscale", 4))


ARCHITECTURE = DiffBIRArchitecture()
