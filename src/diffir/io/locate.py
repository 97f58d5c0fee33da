"""Where a model given as ``NAME|PATH`` comes from: one resolver for every entry point (``load_model``,
``Restorer``, ``restore``/``eval``/``info``/``convert``/``export``/``bench``).  Nothing is ever downloaded.

Order (:func:`locate_model`):

1. an existing file → that file; an existing folder → its weights (a ``diffir train`` run's ``model.safetensors``,
   a checkpoint folder, or official per-network files); ``A.pth,B.pth`` → one model released as one file per
   network;
2. something that looks like a path (a folder separator or a checkpoint extension) and does not exist → an
   error that says so, and where official weights of that file name are published;
3. a name → installed weights ``<models folder>/<name>.safetensors|.pth`` (models folder = ``$DIFFIR_MODELS``,
   default ``~/.cache/diffir/models``), then weights bundled with the package (:mod:`diffir.bundled`), then a
   preset's random weights — only when the caller asks for them (``diffir info``, ``random_weights=True``);
4. otherwise one line naming the closest known model (never the name typed) and how to install weights.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from diffir.errors import CheckpointError, describe_os_error

if TYPE_CHECKING:
    from diffir.official import OfficialWeights

MODELS_ENV = "DIFFIR_MODELS"
CHECKPOINT_EXTENSIONS = (".safetensors", ".pth", ".ckpt", ".pt", ".bin")
#: The extensions looked for, in order, when a model is given by name.
NAME_EXTENSIONS = (".safetensors", ".pth")


def models_dir() -> Path:
    """The folder where a user installs weights to use them by name."""
    return Path(os.environ.get(MODELS_ENV) or Path.home() / ".cache" / "diffir" / "models").expanduser()


@dataclass(frozen=True)
class ModelLocation:
    """What a model spec resolved to.  ``source``: file, folder, files, installed, bundled or preset."""

    spec: str
    source: str
    path: Path | tuple[Path, ...] | None = None
    name: str | None = None  # installed / bundled / preset name

    @property
    def target(self) -> Path | list[Path] | None:
        """What :func:`diffir.load_model` reads: a path, or a list of per-network files."""
        return list(self.path) if isinstance(self.path, tuple) else self.path


def installed_models(folder: Path | None = None) -> dict[str, Path]:
    """Weights installed in the models folder (or ``folder``), by name (``.safetensors`` wins over ``.pth``)."""
    folder = models_dir() if folder is None else Path(folder)
    if not folder.is_dir():
        return {}
    found: dict[str, Path] = {}
    for ext in reversed(NAME_EXTENSIONS):
        found.update({p.stem: p for p in sorted(folder.glob(f"*{ext}")) if p.is_file()})
    return dict(sorted(found.items()))


def installed_metadata(path: Path) -> dict[str, str] | None:
    """What a diffir safetensors file says about itself (task, scale, arch ...), read from its header only;
    None for other files (official ``.pth`` are not opened) and for unreadable ones (`diffir info` says why)."""
    if path.suffix != ".safetensors":
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception:  # noqa: BLE001 - a damaged file is listed, not fatal
        return None


def _looks_like_path(text: str) -> bool:
    return os.sep in text or "/" in text or Path(text).suffix.lower() in CHECKPOINT_EXTENSIONS


def locate_model(spec: str | os.PathLike, *, allow_preset: bool = False) -> ModelLocation:
    """Resolve ``spec`` (see the module docstring); a one-line :class:`CheckpointError` when nothing matches."""
    try:
        return _locate(spec, allow_preset)
    except OSError as exc:  # a name too long for the file system, a folder on the way that cannot be searched
        raise CheckpointError(describe_os_error(exc, spec)) from None


def _locate(spec: str | os.PathLike, allow_preset: bool) -> ModelLocation:
    from diffir.bundled import bundled_path
    from diffir.io.runs import resolve_checkpoint_path

    text = str(spec)
    path = Path(text).expanduser()
    if "," in text and not path.exists():
        files = tuple(Path(part.strip()).expanduser() for part in text.split(",") if part.strip())
        from diffir.archs.diffbir.diffusers_layout import is_diffusers_folder

        missing = [str(f) for f in files if not (f.is_file() or is_diffusers_folder(f))]
        if missing:
            raise CheckpointError(f"{missing[0]}: no such file (in the comma-separated list {text})")
        return ModelLocation(text, "files", files)
    if path.is_file():
        return ModelLocation(text, "file", path)
    if path.is_dir():
        return ModelLocation(text, "folder", resolve_checkpoint_path(path))
    if _looks_like_path(text):
        raise CheckpointError(f"{text}: no such file or folder{_official_hint(text)}")
    if (found := installed_models().get(text)) is not None:
        return ModelLocation(text, "installed", found, text)
    if (found := bundled_path(text)) is not None:
        return ModelLocation(text, "bundled", found, text)
    from diffir.registry import preset_names

    if text in preset_names():
        if allow_preset:
            return ModelLocation(text, "preset", None, text)
        raise CheckpointError(
            f"{text!r} is an architecture preset and no weights are installed under that name "
            f"({models_dir() / text}.safetensors){_official_for_preset(text)}; all released files: "
            f"`diffir list --official`; random weights: diffir.create_model({text!r})"
        )
    folder = models_dir()
    from diffir.official import OFFICIAL_WEIGHTS

    for w in OFFICIAL_WEIGHTS:
        if w.install_name == text:  # a known name whose file the user has not installed yet
            raise CheckpointError(
                f"{text!r} is not installed yet: it is the name for the official {w.file} ({w.purpose}), published "
                f"in {w.published}; download it, then `{convert_command(w)}`"
            )
    raise CheckpointError(
        f"no model named {text!r}{_suggestion(text)}: use a name from `diffir list` (bundled, installed or a "
        f"preset), install weights as {folder}/{text}.safetensors (`diffir convert FILE {folder}/{text}.safetensors`;"
        f" ${MODELS_ENV} sets the folder), or give a checkpoint file or run folder path" + _official_hint(text)
    )


def known_model_names() -> dict[str, str]:
    """Names usable as a model, with where each comes from."""
    from diffir.bundled import list_bundled
    from diffir.official import OFFICIAL_WEIGHTS
    from diffir.registry import preset_names

    names = dict.fromkeys(preset_names(), "a preset")
    names.update({w.install_name: "official weights, once converted" for w in OFFICIAL_WEIGHTS})
    names.update(dict.fromkeys(installed_models(), "installed weights"))
    names.update(dict.fromkeys(list_bundled(), "the bundled model"))
    return names


def _suggestion(name: str) -> str:
    known = {k: v for k, v in known_model_names().items() if k != name}
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}, {known[close[0]]}?)" if close else ""


def _official_hint(name: str) -> str:
    """Where the authors publish the official file (or installed name) ``name``, if it is one."""
    from diffir.official import official_for

    w = official_for(name)
    if w is None:
        return ""
    return f"; {w.file} is official {w.architecture} weights ({w.purpose}), published in {w.published}: " \
           f"download it, then `{convert_command(w)}`"


def _official_for_preset(preset: str) -> str:
    from diffir.official import OFFICIAL_WEIGHTS

    matches = [w for w in OFFICIAL_WEIGHTS if w.preset == preset]
    if not matches:
        return ""
    w = matches[0]
    return f"; its official weights: {w.file} ({w.published}), installed by `{convert_command(w)}`, then used " \
           f"as -m {w.install_name}"


def convert_command(w: OfficialWeights) -> str:
    """The ``diffir convert`` line that installs official weights ``w`` in the models folder (then
    ``-m <install_name>``), with the folder written out: ``$DIFFIR_MODELS`` may not be set in the user's shell."""
    return f"diffir convert {w.source} {models_dir()}/{w.install_name}.safetensors"
