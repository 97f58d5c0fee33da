"""Folders that stand for one model, read side: a ``diffir train`` run (where its checkpoints and weights are),
and official weights released as one file per network (HI-Diff).

``OUT/model.safetensors`` (the finished run), ``OUT/checkpoints/iter_00001000/`` (``params_ema``/``params``/
``teacher``/``net_d`` ``.safetensors`` + ``state.pt``).  Written by :mod:`diffir.train.checkpointing`; read here so
that loading a model from a run folder (:func:`diffir.load_model`, ``diffir restore -m RUN``) needs no training code.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from diffir.errors import CheckpointError

_NAME = re.compile(r"^iter_(\d+)$")


#: Official per-network file stems (HI-Diff: net_g.pth, net_le.pth, net_le_dm.pth, net_d.pth; BasicSR training
#: writes net_g_<iter>.pth), recognised in a folder handed to ``load_model``.
_PER_NETWORK = re.compile(r"^(net_[a-z_]+?)(?:_(\d+|latest))?$")


def per_network_files(folder: Path) -> dict[str, Path]:
    """role → file for a folder of official per-network files with a ``net_g`` (newest iteration wins), or {}."""
    found: dict[str, tuple[int, Path]] = {}
    for f in sorted(folder.iterdir()):
        m = _PER_NETWORK.match(f.stem)
        if not (m and f.is_file() and f.suffix in (".pth", ".pt", ".safetensors")):
            continue
        rank = 10**12 if m.group(2) in (None, "latest") else int(m.group(2))
        if m.group(1) not in found or rank > found[m.group(1)][0]:
            found[m.group(1)] = (rank, f)
    if "net_g" not in found or any((folder / n).is_file() for n in ("params.safetensors", "params_ema.safetensors")):
        return {}  # a diffir training checkpoint also holds net_d.safetensors (its discriminator)
    return {role: f for role, (_, f) in found.items()}


def component_files(folder: Path) -> list[Path]:
    """The weight files of a folder holding a pipeline released as several files (DiffBIR: the SD checkpoint, an
    IRControlNet and a cleaner), or [] for a run or checkpoint folder, or fewer than two files."""
    markers = ("model.safetensors", "params.safetensors", "params_ema.safetensors", "state.pt", "checkpoints")
    if any((folder / m).exists() for m in markers):
        return []
    files = sorted(f for f in folder.iterdir() if f.is_file() and f.suffix in (".ckpt", ".pth", ".pt", ".safetensors"))
    return files if len(files) >= 2 else []


def checkpoint_dir(out: Path) -> Path:
    return out / "checkpoints"


def list_checkpoints(out: Path) -> list[Path]:
    root = checkpoint_dir(out)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _NAME.match(p.name) and (p / "state.pt").is_file()]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))  # type: ignore[union-attr]


def latest(out: Path) -> Path | None:
    ckpts = list_checkpoints(out)
    return ckpts[-1] if ckpts else None


def resolve_weights(path: str | Path, prefer_ema: bool = True) -> Path:
    """A model file from a file, a checkpoint dir or a run dir (EMA weights preferred, like BasicSR); a folder of
    official per-network files stands for itself."""
    p = Path(path)
    if p.is_file():
        return p
    if not p.exists():
        raise CheckpointError(f"{p}: no such file or folder")
    if p.is_dir() and per_network_files(p):  # official per-network release: load_model reads the folder
        return p
    names = ["params_ema.safetensors", "params.safetensors"] if prefer_ema else ["params.safetensors"]
    if p.is_dir():
        run_model = [p / "model.safetensors"] if (p / "checkpoints").is_dir() else []
        for cand in run_model + [p / n for n in names]:
            if cand.is_file():
                return cand
        if (ck := latest(p)) is not None:
            return resolve_weights(ck, prefer_ema)
    raise CheckpointError(f"no model weights at {p} (a .safetensors/.pth file, a checkpoint folder or a run folder)")


def resolve_teacher(path: str | Path) -> Path | None:
    """The S1 teacher saved next to a stage-2 model (run dir or checkpoint dir), if any."""
    p = Path(path)
    base = p.parent if p.is_file() else p
    for cand in (base / "teacher.safetensors", base.parent / "teacher.safetensors"):
        if cand.is_file():
            return cand
    if base.is_dir() and (ck := latest(base)) is not None and (ck / "teacher.safetensors").is_file():
        return ck / "teacher.safetensors"
    return None


def resolve_checkpoint_path(path: str | os.PathLike) -> Path:
    """The weights file a path stands for; a folder is resolved like ``diffir train --from-s1/--from-s2``.

    A folder holding ``model.safetensors`` (a finished ``diffir train`` run) gives that file; a folder of official
    per-network files (``net_g.pth`` ...) gives the folder itself; otherwise a checkpoint folder
    (``params_ema.safetensors``, then ``params.safetensors``) or a run still in progress (its newest
    ``checkpoints/iter_*``).  A folder with none of these is a one-line :class:`CheckpointError`.
    Anything else is returned unchanged (existence is checked by the reader).
    """
    p = Path(path).expanduser()
    if not p.is_dir():
        return p
    from diffir.archs.diffbir.diffusers_layout import is_diffusers_folder

    if is_diffusers_folder(p):  # Stable Diffusion saved by diffusers: read_checkpoint converts the folder
        return p
    if (p / "model.safetensors").is_file():
        return p / "model.safetensors"
    if per_network_files(p) or component_files(p):  # official multi-file releases (HI-Diff, DiffBIR): a group
        return p
    try:
        return resolve_weights(p)
    except CheckpointError:
        raise CheckpointError(
            f"{p}: folder without model weights (looked for model.safetensors, params_ema.safetensors, "
            "params.safetensors, checkpoints/iter_*/ and official net_*.pth files); pass a weights file or a "
            "`diffir train` run folder"
        ) from None
