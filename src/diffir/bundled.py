"""Trained weights shipped inside the package (``diffir/assets/models``), usable by name everywhere.

Each entry records how it was trained (config + command) and what it measured, so a user can reproduce it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ASSET_DIR = Path(__file__).resolve().parent / "assets" / "models"


def asset_path(name: str) -> Path:
    """Path of a data file shipped in ``diffir/assets`` (metric parameters, the tokenizer's vocabulary)."""
    return ASSET_DIR.parent / name


@dataclass(frozen=True)
class BundledModel:
    name: str
    task: str  # what `diffir restore --task` calls it: sr_x4, realsr_x4, deblur, inpaint
    description: str
    recipe: str  # how it was trained
    file: str


BUNDLED: dict[str, BundledModel] = {
    m.name: m
    for m in [
        BundledModel(
            name="diffir_sr_x4_small",
            task="sr_x4",
            description="bicubic x4 SR, small DiffIR S2 (dim 24, 2 blocks/level, 4.8M parameters) trained on "
            "T91+BSD200 on a 2-core CPU",
            recipe="configs/bundled/sr_x4_small_s1.yaml then configs/bundled/sr_x4_small_s2.yaml --from-s1",
            file="diffir_sr_x4_small.safetensors",
        ),
    ]
}

#: What ``diffir restore`` uses when neither ``--model`` nor ``--task`` is given.
DEFAULT_MODEL = "diffir_sr_x4_small"

#: ``diffir restore --task`` words -> (model task, scale) a model doing that task has.
TASKS: dict[str, tuple[str, int]] = {
    "realsr_x4": ("sr", 4),
    "sr_x4": ("sr", 4),
    "deblur": ("deblur", 1),
    "inpaint": ("inpaint", 1),
}


def bundled_path(name: str) -> Path | None:
    entry = BUNDLED.get(name)
    if entry is None:
        return None
    path = ASSET_DIR / entry.file
    return path if path.is_file() else None


def list_bundled() -> list[str]:
    return [name for name in BUNDLED if bundled_path(name) is not None]


def model_for_task(task: str) -> str:
    """The bundled model ``diffir restore --task TASK`` uses; a one-line error when the package ships none yet."""
    from diffir.errors import ConfigError

    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    for name in list_bundled():
        if BUNDLED[name].task == task:
            return name
    raise ConfigError(f"this version ships no bundled model for --task {task}; train one (docs/training.md) or "
                      "use official weights (`diffir list --official`), then pass it with -m")
