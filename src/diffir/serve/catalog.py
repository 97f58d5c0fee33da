"""The models ``diffir serve`` offers: bundled models first (with what each is for), then the weights installed
in the models folder (``--models DIR``, else ``$DIFFIR_MODELS``), each with its task when the file says it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from diffir.bundled import BUNDLED, DEFAULT_MODEL, bundled_path, list_bundled
from diffir.io.locate import installed_metadata, installed_models, models_dir

#: Task words of the page, by the task and scale a model file records.
_TASKS = {"sr": "super-resolution", "deblur": "deblurring", "inpaint": "inpainting"}


@dataclass(frozen=True)
class ModelEntry:
    name: str
    task: str  # "sr", "deblur", "inpaint", or "" when the file does not say (official .pth: known once loaded)
    scale: int
    group: str  # "bundled" or "installed"
    description: str
    path: Path

    def as_json(self) -> dict:
        entry = asdict(self)
        entry.pop("path")
        entry["needs_mask"] = self.task == "inpaint"
        entry["default"] = self.name == DEFAULT_MODEL
        return entry


def model_catalog(folder: Path | None = None) -> list[ModelEntry]:
    """Bundled models, then those installed in ``folder`` (default: the models folder); a name is listed once."""
    entries = []
    for name in list_bundled():
        path = bundled_path(name)
        meta = installed_metadata(path) or {}
        entries.append(ModelEntry(name, meta.get("task", ""), _scale(meta), "bundled", BUNDLED[name].description, path))
    folder = models_dir() if folder is None else folder
    for name, path in installed_models(folder).items():
        if any(e.name == name for e in entries):
            continue
        meta = installed_metadata(path)
        if meta is None:
            text, task, scale = f"{path.name}: official layout, its task is read when it is first used", "", 1
        else:
            task, scale = meta.get("task", ""), _scale(meta)
            what = _TASKS.get(task, task or "unknown task")
            text = f"{what}{f' x{scale}' if task == 'sr' else ''} ({meta.get('arch', 'model')}, {path.name})"
        entries.append(ModelEntry(name, task, scale, "installed", text, path))
    return entries


def _scale(meta: dict[str, str]) -> int:
    try:
        return max(1, int(meta.get("scale", "1")))
    except ValueError:
        return 1
