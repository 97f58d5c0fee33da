"""Load and save checkpoints of every architecture: official BasicSR ``.pth`` (one file, or one file per network as
HI-Diff releases them), Lightning ``.ckpt``, raw state_dicts, diffir safetensors.

* ``load_model(src)`` reads them (a file, several files, a folder of per-network files, a ``diffir train`` run /
  checkpoint folder, or an in-memory state_dict), unwraps containers, asks each registered architecture
  (:mod:`diffir.archs`) whether it recognises the tensors, and lets it infer the config and strict-load.
* ``save_model(model, path)`` writes safetensors with JSON metadata (architecture, task, scale, stage, config);
  ``official=True`` writes the official layout (one BasicSR ``.pth``, or a folder of per-network files).

Pickle files are only ever read with ``weights_only=True`` (unknown classes in Lightning metadata are replaced by
inert placeholders, never imported or executed).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from diffir.archs import Checkpoint, architecture, architecture_of, architectures
from diffir.archs.base import load_strict  # noqa: F401 - part of this module's API
from diffir.errors import CheckpointError
from diffir.io.atomic import atomic_path, save_safetensors
from diffir.io.runs import per_network_files, resolve_checkpoint_path
from diffir.io.torchfile import read_torch_file

FORMAT = "diffir"
FORMAT_VERSION = "1"
StateDict = dict[str, torch.Tensor]


#: Top-level keys of training-state files (ours: ``state.pt``; BasicSR: ``training_states/*.state``), which hold
#: optimiser / RNG / iteration bookkeeping and no network weights.
_TRAINING_STATE_KEYS = {"optimizers", "optimizer", "schedulers", "scalers", "rng", "rng_state"}
_WEIGHT_CONTAINERS = ("params_ema", "params", "state_dict", "model", "net_g")


# ------------------------------------------------------------------------------------------------ reading
def read_checkpoint(path: str | os.PathLike, key: str | None = None) -> tuple[StateDict, dict[str, Any]]:
    """Read a checkpoint file (or run folder) into (canonical-prefix state_dict, metadata).  Containers are
    unwrapped."""
    path = resolve_checkpoint_path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file or folder")
    meta: dict[str, Any] = {}
    if path.suffix == ".safetensors" or _is_safetensors(path):
        sd, raw_meta = _read_safetensors(path)
        meta = dict(raw_meta)
        if "config" in meta:
            meta["config"] = json.loads(meta["config"])
    else:
        obj = read_torch_file(path)
        sd = unwrap_state_dict(obj, key=key, source=str(path))
    return sd, meta


def _is_safetensors(path: Path) -> bool:
    """safetensors = 8-byte little-endian header length followed by a JSON object."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100_000_000


def _read_safetensors(path: Path) -> tuple[StateDict, dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            sd = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable safetensors file ({str(exc).splitlines()[0]})") from None
    # The official layout shares tensors (diffusion.model.* = denoise.*), which safetensors cannot store; writers
    # record each omitted duplicate in the metadata as {duplicate_key: source_key}.
    for dup, src in meta.items():
        if dup.startswith("diffusion.") and src in sd and dup not in sd:
            sd[dup] = sd[src]
    return sd, meta


def unwrap_state_dict(obj: Any, key: str | None = None, source: str = "checkpoint") -> StateDict:
    """Find the network weights inside a container.

    BasicSR: ``params_ema`` preferred, then ``params``.  Lightning: ``state_dict`` with the ``generator.`` prefix
    (``key="generatorS1"`` picks the frozen stage-1 teacher of an inpainting S2 run); discriminator, loss and
    evaluator entries are ignored.  A leading ``module.`` (DataParallel/DDP) is stripped.
    """
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source}: expected a dict of tensors, found {type(obj).__name__}")
    if _is_training_state(obj, key):
        raise CheckpointError(f"{source}: this is a training state (iteration, optimizer and RNG state), not model "
                              f"weights; use {_weights_hint(source)}")
    if key is not None and isinstance(obj.get(key), Mapping):
        obj, key = obj[key], None
    else:
        for name in _WEIGHT_CONTAINERS:
            if isinstance(obj.get(name), Mapping) and obj[name]:
                obj = obj[name]
                break
    sd = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not sd:  # some other container: use its only nested dict of tensors, if there is exactly one
        nested = [
            v for v in obj.values() if isinstance(v, Mapping) and any(isinstance(t, torch.Tensor) for t in v.values())
        ]
        if len(nested) == 1:
            sd = {k: v for k, v in nested[0].items() if isinstance(v, torch.Tensor)}
    if not sd:
        raise CheckpointError(f"{source}: no tensors found (top-level keys: {', '.join(map(str, list(obj)[:6]))})")
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    if not any(k.startswith("G.") for k in sd):
        prefix = f"{key}." if key and not key.endswith(".") else (key or "generator.")
        picked = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
        if picked:
            sd = {k.removeprefix("module."): v for k, v in picked.items()}
    return sd


def _is_training_state(obj: Mapping, key: str | None) -> bool:
    """Optimiser/RNG/iteration bookkeeping with no weights container (Lightning ``.ckpt`` files also hold
    optimiser states, but next to their ``state_dict``)."""
    if key is not None and key in obj:
        return False
    keys = {str(k) for k in obj}
    return bool(keys & _TRAINING_STATE_KEYS) and not any(isinstance(obj.get(n), Mapping) for n in _WEIGHT_CONTAINERS)


def _weights_hint(source: str) -> str:
    """Which weights file to use instead of a training state: the ones next to it if they exist."""
    folder = Path(source).parent
    for name in ("params_ema.safetensors", "params.safetensors"):
        if (folder / name).is_file():
            return f"{folder / name} (or the run's model.safetensors)"
    return "params_ema.safetensors / params.safetensors next to it, or the run's model.safetensors"


# ------------------------------------------------------------------------------------------------ loading
def read_sources(src: Any, key: str | None = None) -> Checkpoint:
    """Everything ``load_model`` accepts, read into a :class:`~diffir.archs.Checkpoint`."""
    if isinstance(src, Mapping):
        return Checkpoint({"": unwrap_state_dict(src, key=key, source="state_dict")}, {}, "state_dict")
    if isinstance(src, (list, tuple)):
        files = [Path(p).expanduser() for p in src]
        if len(files) == 1:
            return read_sources(files[0], key)
        parts = {}
        for f in files:
            parts[str(f)] = read_checkpoint(f, key=key)[0]
        return Checkpoint(parts, {}, " + ".join(str(f) for f in files))
    path = Path(src).expanduser()
    if path.is_dir() and not (path / "model.safetensors").is_file() and (per_net := per_network_files(path)):
        parts = {role: read_checkpoint(f, key=key)[0] for role, f in per_net.items()}
        return Checkpoint(parts, {}, str(path))
    path = resolve_checkpoint_path(path)
    sd, meta = read_checkpoint(path, key=key)
    return Checkpoint({"": sd}, meta, str(path))


def _architecture_for(ckpt: Checkpoint):
    named = ckpt.meta.get("architecture")
    if named is not None:
        try:
            return architecture(str(named))
        except KeyError:
            raise CheckpointError(f"{ckpt.source}: written for architecture {named!r}, which this diffir version "
                                  "does not have (upgrade diffir)") from None
    for arch in architectures():
        if arch.recognizes(ckpt):
            return arch
    keys = [k for sd in ckpt.parts.values() for k in list(sd)[:3]][:3]
    names = ", ".join(a.name for a in architectures())
    raise CheckpointError(f"{ckpt.source}: not the weights of a known architecture ({names}); keys start with: "
                          f"{', '.join(keys) or '<empty>'}")


def load_model(
    src: str | os.PathLike | Mapping[str, Any] | list,
    *,
    key: str | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    config: Any = None,
    random_weights: bool = False,
    **hints: Any,
) -> nn.Module:
    """Load any supported checkpoint with zero configuration; returns the model in eval mode.

    ``src`` is a model name (installed under ``$DIFFIR_MODELS``, or bundled: :mod:`diffir.io.locate`), a path
    (``.pth``, ``.ckpt``, ``.safetensors``, raw ``torch.save`` dict), a list of per-network files, a folder (run
    folder, or official per-network files), or an in-memory state_dict / container.  A preset name gives random
    weights only with ``random_weights=True``.
    ``hints`` give what a file does not store (e.g. ``preset="hidiff_realblur_r_s2"`` or ``timesteps=16``);
    ``model.config`` shows what was inferred and ``model.config.meta["assumed"]`` what was not in the file.
    """
    if isinstance(src, (str, os.PathLike)):
        from diffir.io.locate import locate_model

        where = locate_model(src, allow_preset=random_weights)
        if where.source == "preset":
            from diffir.registry import create_model

            model = create_model(str(where.name)).eval()
            return model.to(device=device, dtype=dtype) if dtype is not None else model.to(device)
        src = where.target
    ckpt = read_sources(src, key)
    arch = _architecture_for(ckpt)
    model = arch.load(ckpt, config, hints)
    model.config.meta["source"] = ckpt.source
    model.eval()
    return model.to(device=device, dtype=dtype) if dtype is not None else model.to(device)


# ------------------------------------------------------------------------------------------------- saving
def save_model(model: nn.Module, path: str | os.PathLike, official: bool = False) -> Path:
    """Write ``model`` to ``path`` atomically.

    Default: safetensors with metadata ``format``, ``architecture``, ``arch`` (class), ``task``, ``scale``,
    ``stage``, ``config`` (JSON).  ``official=True``: the official layout — a BasicSR ``.pth``
    ``{"params": sd, "params_ema": sd}``, or, for architectures released as one file per network, a folder
    ``path`` holding ``<network>.pth`` files ``{"params": sd}``.
    """
    path = Path(path)
    arch = architecture_of(model)
    if official:
        files = arch.official_files(model)
        if list(files) == [""]:
            sd = {k: v.detach().cpu().contiguous() for k, v in files[""].items()}
            with atomic_path(path) as tmp:
                torch.save({"params": sd, "params_ema": sd}, tmp)
            return path
        if path.suffix:
            raise CheckpointError(f"{path}: the official {arch.name} layout is one file per network; give a folder "
                                  "name (without a suffix) to write them into")
        path.mkdir(parents=True, exist_ok=True)
        for stem, sd in files.items():
            with atomic_path(path / f"{stem}.pth") as tmp:
                torch.save({"params": {k: v.detach().cpu().contiguous() for k, v in sd.items()}}, tmp)
        return path
    descriptor = model.descriptor
    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": descriptor.architecture,
        "arch": type(model).__name__,
        "task": descriptor.task,
        "scale": str(descriptor.scale),
        "stage": str(descriptor.stage),
        "config": model.config.to_json(),
    }
    save_safetensors(path, sd, metadata=meta)
    return path


def convert(src: Any, dst: str | os.PathLike, key: str | None = None, **hints: Any) -> Path:
    """Convert a checkpoint: ``.safetensors`` → diffir format; ``.pth`` → the official layout (a folder of
    per-network files for architectures released that way)."""
    model = load_model(src, key=key, **hints)
    dst = Path(dst)
    official_folder = dst.suffix == "" and list(architecture_of(model).official_files(model)) != [""]
    if dst.suffix not in (".safetensors", ".pth", ".pt") and not official_folder:
        raise CheckpointError(f"{dst}: output must end in .safetensors (diffir) or .pth (official BasicSR layout)")
    return save_model(model, dst, official=dst.suffix != ".safetensors")
