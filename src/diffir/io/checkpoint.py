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
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from diffir.archs import Checkpoint, architecture, architecture_of, architectures
from diffir.archs.base import load_strict  # noqa: F401 - part of this module's API
from diffir.errors import CheckpointError, describe_os_error
from diffir.io.atomic import atomic_path, remove_stale_temporaries, save_safetensors
from diffir.io.runs import component_files, per_network_files, resolve_checkpoint_path
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
    if path.is_dir():
        from diffir.archs.diffbir.diffusers_layout import is_diffusers_folder, read_diffusers_folder

        if is_diffusers_folder(path):  # one SD-layout state_dict (the .ckpt's keys), see diffusers_layout
            return read_diffusers_folder(path, lambda f: read_checkpoint(f)[0]), {}
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file or folder")
    try:
        if path.suffix == ".safetensors" or _is_safetensors(path):
            sd, raw_meta = _read_safetensors(path)
            return sd, {**raw_meta, **_parsed_config(path, raw_meta)}
        obj = read_torch_file(path)
    except OSError as exc:  # permission denied, I/O error ...: the file may be fine, so never call it damaged
        raise CheckpointError(describe_os_error(exc, path)) from None
    return unwrap_state_dict(obj, key=key, source=str(path)), {}


def _parsed_config(path: Path, meta: Mapping[str, str]) -> dict[str, Any]:
    """``{"config": dict}`` from the JSON ``config`` metadata (its values are checked by the architecture)."""
    if "config" not in meta:
        return {}
    try:
        config = json.loads(meta["config"])
    except ValueError as exc:
        raise CheckpointError(f"{path}: the model config in the file's metadata is not valid JSON ({exc}); the file "
                              "was edited or damaged: convert the original checkpoint again") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: the model config in the file's metadata is a {type(config).__name__}, not a "
                              "JSON object; the file was edited or damaged: convert the original checkpoint again")
    return {"config": config}


def _is_safetensors(path: Path) -> bool:
    """safetensors = 8-byte little-endian header length followed by a JSON object."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100_000_000


def _read_safetensors(path: Path) -> tuple[StateDict, dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    with open(path, "rb"):  # a permission problem surfaces here as an OSError, not as a "damaged file"
        pass
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            sd = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path}: damaged or truncated safetensors file ({reason[:120]}); download or copy it "
                              "again") from None
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise CheckpointError(f"{path}: damaged safetensors metadata; download or copy the file again")
    # The official layout shares tensors (diffusion.model.* = denoise.*), which safetensors cannot store; writers
    # record each omitted duplicate in the metadata as {duplicate_key: source_key}.
    for dup, src in meta.items():
        if dup.startswith("diffusion.") and src in sd and dup not in sd:
            sd[dup] = sd[src]
    return sd, meta


def first_nonfinite(tensors: Mapping[str, torch.Tensor]) -> str | None:
    """Name of the first floating-point tensor holding a NaN or an infinity, or None."""
    for name, t in tensors.items():
        if not t.is_floating_point():
            continue
        try:
            finite = bool(torch.isfinite(t).all())
        except (RuntimeError, TypeError):  # float8 kinds have no isfinite kernel
            finite = bool(torch.isfinite(t.float()).all())
        if not finite:
            return name
    return None


def _nonfinite_message(source: str, name: str) -> str:
    return f"{source}: tensor {name} has NaN/Inf values; the checkpoint is damaged"


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
    if path.is_dir() and (components := component_files(path)):
        return Checkpoint({str(f): read_checkpoint(f, key=key)[0] for f in components}, {}, str(path))
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
    model = _load_checkpoint(src, key, config, hints)
    if (bad := first_nonfinite(model.state_dict())) is not None:  # such a network gives black/garbage images
        warnings.warn(_nonfinite_message(model.config.meta["source"], bad) + " (the results will be wrong)",
                      stacklevel=2)
    return model.to(device=device, dtype=dtype) if dtype is not None else model.to(device)


def _load_checkpoint(src: Any, key: str | None, config: Any, hints: Mapping[str, Any]) -> nn.Module:
    """The model in a checkpoint (no name lookup), in eval mode on the CPU."""
    ckpt = read_sources(src, key)
    arch = _architecture_for(ckpt)
    model = arch.load(ckpt, config, hints)
    model.config.meta["source"] = ckpt.source
    return model.eval()


# ------------------------------------------------------------------------------------------------- saving
def save_model(model: nn.Module, path: str | os.PathLike, official: bool = False, half: bool = False) -> Path:
    """Write ``model`` to ``path`` atomically.  ``half``: store floating-point tensors as float16 (half the file;
    they load as float32, as every diffir file does), refused when a value does not fit float16.

    Default: safetensors with metadata ``format``, ``architecture``, ``arch`` (class), ``task``, ``scale``,
    ``stage``, ``config`` (JSON).  ``official=True``: the official layout — a BasicSR ``.pth``
    ``{"params": sd, "params_ema": sd}``, or, for architectures released as one file per network, a folder
    ``path`` holding ``<network>.pth`` files ``{"params": sd}``.
    """
    path = Path(path)
    arch = architecture_of(model)
    if half and official:
        raise CheckpointError(f"{path}: float16 storage is for diffir .safetensors files; the official layout "
                              "keeps float32 (drop --half or write .safetensors)")
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
            name, payload = arch.official_payload(stem, {k: v.detach().cpu().contiguous() for k, v in sd.items()})
            with atomic_path(path / name) as tmp:
                torch.save(payload, tmp)
        return path
    descriptor = model.descriptor
    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if half:
        finite_before = first_nonfinite(sd) is None
        sd = {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}
        if finite_before and (bad := first_nonfinite(sd)) is not None:
            raise CheckpointError(f"{path}: {bad} has values beyond float16's range; save it without --half")
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
    if half:
        meta["note"] = "weights stored as float16 to halve the file size; loaded as float32"
    save_safetensors(path, sd, metadata=meta)
    return path


def check_output_path(path: str | os.PathLike, allow_folder: bool = False) -> Path:
    """Fail early, with one line naming ``path``, when a file cannot be written there (before any slow work).

    Checks: not an existing folder (unless ``allow_folder``: one file per network), the nearest existing ancestor
    is a writable folder, and the name (with the temporary-file decoration of :mod:`diffir.io.atomic`) fits the
    file system's limit.
    """
    path = Path(path).expanduser()
    try:
        _check_output_path(path, allow_folder)
    except OSError as exc:  # e.g. a folder on the way that cannot be searched
        raise CheckpointError(describe_os_error(exc, path)) from None
    return path


def _check_output_path(path: Path, allow_folder: bool) -> None:
    if path.is_dir() and not allow_folder:
        raise CheckpointError(f"{path}: is a folder; give a file name (a new file, or a file inside it)")
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise CheckpointError(f"{path}: {ancestor} is a file, not a folder; choose another output path")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise CheckpointError(f"{path}: permission denied (cannot write in {ancestor}); check the folder's "
                              "permissions or write elsewhere")
    try:
        limit = os.pathconf(ancestor, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    temporary = f".{path.name}.{os.getpid()}-00000000.tmp{path.suffix}"  # the name atomic_path writes first
    too_long = [part for part in (*path.parts[:-1], temporary) if len(os.fsencode(part)) > limit]
    if too_long:
        raise CheckpointError(f"{path}: file name too long (at most {limit - len(temporary) + len(path.name)} "
                              "bytes here); choose a shorter name")


def blend_models(model: nn.Module, other: nn.Module, weight: float, source: str = "the other model") -> nn.Module:
    """Network interpolation (Wang et al., ESRGAN 2018): every weight becomes ``(1 - weight)·model + weight·other``.

    Blending a GAN with a PSNR-oriented model of the same architecture trades the GAN's texture against fidelity
    without retraining; it only makes sense between models that share architecture, configuration and weight
    layout, so anything else is refused.  ``model`` is changed in place and returned.
    """
    if not 0.0 <= weight <= 1.0:
        raise CheckpointError(f"{source}: blend weight {weight} is outside [0, 1]")
    if architecture_of(model).name != architecture_of(other).name:
        raise CheckpointError(f"{source}: is a {other.descriptor.architecture} model, not "
                              f"{model.descriptor.architecture}; blending needs the same architecture")
    if model.config != other.config:
        mine_cfg, theirs_cfg = json.loads(model.config.to_json()), json.loads(other.config.to_json())
        differ = ", ".join(f"{k} {mine_cfg.get(k)} vs {theirs_cfg.get(k)}" for k in sorted({*mine_cfg, *theirs_cfg})
                           if mine_cfg.get(k) != theirs_cfg.get(k))
        raise CheckpointError(f"{source}: its configuration differs ({differ}); blending needs the same one")
    mine, theirs = model.state_dict(), other.state_dict()
    if list(mine) != list(theirs) or any(mine[k].shape != theirs[k].shape for k in mine):
        raise CheckpointError(f"{source}: its weights do not match the model's names and shapes; cannot blend")
    with torch.no_grad():
        for name, tensor in mine.items():
            if tensor.is_floating_point():
                tensor.lerp_(theirs[name].to(tensor.dtype), weight)
    return model


def convert(src: Any, dst: str | os.PathLike, key: str | None = None, half: bool = False,
            blend: tuple[Any, float] | None = None, **hints: Any) -> Path:
    """Convert a checkpoint: ``.safetensors`` → diffir format; ``.pth`` → the official layout (a folder of
    per-network files for architectures released that way).  ``blend=(other, weight)`` first mixes in another
    model's weights (:func:`blend_models`).

    Refuses damaged weights (NaN/Inf) and checks ``dst`` before reading; nothing is written unless it all works.
    """
    dst = Path(dst).expanduser()
    if dst.suffix not in (".safetensors", ".pth", ".pt", ""):
        raise CheckpointError(f"{dst}: output must end in .safetensors (diffir) or .pth (official BasicSR layout)")
    check_output_path(dst, allow_folder=dst.suffix == "")
    from diffir.io.locate import locate_model  # lazily, as load_model does

    def located(spec: Any) -> Any:
        return locate_model(spec).target if isinstance(spec, (str, os.PathLike)) else spec

    model = _load_checkpoint(located(src), key, None, hints)
    if blend is not None:
        other, weight = blend
        other_model = _load_checkpoint(located(other), None, None, {})
        blend_models(model, other_model, weight, source=other_model.config.meta["source"])
    if (bad := first_nonfinite(model.state_dict())) is not None:
        raise CheckpointError(_nonfinite_message(model.config.meta["source"], bad))
    official_folder = dst.suffix == "" and list(architecture_of(model).official_files(model)) != [""]
    if dst.suffix == "" and not official_folder:
        raise CheckpointError(f"{dst}: output must end in .safetensors (diffir) or .pth (official BasicSR layout)"
                              f"{'; it is a folder' if dst.is_dir() else ''}")
    if official_folder and dst.exists() and not dst.is_dir():
        raise CheckpointError(f"{dst}: is a file; the official {architecture_of(model).name} layout is a folder of "
                              "per-network files: give a folder name")
    remove_stale_temporaries(dst.parent)  # what a killed earlier conversion left next to the output
    if official_folder:
        remove_stale_temporaries(dst)
    try:
        return save_model(model, dst, official=dst.suffix != ".safetensors", half=half)
    except OSError as exc:  # full disk, permissions ...: named after the output, not its temporary file
        raise CheckpointError(describe_os_error(exc, dst)) from None
