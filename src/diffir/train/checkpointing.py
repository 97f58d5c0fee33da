"""Training checkpoints: atomic directories of safetensors weights + a tensors-only training state.

Layout of one checkpoint ``OUT/checkpoints/iter_00001000/``:

* ``params.safetensors`` / ``params_ema.safetensors`` — the network (``diffir.save_model`` format, so either loads
  with ``diffir.load_model``);
* ``teacher.safetensors`` — the frozen S1 network (stage 2 / GAN), so a stage can be resumed or continued alone;
* ``net_d.safetensors`` — the discriminator (GAN / inpainting);
* ``state.pt`` — iteration, optimiser states, RNG states, guard and best-metric bookkeeping; plain tensors and
  Python containers only, read back with ``torch.load(weights_only=True)``.

The directory is written under a temporary name (``.tmp_iter_<iteration>_<pid>``) and renamed into place, so a
crash (or ``kill -9``) leaves either the previous checkpoint set or the new complete one; ``latest()`` ignores
leftovers and :func:`remove_stale` deletes them once their writer is gone.  A failed write (full disk) removes
the half-made directory and keeps every earlier checkpoint.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from diffir.archs.base import ModelDescriptor
from diffir.errors import CheckpointError, describe_os_error
from diffir.io.atomic import process_alive, remove_stale_temporaries, save_safetensors
from diffir.io.runs import (  # noqa: F401 - the run layout, re-exported for the trainer
    checkpoint_dir,
    latest,
    list_checkpoints,
    resolve_teacher,
    resolve_weights,
)


def resolve_resume(out: Path, resume: str | None) -> Path | None:
    """``auto``: newest checkpoint under ``out`` (None when there is none); else an explicit checkpoint dir."""
    if resume is None:
        return None
    if resume == "auto":
        return latest(out)
    p = Path(resume)
    if (p / "state.pt").is_file():
        return p
    if (found := latest(p)) is not None:  # an output directory
        return found
    raise CheckpointError(f"--resume {resume}: not a training checkpoint (no state.pt) nor a run folder")


# ------------------------------------------------------------------------------------------------ weights
def save_weights(module: nn.Module, path: Path) -> None:
    """A diffir model through ``diffir.save_model``; any other module as a plain safetensors state_dict (both
    atomic, with the umask's permissions)."""
    if isinstance(getattr(module, "descriptor", None), ModelDescriptor):
        from diffir import save_model

        save_model(module, path)  # type: ignore[arg-type]
    else:
        save_safetensors(path, {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()})


def save_run_file(module: nn.Module, path: Path) -> None:
    """:func:`save_weights` for the run folder's model files; a failed write is one line naming the file (the
    previous file, if any, stays: the write is atomic)."""
    try:
        save_weights(module, path)
    except OSError as exc:
        raise CheckpointError(f"cannot write {describe_os_error(exc, path)}") from None


def load_weights(module: nn.Module, path: Path) -> None:
    from safetensors.torch import load_file

    if not path.is_file():
        raise CheckpointError(f"missing {path} (incomplete checkpoint?)")
    try:
        sd = load_file(str(path))
        device = next(iter(module.state_dict().values())).device
        module.load_state_dict({k: v.to(device) for k, v in sd.items()}, strict=True)
    except OSError:
        raise
    except Exception as exc:  # noqa: BLE001 - truncated file, or weights of another network
        detail = " ".join(str(exc).split())[:200]
        raise CheckpointError(f"{path}: cannot load ({type(exc).__name__}: {detail}); the checkpoint is damaged "
                              "or from a different config") from None


# ------------------------------------------------------------------------------------------------- RNG
def rng_state(generators: dict[str, torch.Generator]) -> dict[str, Any]:
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "generators": {k: g.get_state() for k, g in generators.items()},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npst = state["numpy"]
    np.random.set_state((npst[0], npst[1].numpy().astype(np.uint32), *npst[2:]))
    for k, g in generators.items():
        if k in state["generators"]:
            g.set_state(state["generators"][k])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------------------------------------ save/load
def save_checkpoint(out: Path, iteration: int, weights: dict[str, nn.Module], state: dict[str, Any],
                    keep: int, tensors: dict[str, dict[str, torch.Tensor]] | None = None) -> Path:
    """Write ``iter_<iteration>`` atomically and prune all but the newest ``keep`` checkpoints.

    ``tensors`` maps a file stem to a flat dict of tensors saved as ``<stem>.safetensors`` (e.g. the training-pair
    pool), read back with :func:`load_tensors`.
    """
    root = checkpoint_dir(out)
    final = root / f"iter_{iteration:08d}"
    tmp = root / f".tmp_iter_{iteration:08d}_{os.getpid()}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        _write_files(tmp, weights, state, tensors or {})
    except OSError as exc:  # full disk, quota, permissions: nothing published, earlier checkpoints untouched
        shutil.rmtree(tmp, ignore_errors=True)
        previous = latest(out)
        kept = f"; the previous checkpoint {previous} is kept" if previous is not None else ""
        raise CheckpointError(f"cannot write checkpoint {describe_os_error(exc, final)}{kept}") from None
    if final.exists():  # re-saving the same iteration (e.g. after a rollback)
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in list_checkpoints(out)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    remove_stale(out)
    return final


def _write_files(folder: Path, weights: dict[str, nn.Module], state: dict[str, Any],
                 tensors: dict[str, dict[str, torch.Tensor]]) -> None:
    for name, module in weights.items():
        save_weights(module, folder / f"{name}.safetensors")
    for name, flat in tensors.items():
        save_safetensors(folder / f"{name}.safetensors", {k: v.detach().cpu().contiguous() for k, v in flat.items()})
    torch.save(state, folder / "state.pt")  # plain open(): the umask's permissions, like the safetensors files
    for f in folder.iterdir():  # make the data durable before the rename publishes it
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())


_TMP_DIR = re.compile(r"^\.tmp_iter_\d+_(?P<pid>\d+)$")


def remove_stale(out: Path) -> None:
    """Remove what killed runs left in ``out``: temporary files and half-made checkpoint directories.

    Only temporaries whose writing process is gone are removed; complete checkpoints (``iter_*``) never are.
    """
    root = checkpoint_dir(out)
    remove_stale_temporaries(out)
    remove_stale_temporaries(root)
    if not root.is_dir():
        return
    for entry in root.iterdir():
        m = _TMP_DIR.match(entry.name)
        if m and entry.is_dir() and not entry.is_symlink() and not process_alive(int(m["pid"])):
            shutil.rmtree(entry, ignore_errors=True)


def load_tensors(path: Path, device: torch.device) -> dict[str, torch.Tensor]:
    """A flat dict of tensors written by :func:`save_checkpoint` (``tensors=``), moved to ``device``."""
    from safetensors.torch import load_file

    try:
        return {k: v.to(device) for k, v in load_file(str(path)).items()}
    except Exception as exc:  # noqa: BLE001 - truncated / foreign file
        raise CheckpointError(f"{path}: cannot read ({type(exc).__name__}: {exc}); the checkpoint is damaged, "
                              "resume from an earlier one") from None


def load_state(ckpt: Path) -> dict[str, Any]:
    try:
        return torch.load(ckpt / "state.pt", map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupted / foreign file
        raise CheckpointError(f"{ckpt / 'state.pt'}: cannot read training state ({exc})") from None


def optimizer_state_to(state: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Optimizer state tensors saved on CPU go back to the parameters' device (``step`` stays on CPU)."""
    for s in state.get("state", {}).values():
        for k, v in s.items():
            if torch.is_tensor(v) and k != "step":
                s[k] = v.to(device)
    return state
