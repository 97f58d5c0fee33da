"""Loading a training config: YAML text -> ``--set`` overrides -> ``${VARS}`` -> validated :class:`TrainConfig`.

The schema lives in :mod:`diffir.train.config`; the checks that need the network (patch multiples, degradation
scale, device) in :mod:`diffir.train.checks`.  Both run here, before any data is read or a run folder is made.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from diffir.errors import ConfigError
from diffir.train.checks import check_against_model
from diffir.train.config import TrainConfig
from diffir.train.yaml_input import parse_yaml, read_config_text

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_vars(value: Any) -> Any:
    """Shell-style ``${VAR}`` / ``${VAR:-default}`` expansion in every string of a nested structure."""
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            got = os.environ.get(name)
            if got:
                return got
            if default is None:
                raise ConfigError(f"environment variable {name} is not set (used as ${{{name}}} in the config)")
            return default

        return _VAR.sub(sub, value)
    if isinstance(value, dict):
        return {k: expand_vars(v) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_vars(v) for v in value]
    return value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``--set train.iters=100 losses.kd.type=l2``: dotted keys, YAML-parsed values."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for p in parts[:-1]:
            child = node.get(p)
            if child is None:
                child = node[p] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {key}: {p!r} is not a section")
            node = child
        node[parts[-1]] = parse_yaml(raw, f"--set {key.strip()}")
    return data


def _allowed_keys(cls: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names of the sub-model reached by ``loc`` (for did-you-mean suggestions)."""
    current: Any = cls
    for part in loc:
        if not (isinstance(current, type) and issubclass(current, BaseModel)) or part not in current.model_fields:
            return []
        ann = current.model_fields[part].annotation
        args = [a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)]
        current = args[0] if args else ann
    return list(current.model_fields) if isinstance(current, type) and issubclass(current, BaseModel) else []


def _one_line(err: ValidationError, source: str, set_keys: list[str] | None = None) -> str:
    first = err.errors()[0]
    loc = tuple(p for p in first["loc"] if not isinstance(p, int))
    dotted = ".".join(str(p) for p in first["loc"])
    for key in set_keys or []:  # the offending value came from the command line, not from the file
        if dotted == key or dotted.startswith(key + ".") or key.startswith(dotted + "."):
            source = f"--set {key}"
            break
    if first["type"] == "extra_forbidden":
        allowed = _allowed_keys(TrainConfig, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.5)
        hint = f"; did you mean {'.'.join([*map(str, loc[:-1]), close[0]])!r}?" if close else (
            f"; allowed here: {', '.join(allowed)}" if allowed else "")
        return f"{source}: unknown config key {dotted!r}{hint}"
    if first["type"] == "missing":
        return f"{source}: missing required config key {dotted!r}"
    msg = first["msg"].removeprefix("Value error, ")
    if not dotted or source == f"--set {dotted}":  # not "--set train.iters: train.iters: ..."
        return f"{source}: {msg}"
    return f"{source}: {dotted}: {msg}"


def path_hint(raw: Any, key: str, source: str = "config", from_set: bool = False) -> str:
    """How to fix the folder of config key ``key`` whose unexpanded value is ``raw``.

    ``${DIFFIR_DATA:-../shared/data}/train/T91`` -> ``set DIFFIR_DATA to the folder that holds train/T91, or edit
    data.train.gt_dir in <source>``.
    """
    edit = f"fix --set {key}" if from_set else f"edit {key} in {'the config' if source == 'config' else source}"
    m = _VAR.search(raw) if isinstance(raw, str) else None
    if m is None:
        return edit
    name = m.group(1)
    rest = raw[m.end():].strip("/") if m.start() == 0 else ""
    target = f"the folder that holds {rest}" if rest else "the data folder"
    value = os.environ.get(name)
    where = "; what it holds and where to get the public sets: docs/data.md" if name == "DIFFIR_DATA" else ""
    if value:
        return f"{name} is {value}: point it at {target}, or {edit}{where}"
    return f"set {name} to {target}, or {edit}{where}"


def _remember_paths(cfg: TrainConfig, data: dict[str, Any], source: str, set_keys: list[str]) -> None:
    raw_data = data.get("data") if isinstance(data.get("data"), dict) else {}
    for name in ("train", "val"):
        section = getattr(cfg.data, name)
        raw = raw_data.get(name)
        if section is None or not isinstance(raw, dict):
            continue
        for field in ("gt_dir", "lq_dir"):
            key = f"data.{name}.{field}"
            section._path_hints[field] = path_hint(raw.get(field), key, source, key in set_keys)


def parse_config(data: dict[str, Any], source: str = "config", set_keys: list[str] | None = None) -> TrainConfig:
    """Validate a config mapping; ``set_keys`` (dotted keys given with ``--set``) only sharpen error messages."""
    try:
        cfg = TrainConfig.model_validate(expand_vars(data))
    except ValidationError as err:
        raise ConfigError(_one_line(err, source, set_keys)) from None
    _remember_paths(cfg, data, source, set_keys or [])
    # the network, device and patch sizes are checked now, before any data is read or a run folder is made
    cfg._origin = (source, list(set_keys or []))
    check_against_model(cfg, cfg.where)
    return cfg


def load_config(path: str | os.PathLike, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML config, apply ``--set`` overrides, expand ``${VARS}``, validate."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    data = parse_yaml(read_config_text(p), str(p)) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping")
    overrides = overrides or []
    set_keys = [o.split("=", 1)[0].strip() for o in overrides]
    return parse_config(apply_overrides(data, overrides), source=str(p), set_keys=set_keys)
