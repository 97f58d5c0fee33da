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
    """A shipped model and its card: what it is for, how it was trained, what it measured, under which terms."""

    name: str
    task: str  # what `diffir restore --task` calls it: sr_x4, realsr_x4, deblur, inpaint
    description: str  # one line for `diffir list`
    recipe: str  # the commands that trained it
    file: str
    data: str = ""
    iterations: str = ""
    train_time: str = ""
    metrics: str = ""  # with the command that measured them
    licence: str = ""

    def card(self) -> str:
        """The model card as ``diffir info NAME`` prints it."""
        fields = [("task", f"{self.task} (diffir restore --task {self.task})"), ("what", self.description),
                  ("data", self.data), ("iterations", self.iterations), ("training time", self.train_time),
                  ("trained by", self.recipe), ("metrics", self.metrics), ("licence", self.licence)]
        return "\n".join(f"  {k:14s} {v}" for k, v in fields if v)


_RESEARCH_ONLY = ("weights: Apache-2.0 like the code, but trained on images without a licence for commercial "
                  "use ({}): treat the model as research-only")


#: In the order ``diffir list`` and ``diffir serve`` show them: the default first.
BUNDLED: dict[str, BundledModel] = {
    m.name: m
    for m in [
        BundledModel(
            name="diffir_realsr_x4_small",
            task="realsr_x4",
            description="real-photo x4 SR (camera blur, noise, JPEG): small DiffIR GAN blended 80/20 with the "
            "bicubic model, 4.8M parameters",
            recipe="diffir train -c configs/bundled/realsr_x4_small_s1.yaml --out runs/bundled/realsr_x4_small_s1; "
            "diffir train -c configs/bundled/realsr_x4_small_s2.yaml --out runs/bundled/realsr_x4_small_s2 "
            "--from-s1 runs/bundled/realsr_x4_small_s1; diffir train -c configs/bundled/realsr_x4_small_gan.yaml "
            "--out runs/bundled/realsr_x4_small_gan --from-s2 runs/bundled/realsr_x4_small_s2; diffir convert "
            "runs/bundled/realsr_x4_small_gan diffir_realsr_x4_small.safetensors --half --blend diffir_sr_x4_small "
            "--blend-weight 0.2",
            file="diffir_realsr_x4_small.safetensors",
            data="T91 + BSD200 (291 images) under the Real-ESRGAN second-order degradations on the fly (blur, "
            "resize, noise, JPEG, twice), 96-px GT patches; validated on Set14 under seeded degradations",
            iterations="from the bicubic model's S1: S1 4,000 + S2 2,500 (batch 8) + GAN 2,000 (batch 6; L1 + "
            "KD-L1 + random-weight VGG19 perceptual + 0.1 U-Net GAN), then network interpolation with "
            "diffir_sr_x4_small (weight 0.2)",
            train_time="about 2.2 h (S1) + 0.75 h (S2) + 1.9 h (GAN) of one core of a shared 2-core Xeon CPU, "
            "after the bicubic model's S1",
            metrics="RealSR Canon x4 (50 pairs), Y-PSNR/SSIM crop 4, NIQE: 26.94/0.7677/6.55 (bicubic "
            "27.21/0.7678/9.26, diffir_sr_x4_small 27.63/0.7832/8.84, Real-ESRGAN x4plus 25.86/0.7755/5.22); "
            "`diffir eval -m diffir_realsr_x4_small --data $DIFFIR_DATA/realsr/RealSR --metrics psnr,ssim,niqe`",
            licence=_RESEARCH_ONLY.format("T91, BSD200"),
        ),
        BundledModel(
            name="diffir_sr_x4_small",
            task="sr_x4",
            description="bicubic x4 SR (clean downscales): small DiffIR S2, dim 24, 2 blocks/level, 4.8M parameters",
            recipe="diffir train -c configs/bundled/sr_x4_small_v2_s1.yaml --out runs/bundled/sr_x4_small_v2_s1; "
            "diffir train -c configs/bundled/sr_x4_small_v2_s2.yaml --out runs/bundled/sr_x4_small_v2_s2 "
            "--from-s1 runs/bundled/sr_x4_small_v2_s1; diffir convert runs/bundled/sr_x4_small_v2_s2 "
            "diffir_sr_x4_small.safetensors --half",
            file="diffir_sr_x4_small.safetensors",
            data="T91 + BSD200 (291 images), 96-px GT patches, MATLAB bicubic x4 on the fly; validated on Set5",
            iterations="S1 15,000 + S2 3,000 (batch 8; S2 joint over the T=4 reverse steps, L1 + KD-L1)",
            train_time="about 5.7 h (S1) + 1.1 h (S2) of one core of a shared 2-core Xeon CPU",
            metrics="x4 Y-PSNR/SSIM, crop 4: Set5 31.24/0.8806, Set14 27.95/0.7658, B100 27.21/0.7233 "
            "(bicubic 28.43/0.8111, 26.09/0.7048, 25.96/0.6681); better than bicubic on every image of the three "
            "sets; `diffir eval -m diffir_sr_x4_small --data $DIFFIR_DATA/sr/Set5 --degrade bicubic_x4`",
            licence=_RESEARCH_ONLY.format("T91, BSD200"),
        ),
    ]
}

#: What ``diffir restore`` uses when neither ``--model`` nor ``--task`` is given.
DEFAULT_MODEL = "diffir_realsr_x4_small"  # most inputs are real photos, not bicubic downscales

#: ``diffir restore --task`` words -> (model task, scale) a model doing that task has.
RESTORE_TASKS: dict[str, tuple[str, int]] = {
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

    if task not in RESTORE_TASKS:
        raise ConfigError(f"unknown task {task!r}; choose one of {', '.join(RESTORE_TASKS)}")
    for name in list_bundled():
        if BUNDLED[name].task == task:
            return name
    raise ConfigError(f"this version ships no bundled model for --task {task}; train one (docs/training.md) or "
                      "use official weights (`diffir list --official`), then pass it with -m")
