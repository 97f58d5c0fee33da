"""Named presets of every architecture (timm-style): ``list_models``, ``create_model``, ``get_config``.

Names are ``<architecture>_<variant>_s1|s2`` (``diffir_sr_x4_s2``, ``hidiff_gopro_s2`` ...).
``create_model(name, **overrides)`` builds one with random weights; overrides are fields of that architecture's
config (``dim=8, num_blocks=(1, 1, 1, 1)`` ...).
"""

from __future__ import annotations

import difflib
import fnmatch
from typing import Any

from diffir.archs import Architecture, architectures
from diffir.errors import ConfigError


def _all() -> dict[str, tuple[Architecture, Any, str]]:
    out: dict[str, tuple[Architecture, Any, str]] = {}
    for arch in architectures():
        for name, (config, description) in arch.presets().items():
            out[name] = (arch, config, description)
    return out


def list_models(pattern: str = "*") -> list[str]:
    """Preset names matching a shell-style pattern, e.g. ``list_models("*inpaint*s2")``."""
    return sorted(n for n in _all() if fnmatch.fnmatch(n, pattern))


def preset_names() -> list[str]:
    return list(_all())


def describe(name: str) -> str:
    return _all()[_resolve(name)][2]


def _resolve(name: str) -> str:
    known = _all()
    if name in known:
        return name
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else "; see `diffir list`"
    raise ConfigError(f"unknown model {name!r}{hint}")


def get_config(name: str, **overrides: Any) -> Any:
    """The config of a preset, with overrides applied (unknown override keys are rejected)."""
    arch, config, _ = _all()[_resolve(name)]
    if not overrides:
        return config
    data = {**config.to_dict(), **overrides}
    return arch.config_from_dict(data).replace(meta={"preset": name, "overrides": sorted(overrides)})


def create_model(name: str, **overrides: Any):
    """Build a preset network with random weights (stage 1 for ``*_s1``, stage 2 for ``*_s2``)."""
    arch, _, _ = _all()[_resolve(name)]
    return arch.build(get_config(name, **overrides))
