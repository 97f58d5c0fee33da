"""DiffIR as a registered architecture: presets, detection, loading and the official layout."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from diffir.archs.base import Architecture, Checkpoint, config_blame, load_strict
from diffir.archs.diffir.config import DiffIRConfig
from diffir.errors import CheckpointError, ConfigError

#: Class names recorded as ``arch`` in the metadata of diffir files written before architectures were named.
_LEGACY_CLASSES = ("DiffIRS1", "DiffIRS2")


class DiffIRArchitecture(Architecture):
    name = "diffir"
    description = "DiffIR (ICCV 2023): DIRformer restoring with a 256-d prior sampled by a 4-step diffusion"

    def presets(self) -> Mapping[str, tuple[DiffIRConfig, str]]:
        from diffir.archs.diffir.presets import PRESETS

        return PRESETS

    def config_from_dict(self, data: Mapping[str, Any]) -> DiffIRConfig:
        return DiffIRConfig.from_dict(dict(data))

    def build(self, config: DiffIRConfig) -> nn.Module:
        from diffir.archs.diffir.model import build_model

        return build_model(config)

    def recognizes(self, ckpt: Checkpoint) -> bool:
        if ckpt.meta.get("architecture") == self.name or ckpt.meta.get("arch") in _LEGACY_CLASSES:
            return True
        if len(ckpt.parts) != 1:
            return False
        sd = next(iter(ckpt.parts.values()))
        return "G.patch_embed.proj.weight" in sd and ("E.E.0.weight" in sd or "condition.E.0.weight" in sd)

    def load(self, ckpt: Checkpoint, config: DiffIRConfig | None, hints: Mapping[str, Any]) -> nn.Module:
        from diffir.archs.diffir.detect import infer_config
        from diffir.archs.diffir.official import drop_official_extras

        if len(ckpt.parts) != 1:
            raise CheckpointError(f"{ckpt.source}: a DiffIR checkpoint is one file, got {len(ckpt.parts)}")
        sd = next(iter(ckpt.parts.values()))
        stored = ckpt.meta.get("config") if isinstance(ckpt.meta.get("config"), Mapping) else {}
        try:
            if config is None:
                config = infer_config(sd, hints={**stored, **hints})
        except CheckpointError as exc:
            raise CheckpointError(f"{ckpt.source}: {exc}") from None
        except ConfigError as exc:  # a value stored in the file (or given as a hint) is out of range
            blame = config_blame(stored, hints)
            raise CheckpointError(f"{ckpt.source}: invalid model config ({exc}); {blame}") from None
        model = self.build(config)
        load_strict(model, drop_official_extras(sd, config, ckpt.source), ckpt.source)
        return model

    def official_files(self, model: nn.Module) -> dict[str, dict]:
        from diffir.archs.diffir.official import to_official_state_dict

        return {"": to_official_state_dict(model)}  # type: ignore[arg-type]


ARCHITECTURE = DiffIRArchitecture()
