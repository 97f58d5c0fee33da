"""Where the training of a model that brings its own loss (DiffBIR: ``training_loss``) starts.

Stage 1 (the cleaner) trains from scratch.  Stage 2 trains the IRControlNet on top of frozen, pre-trained
networks, assembled from files given in any order (each file is recognised by its tensors, as ``load_model``
does):

* ``model.base``: the Stable Diffusion 2.1-base checkpoint (UNet, VAE, text tower) — a download that belongs to
  the recipe, so it lives in the config; ``random`` keeps the preset's seeded random networks (tiny CI configs:
  the recipe runs without any download, nothing meaningful is learnt);
* ``--from-s1`` (or ``model.from_s1``): the stage-1 cleaner — a ``diffir train`` stage-1 run folder, a diffir
  model file or an official cleaner file (``swinir.pth`` ...); it may also list the SD file, comma-separated, or
  be a folder of official files;
* ``--from-s2`` (or ``model.from_s2``): a stage-2 pipeline to continue from (a run folder, or official files with
  a ControlNet, the official ``resume``).

Without a ControlNet among the files, the ControlNet is initialised from the UNet (official B.3).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from diffir.errors import CheckpointError, ConfigError

#: The model's state_dict prefixes of each pre-trained part, and what to give when it is missing.
_NEEDS = {
    "cldm.unet.": "the Stable Diffusion 2.1-base checkpoint: set model.base: PATH/v2-1_512-ema-pruned.ckpt "
                  "(sd2.1-base-zsnr-laionaes5.ckpt for v2.1), or --set model.base=PATH",
    "cleaner.": "its stage-1 cleaner: pass --from-s1 RUN_DIR (a diffbir_swinir_s1 run) or an official cleaner file "
                "(e.g. swinir.pth)",
}
_CONTROLNET = "cldm.controlnet."
_OURS = ("cleaner.", "cldm.", "text.")  # diffir's own DiffBIR layout (save_model, training runs)


def trains_itself(model: nn.Module) -> bool:
    """A model that computes its own training loss (the capability the engine dispatches on)."""
    return callable(getattr(model, "training_loss", None))


def start_pipeline(student: nn.Module, stage: str, base: str | None, from_s1: str | None,
                   from_s2: str | None) -> None:
    """Load the pre-trained parts of ``student`` for ``stage`` (nothing for s1)."""
    if stage == "gan":
        raise ConfigError(f"{student.descriptor.architecture} has no GAN stage; train stage s1 or s2")
    if stage == "s1":
        if base or from_s1 or from_s2:
            raise ConfigError("stage s1 trains the cleaner from scratch; model.base, --from-s1 and --from-s2 are "
                              "for stage s2")
        return
    random_base = (base or "").strip().lower() == "random"
    state: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    # Later sources override earlier ones (a --from-s2 pipeline replaces the config's model.base), but one source
    # naming the same network twice is a mistake.
    for source in (None if random_base else base, from_s1, from_s2):
        mine: dict[str, str] = {}
        for path in _files(_split(source)):
            part = _model_keys(path)
            for key in part:
                if key in mine:
                    raise ConfigError(f"{path} and {mine[key]} both hold {key.split('.')[0]} weights; give each "
                                      "network once")
                mine[key] = str(path)
            state.update(part)
        origin.update(mine)
    schedule = state.pop("alphas_cumprod", None)
    own = student.state_dict()
    unknown = sorted(set(state) - set(own))
    if unknown:
        raise ConfigError(f"{origin[unknown[0]]}: weights {unknown[0]!r} are not part of the configured model; use "
                          "the model.preset the files were made for")
    for prefix, what in _NEEDS.items():
        if prefix == "cldm.unet." and random_base:
            continue
        if any(k.startswith(prefix) for k in own) and not any(k.startswith(prefix) for k in state):
            raise ConfigError(f"DiffBIR stage 2 needs {what}")
    _check_schedule(student, schedule, origin)
    try:
        student.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # a shape mismatch: files of another size than the preset
        detail = " ".join(str(exc).split())[:200]
        raise ConfigError(f"the stage-2 start files do not fit model.preset ({detail}); use the preset the files "
                          "were made for") from None
    if not any(k.startswith(_CONTROLNET) for k in state):
        student.init_controlnet_from_unet()


def _split(value: str | None) -> list[str]:
    return [p.strip() for p in (value or "").split(",") if p.strip()]


def _files(sources: list[str]) -> list[Path]:
    """Files of the sources: a folder of official files stands for each of them, a run folder for its model."""
    from diffir.io.runs import component_files, resolve_weights

    out: list[Path] = []
    for src in sources:
        p = Path(src).expanduser()
        if not p.exists():
            raise ConfigError(f"{src}: no such file or folder")
        out.extend(component_files(p) if p.is_dir() and component_files(p) else [resolve_weights(p)])
    return out


def _model_keys(path: Path) -> dict[str, torch.Tensor]:
    """The file's tensors under the model's state_dict keys (an SD file also yields its ``alphas_cumprod``)."""
    from diffir.archs.diffbir.arch import to_model_keys
    from diffir.archs.diffbir.cleaners import detect_cleaner
    from diffir.archs.diffbir.ldm import split_sd_state_dict
    from diffir.io.checkpoint import read_checkpoint

    try:
        sd: dict[str, Any] = dict(read_checkpoint(path)[0])
    except CheckpointError as exc:
        raise ConfigError(str(exc)) from None
    if any(k.startswith(_OURS) for k in sd):
        return sd
    if any(k.startswith("model.diffusion_model.") for k in sd):
        extra = split_sd_state_dict(sd).other.get("alphas_cumprod")
        return {**to_model_keys({"sd": sd}), **({"alphas_cumprod": extra} if extra is not None else {})}
    if "zero_convs.0.0.weight" in sd:
        return to_model_keys({"controlnet": sd})
    if detect_cleaner(sd):
        return to_model_keys({"cleaner": sd})
    raise ConfigError(f"{path}: not a Stable Diffusion checkpoint, an IRControlNet, a stage-1 cleaner nor a diffir "
                      "DiffBIR model")


def _check_schedule(student: nn.Module, alphas_cumprod: torch.Tensor | None, origin: dict[str, str]) -> None:
    """v2.1 trains v-prediction on the zero-terminal-SNR SD; v2 eps on the plain one: a mix-up trains garbage."""
    if alphas_cumprod is None or alphas_cumprod.numel() == 0:  # converted files may drop the schedule buffers
        return
    file_zsnr = float(alphas_cumprod.float()[-1]) == 0.0
    if file_zsnr != bool(student.config.zero_snr):
        sd_file = next((v for k, v in origin.items() if k.startswith("cldm.unet.")), "model.base")
        kind = "a zero-terminal-SNR" if file_zsnr else "a plain (non-zero-SNR)"
        raise ConfigError(f"{sd_file} has {kind} schedule but the preset trains zero_snr={student.config.zero_snr}; "
                          "use sd2.1-base-zsnr-laionaes5.ckpt with stage2_v2.1.yaml and v2-1_512-ema-pruned.ckpt "
                          "with stage2_v2.yaml")
