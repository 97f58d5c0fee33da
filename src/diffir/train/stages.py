"""Stage wiring: S2 starts from S1 (restoration network copied, S1 frozen as teacher); GAN starts from S2.

Follows the official initialisation (DiffIR specs §4.3, HI-Diff §A.7): the S2 network takes the S1 checkpoint's
restoration network (EMA preferred; ``init_from_stage1``), its condition encoder and denoiser start fresh; the
whole S1 network is kept, frozen, as the teacher whose prior encoder gives the target prior.  The GAN stage
copies every S2 weight and reuses the S2 run's teacher.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from diffir.errors import ConfigError
from diffir.train import checkpointing as ckpt


def check_same(mine, theirs, what: str, ignore: tuple[str, ...] = (),
               fix: str = "use the same preset/overrides as the earlier stage") -> None:
    """Raise a one-line error when two network configs differ in a field outside ``ignore``."""
    a, b = mine.to_dict(), theirs.to_dict()
    for k in a:
        if k not in ignore and a[k] != b.get(k):
            raise ConfigError(f"{what}: {k}={b.get(k)!r} but the configured model has {k}={a[k]!r} ({fix})")


def load_teacher(path: Path, model_config, device: torch.device) -> nn.Module:
    """The frozen S1 network (eval mode, no gradients) from a model file."""
    from diffir import load_model

    teacher = load_model(path)
    if teacher.descriptor.stage != 1:
        raise ConfigError(f"{path}: the teacher must be a stage-1 model, got stage {teacher.descriptor.stage}")
    # fields of the prior's diffusion legitimately differ between an S1 teacher and the S2 network it trains
    check_same(model_config, teacher.config, f"S1 checkpoint {path}", ignore=model_config.STAGE2_FIELDS)
    return teacher.to(device).eval().requires_grad_(False)


def initialise_stage(student: nn.Module, stage: str, from_s1: str | None, from_s2: str | None,
                     device: torch.device) -> nn.Module | None:
    """Load the earlier stage into ``student``; returns the teacher (None for stage s1)."""
    from diffir import load_model

    if stage == "s1":
        if from_s1 or from_s2:
            raise ConfigError("stage s1 trains from scratch; --from-s1/--from-s2 are for stages s2/gan")
        return None
    if stage == "gan" and from_s2 is None:
        raise ConfigError("stage 'gan' starts from a stage-2 model: pass --from-s2 RUN_DIR|CKPT")
    if stage == "s2" and from_s2 is None and from_s1 is None:
        raise ConfigError("stage 's2' starts from a stage-1 model: pass --from-s1 RUN_DIR|CKPT")
    s2 = None
    if from_s2 is not None:  # its stage first: an S1 run passed as --from-s2 has no teacher beside it either
        s2 = load_model(ckpt.resolve_weights(from_s2))
        if s2.descriptor.stage != 2:
            fix = ("pass it as --from-s1 instead" if stage == "s2" else
                   f"train stage s2 first (--from-s1 {from_s2}) and pass that run as --from-s2")
            raise ConfigError(f"--from-s2 {from_s2}: that is a stage-{s2.descriptor.stage} model, not a stage-2 model; "
                              f"{fix}")
        check_same(student.config, s2.config, f"--from-s2 {from_s2}", ignore=("stage",))
    teacher_path = ckpt.resolve_weights(from_s1) if from_s1 else ckpt.resolve_teacher(from_s2)  # type: ignore[arg-type]
    if teacher_path is None:
        raise ConfigError(f"no S1 teacher found next to {from_s2}; pass --from-s1 as well")
    teacher = load_teacher(teacher_path, student.config, device)
    if s2 is not None:
        student.load_state_dict(s2.state_dict())
    else:
        student.init_from_stage1(teacher)
    return teacher


def load_init(student: nn.Module, spec: str) -> None:
    """``model.init``: start from the weights of a model of the same stage and configuration (fine-tuning, e.g. a
    bundled model on your own photos, or a bicubic-SR run on real-world degradations)."""
    from diffir import load_model

    path = Path(spec).expanduser()
    source = load_model(ckpt.resolve_weights(path) if path.exists() else spec)
    stage = student.descriptor.stage
    if source.descriptor.stage != stage:
        raise ConfigError(f"model.init {spec}: a stage-{source.descriptor.stage} model cannot start stage {stage}; "
                          "give a model of the stage you train (stage 2 from stage 1 is --from-s1)")
    check_same(student.config, source.config, f"model.init {spec}",
               fix="set model.preset/overrides to the weights' configuration: `diffir info` shows it")
    student.load_state_dict(source.state_dict())
