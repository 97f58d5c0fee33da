"""Where ``--model NAME|PATH`` comes from.  Nothing is ever downloaded.

Resolution order (``resolve_model_path``):

1. an existing file path → that file; an existing folder → its weights (``model.safetensors`` of a
   ``diffir train`` run, see :func:`diffir.io.checkpoint.resolve_checkpoint_path`);
2. something that looks like a path (has a folder separator or a checkpoint extension) → "not found" error;
3. a name → ``<models dir>/<name>.safetensors`` or ``<name>.pth`` (models dir = ``$DIFFIR_MODELS`` or
   ``~/.cache/diffir/models``);
4. a name of a model bundled with the package (:mod:`diffir.bundled`);
5. otherwise a one-line error naming the closest known model (bundled, models folder, presets), where to put
   the file and how to convert official weights.  The wording fits the Python API and the CLI alike.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from pathlib import Path

from torch import nn

from diffir.archs.base import ModelDescriptor
from diffir.errors import DiffIRError

MODELS_ENV = "DIFFIR_MODELS"
CHECKPOINT_EXTENSIONS = (".safetensors", ".pth", ".ckpt", ".pt", ".bin")
#: The extensions looked for, in order, when a model is given by name.
NAME_EXTENSIONS = (".safetensors", ".pth")


def models_dir() -> Path:
    return Path(os.environ.get(MODELS_ENV) or Path.home() / ".cache" / "diffir" / "models").expanduser()


def _from_models_dir(name: str) -> Path | None:
    folder = models_dir()
    for ext in NAME_EXTENSIONS:
        candidate = folder / f"{name}{ext}"
        if candidate.is_file():
            return candidate
    return None


def _bundled(name: str) -> Path | None:
    from diffir.bundled import bundled_path

    return bundled_path(name)


#: Functions name → weights file (or None); tried in order: the user's models folder wins over bundled weights.
_NAME_LOOKUPS: list[Callable[[str], Path | None]] = [_from_models_dir, _bundled]


def resolve_model_path(spec: str | os.PathLike) -> Path | list[Path]:
    """The file, folder or files (``A.pth,B.pth``: one model released as one file per network) ``spec`` names."""
    text = str(spec)
    if "," in text and not Path(text).expanduser().exists():
        files = [Path(part.strip()).expanduser() for part in text.split(",") if part.strip()]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise DiffIRError(f"model file not found: {missing[0]} (in the comma-separated list {text})")
        return files
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        from diffir.io.checkpoint import resolve_checkpoint_path

        return resolve_checkpoint_path(path)
    if os.sep in text or "/" in text or path.suffix.lower() in CHECKPOINT_EXTENSIONS:
        raise DiffIRError(f"model file not found: {text}")
    for lookup in _NAME_LOOKUPS:
        found = lookup(text)
        if found is not None:
            return found
    folder = models_dir()
    raise DiffIRError(
        f"no weights for model {text!r}{_suggestion(text)}: a name is {text}.safetensors (or .pth) in {folder} "
        f"(set ${MODELS_ENV} to change it) or a bundled model; otherwise give a checkpoint file or run folder "
        f"path; convert official weights with `diffir convert IN.pth {folder}/{text}.safetensors`"
    )


def known_model_names() -> dict[str, str]:
    """Names usable as a model, with where each comes from: bundled, the models folder, or a preset
    (architecture only: its weights still have to be put in the models folder)."""
    from diffir.bundled import list_bundled
    from diffir.registry import preset_names

    names = dict.fromkeys(preset_names(), "a preset whose weights are not installed")
    folder = models_dir()
    if folder.is_dir():
        names.update({p.stem: "from the models folder" for p in folder.iterdir() if p.suffix in NAME_EXTENSIONS})
    names.update(dict.fromkeys(list_bundled(), "the bundled model"))
    return names


def _suggestion(name: str) -> str:
    known = known_model_names()
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}, {known[close[0]]}?)" if close else ""


def load_inference_model(spec: str | os.PathLike | nn.Module) -> nn.Module:
    """A stage-2 model of any architecture in eval mode, from a module, a checkpoint path or a model name."""
    if isinstance(spec, nn.Module):
        model = spec
    else:
        from diffir.io.checkpoint import load_model

        model = load_model(resolve_model_path(spec))
    descriptor = getattr(model, "descriptor", None)
    if not isinstance(descriptor, ModelDescriptor):
        raise DiffIRError(f"{type(model).__name__} is not a diffir model (see `diffir list`)")
    if descriptor.stage == 1:
        raise DiffIRError("this is a stage-1 (S1) model, which needs the ground truth; restore with a stage-2 model")
    return model.eval()
