"""HI-Diff as a registered architecture: presets, detection, loading and the official per-network layout.

The authors release one BasicSR ``.pth`` per network (``net_g``, ``net_le_dm``, ``net_d``, and the stage-1
``net_le``), each ``{'params': state_dict}`` with bare keys.  diffir keeps one module per stage whose state_dict
prefixes map 1:1 to those files, and writes a single safetensors file.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from diffir.archs.base import Architecture, Checkpoint, StateDict, config_blame, load_strict
from diffir.archs.hidiff.config import HIDiffConfig
from diffir.errors import CheckpointError, ConfigError

#: official file (role) ↔ state_dict prefix of diffir's HI-Diff modules
PREFIXES = {"net_g": "G.", "net_le": "le.", "net_le_dm": "le_dm.", "net_d": "denoise."}


def _role(sd: Mapping[str, torch.Tensor]) -> str | None:
    """Which official network a bare state_dict is, from its tensors (file names are not trusted)."""
    if "patch_embed.proj.weight" in sd and "down_1.1.weight" in sd:
        return "net_g"
    if "conv1.0.weight" in sd and "mlp.norm1.weight" in sd:
        # LE sees [GT, LQ] (6 channels), LE_DM the LQ (3), both pixel-unshuffled by 4 (×16 channels)
        return "net_le" if sd["conv1.0.weight"].shape[1] == 6 * 16 else "net_le_dm"
    if "time_mlp" in sd or "resmlp.0.weight" in sd:
        return "net_d"
    return None


def _split_prefixed(sd: Mapping[str, torch.Tensor]) -> dict[str, StateDict]:
    """diffir's one-file layout (``G.*``, ``le_dm.*`` ...) → official roles."""
    parts: dict[str, StateDict] = {}
    for role, prefix in PREFIXES.items():
        part = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
        if part:
            parts[role] = part
    return parts


def preset_hints(name: str) -> dict[str, Any]:
    """The values of a released preset that the files do not store (``hidiff_gopro`` or ``hidiff_gopro_s2``)."""
    from diffir.archs.hidiff.detect import UNSTORED
    from diffir.archs.hidiff.presets import PRESETS

    key = name if name in PRESETS else f"{name}_s2"
    if key not in PRESETS:
        raise CheckpointError(f"unknown HI-Diff preset {name!r}; choose one of "
                              f"{', '.join(sorted({n.rsplit('_', 1)[0] for n in PRESETS}))}")
    config = PRESETS[key][0]
    return {k: getattr(config, k) for k in UNSTORED}


class HIDiffArchitecture(Architecture):
    name = "hidiff"
    description = ("HI-Diff (NeurIPS 2023): Restormer with hierarchical cross-attention to 16 prior tokens sampled "
                   "by a small diffusion (deblurring)")

    def presets(self) -> Mapping[str, tuple[HIDiffConfig, str]]:
        from diffir.archs.hidiff.presets import PRESETS

        return PRESETS

    def config_from_dict(self, data: Mapping[str, Any]) -> HIDiffConfig:
        return HIDiffConfig.from_dict(dict(data))

    def build(self, config: HIDiffConfig) -> nn.Module:
        from diffir.archs.hidiff.model import build_model

        return build_model(config)

    def recognizes(self, ckpt: Checkpoint) -> bool:
        if ckpt.meta.get("architecture") == self.name:
            return True
        return any(_role(sd) == "net_g" or "G.down_1.1.weight" in sd for sd in ckpt.parts.values())

    def official_parts(self, ckpt: Checkpoint) -> dict[str, StateDict]:
        """role → bare state_dict, whatever the files were called."""
        if len(ckpt.parts) == 1:
            sd = next(iter(ckpt.parts.values()))
            if "G.down_1.1.weight" in sd:
                return _split_prefixed(sd)
        parts: dict[str, StateDict] = {}
        for name, sd in ckpt.parts.items():
            role = _role(sd)
            if role is None:
                raise CheckpointError(f"{name or ckpt.source}: not a HI-Diff network (G, LE, LE_DM or denoiser)")
            if role in parts:
                raise CheckpointError(f"{ckpt.source}: two {role} networks given; pass one file per network")
            parts[role] = sd
        return parts

    def load(self, ckpt: Checkpoint, config: HIDiffConfig | None, hints: Mapping[str, Any]) -> nn.Module:
        from diffir.archs.hidiff.detect import infer_config

        parts = self.official_parts(ckpt)
        stored = ckpt.meta.get("config") if isinstance(ckpt.meta.get("config"), Mapping) else {}
        hints = dict(hints)
        if "preset" in hints:
            hints = {**preset_hints(str(hints.pop("preset"))), **hints}
        if config is None and set(HIDiffConfig.field_names()) <= set(stored):
            try:
                config = HIDiffConfig.from_dict(dict(stored))
            except ConfigError as exc:
                raise CheckpointError(f"{ckpt.source}: invalid model config ({exc}); {config_blame(stored, {})}") \
                    from None
            config.meta["assumed"] = []
        stage = 2 if {"net_le_dm", "net_d"} & set(parts) else 1
        if config is not None:
            stage = config.stage
        needed = ("net_g", "net_le_dm", "net_d") if stage == 2 else ("net_g", "net_le")
        missing = [role for role in needed if role not in parts]
        if missing:
            have = ", ".join(sorted(parts)) or "nothing"
            raise CheckpointError(
                f"{ckpt.source}: a stage-{stage} HI-Diff model needs {', '.join(needed)}; got {have}: also give "
                f"{', '.join(missing)} (a folder holding the files, or a comma-separated list)")
        parts = {role: parts[role] for role in needed}  # a stage-2 release folder may also hold net_le
        if config is None:
            try:
                config = infer_config(parts, hints={**hints, "stage": stage})
            except CheckpointError as exc:
                raise CheckpointError(f"{ckpt.source}: {exc}") from None
            except ConfigError as exc:
                raise CheckpointError(f"{ckpt.source}: invalid model config ({exc}); {config_blame(stored, hints)}") \
                    from None
        model = self.build(config)
        sd = {PREFIXES[role] + k: v for role, part in parts.items() for k, v in part.items()}
        load_strict(model, sd, ckpt.source)
        return model

    def official_files(self, model: nn.Module) -> dict[str, StateDict]:
        sd = {k: v.detach() for k, v in model.state_dict().items()}
        return _split_prefixed(sd)


ARCHITECTURE = HIDiffArchitecture()
