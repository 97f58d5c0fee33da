"""Load and save DiffIR checkpoints: official BasicSR ``.pth``, Lightning ``.ckpt``, raw state_dicts, safetensors.

* ``load_model(src)`` reads any of them (or a ``diffir train`` run / checkpoint folder, see
  :func:`resolve_checkpoint_path`), infers the whole config from tensor shapes (:mod:`diffir.io.infer`),
  verifies the official duplicated keys / schedule buffers, loads strictly and returns the model in eval mode.
* ``save_model(model, path)`` writes safetensors with JSON metadata; ``official=True`` writes the official
  BasicSR container (``params`` + ``params_ema``) with the official key layout, which the official code loads
  with ``strict=True``.

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

from diffir.diffusion.schedule import BUFFER_NAMES, make_schedule
from diffir.errors import CheckpointError
from diffir.io.atomic import atomic_path
from diffir.io.infer import infer_config
from diffir.io.runs import resolve_weights
from diffir.io.torchfile import read_torch_file
from diffir.networks.config import DiffIRConfig
from diffir.networks.diffir import DiffIRS1, DiffIRS2, build_model

FORMAT = "diffir"
FORMAT_VERSION = "1"
StateDict = dict[str, torch.Tensor]


#: Top-level keys of training-state files (ours: ``state.pt``; BasicSR: ``training_states/*.state``), which hold
#: optimiser / RNG / iteration bookkeeping and no network weights.
_TRAINING_STATE_KEYS = {"optimizers", "optimizer", "schedulers", "scalers", "rng", "rng_state"}
_WEIGHT_CONTAINERS = ("params_ema", "params", "state_dict", "model", "net_g")


# ------------------------------------------------------------------------------------------------ reading
def resolve_checkpoint_path(path: str | os.PathLike) -> Path:
    """The weights file a path stands for; a folder is resolved like ``diffir train --from-s1/--from-s2``.

    A folder holding ``model.safetensors`` (a finished ``diffir train`` run) gives that file; otherwise a
    checkpoint folder (``params_ema.safetensors``, then ``params.safetensors``) or a run still in progress (its
    newest ``checkpoints/iter_*``).  A folder with none of these is a one-line :class:`CheckpointError`.
    Anything else is returned unchanged (existence is checked by the reader).
    """
    p = Path(path).expanduser()
    if not p.is_dir():
        return p
    if (p / "model.safetensors").is_file():
        return p / "model.safetensors"
    try:
        return resolve_weights(p)
    except CheckpointError:
        raise CheckpointError(
            f"{p}: folder without model weights (looked for model.safetensors, params_ema.safetensors, "
            "params.safetensors and checkpoints/iter_*/); pass a weights file or a `diffir train` run folder"
        ) from None


def read_checkpoint(path: str | os.PathLike, key: str | None = None) -> tuple[StateDict, dict[str, Any]]:
    """Read a checkpoint file (or run folder) into (canonical-prefix state_dict, metadata).  Containers are
    unwrapped."""
    path = resolve_checkpoint_path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
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


# ---------------------------------------------------------------------------------------- official layout
def official_extras(model: DiffIRS2, sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The entries the official S2 module adds: 12 schedule buffers, then ``diffusion.model.*`` and
    ``diffusion.condition.*`` duplicates (sharing storage with ``denoise.*`` / ``condition.*``)."""
    extra: dict[str, torch.Tensor] = {f"diffusion.{k}": v for k, v in model.diffusion.schedule_state().items()}
    for k, v in sd.items():
        if k.startswith("denoise."):
            extra["diffusion.model." + k.removeprefix("denoise.")] = v
    for k, v in sd.items():
        if k.startswith("condition."):
            extra["diffusion." + k] = v
    return extra


def to_official_state_dict(model: DiffIRS1 | DiffIRS2) -> StateDict:
    """State_dict in the official key layout and order (S2: G, condition, denoise, buffers, duplicates)."""
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    if isinstance(model, DiffIRS2):
        sd.update(official_extras(model, sd))
    return sd


def _split_official(sd: StateDict, config: DiffIRConfig, source: str) -> StateDict:
    """Verify and drop the official S2 duplicates and schedule buffers (they are derived, not learned)."""
    out: StateDict = {}
    schedule = make_schedule(config.timesteps, config.linear_start, config.linear_end)
    for k, v in sd.items():
        if not k.startswith("diffusion."):
            out[k] = v
            continue
        rest = k.removeprefix("diffusion.")
        if rest in BUFFER_NAMES:
            if not torch.equal(v.detach().float().cpu(), schedule[rest]):
                raise CheckpointError(f"{source}: buffer '{k}' differs from the schedule of its own betas")
            continue
        src = "denoise." + rest.removeprefix("model.") if rest.startswith("model.") else rest
        if not rest.startswith(("model.", "condition.")) or src not in sd:
            raise CheckpointError(f"{source}: unexpected key '{k}' (not part of the official DiffIR S2 layout)")
        if not _same(v, sd[src]):
            raise CheckpointError(f"{source}: duplicate '{k}' differs from '{src}'; the file is inconsistent")
    return out


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    # float8 tensors (e.g. the parity files) have no comparison kernels; their float32 casts are exact.
    if a.element_size() == 1 and a.is_floating_point():
        a, b = a.float(), b.float()
    return a.shape == b.shape and torch.equal(a, b)


# ------------------------------------------------------------------------------------------------ loading
def load_model(
    src: str | os.PathLike | Mapping[str, Any],
    *,
    key: str | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    config: DiffIRConfig | None = None,
) -> DiffIRS1 | DiffIRS2:
    """Load any DiffIR checkpoint with zero configuration; returns the model in eval mode.

    ``src`` is a path (``.pth``, ``.ckpt``, ``.safetensors``, raw ``torch.save`` dict) or an in-memory
    state_dict / container.  ``model.config`` shows what was inferred.
    """
    if isinstance(src, Mapping):
        source, meta = "state_dict", {}
        sd = unwrap_state_dict(src, key=key, source=source)
    else:
        path = resolve_checkpoint_path(src)
        source = str(path)
        sd, meta = read_checkpoint(path, key=key)
    hints = meta.get("config") if isinstance(meta.get("config"), Mapping) else {}
    try:
        if config is None:
            config = infer_config(sd, hints=hints)
    except CheckpointError as exc:
        raise CheckpointError(f"{source}: {exc}") from None
    sd = _split_official(sd, config, source) if config.stage == 2 else sd
    model = build_model(config)
    _load_strict(model, sd, source)
    model.config.meta["source"] = source
    model.eval()
    return model.to(device=device, dtype=dtype) if dtype is not None else model.to(device)


def _load_strict(model: nn.Module, sd: StateDict, source: str) -> None:
    own = model.state_dict()
    for k in own:
        if k not in sd:
            raise CheckpointError(f"{source}: missing key '{k}' (truncated file, or weights of another architecture)")
    for k, v in sd.items():
        if k not in own:
            raise CheckpointError(
                f"{source}: unexpected key '{k}' (weights of another architecture, or a S1/S2 mix-up)"
            )
        if tuple(v.shape) != tuple(own[k].shape):
            raise CheckpointError(
                f"{source}: key '{k}' has shape {tuple(v.shape)} but the inferred {model.config.task} "
                f"x{model.config.scale} config expects {tuple(own[k].shape)} (mixed checkpoints?)"
            )
        if not (v.is_floating_point() or v.dtype in (torch.float8_e4m3fn, torch.float8_e5m2)):
            raise CheckpointError(f"{source}: key '{k}' has non-float dtype {v.dtype}")
    model.load_state_dict(sd, strict=True)


# ------------------------------------------------------------------------------------------------- saving
def save_model(model: DiffIRS1 | DiffIRS2, path: str | os.PathLike, official: bool = False) -> Path:
    """Write ``model`` to ``path`` atomically.

    Default: safetensors with metadata ``format``, ``arch``, ``task``, ``scale``, ``stage``, ``config`` (JSON).
    ``official=True``: a BasicSR ``.pth`` ``{"params": sd, "params_ema": sd}`` in the official layout.
    """
    path = Path(path)
    config = model.config
    if official:
        sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        if isinstance(model, DiffIRS2):
            sd.update(official_extras(model, sd))
        with atomic_path(path) as tmp:
            torch.save({"params": sd, "params_ema": sd}, tmp)
        return path
    from safetensors.torch import save_file

    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "arch": type(model).__name__,
        "task": config.task,
        "scale": str(config.scale),
        "stage": str(config.stage),
        "config": config.to_json(),
    }
    with atomic_path(path) as tmp:
        save_file(sd, str(tmp), metadata=meta)
    return path


def convert(src: str | os.PathLike, dst: str | os.PathLike, key: str | None = None) -> Path:
    """Convert a checkpoint: the output format follows ``dst``'s suffix (.safetensors → diffir, .pth → official)."""
    model = load_model(src, key=key)
    dst = Path(dst)
    if dst.suffix not in (".safetensors", ".pth", ".pt"):
        raise CheckpointError(f"{dst}: output must end in .safetensors (diffir) or .pth (official BasicSR layout)")
    return save_model(model, dst, official=dst.suffix != ".safetensors")
