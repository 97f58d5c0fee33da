"""The folder layout of a ``diffir train`` run, read side: where its checkpoints and weights are.

``OUT/model.safetensors`` (the finished run), ``OUT/checkpoints/iter_00001000/`` (``params_ema``/``params``/
``teacher``/``net_d`` ``.safetensors`` + ``state.pt``).  Written by :mod:`diffir.train.checkpointing`; read here so
that loading a model from a run folder (:func:`diffir.load_model`, ``diffir restore -m RUN``) needs no training code.
"""

from __future__ import annotations

import re
from pathlib import Path

from diffir.errors import CheckpointError

_NAME = re.compile(r"^iter_(\d+)$")


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
    """A model file from a file, a checkpoint dir or a run dir (EMA weights preferred, like BasicSR)."""
    p = Path(path)
    if p.is_file():
        return p
    names = ["params_ema.safetensors", "params.safetensors"] if prefer_ema else ["params.safetensors"]
    if p.is_dir():
        run_model = [p / "model.safetensors"] if (p / "checkpoints").is_dir() else []
        for cand in run_model + [p / n for n in names]:
            if cand.is_file():
                return cand
        if (ck := latest(p)) is not None:
            return resolve_weights(ck, prefer_ema)
    raise CheckpointError(f"no model weights at {p} (a .safetensors/.pth file, a checkpoint or a run directory)")


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
