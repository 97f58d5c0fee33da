"""Typed training configuration (one YAML per run), validated with pydantic v2.

Every section forbids unknown keys; a misspelled key becomes a one-line :class:`~diffir.errors.ConfigError` with
a did-you-mean suggestion.  The network itself is *not* described here: ``model.preset`` names a preset of
:mod:`diffir.registry` and ``model.overrides`` changes its fields, so there is a single model config system.

Strings may reference environment variables shell-style: ``${DIFFIR_DATA:-../shared/data}/train/T91``
(``${VAR}`` or ``${VAR:-default}``).  Relative data paths are resolved against the working directory.
Reading and validating a file is :mod:`diffir.train.loading`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from diffir.install import pip_extra

try:
    from pydantic import (
        AfterValidator,
        BaseModel,
        ConfigDict,
        Field,
        PrivateAttr,
        field_validator,
        model_validator,
    )
except ModuleNotFoundError as _exc:  # the [train] extra is not installed
    raise ModuleNotFoundError(f"diffir.train needs the training extras ({_exc.name} is missing): "
                              + pip_extra("train"), name=_exc.name) from None


class Section(BaseModel):
    # NaN/inf are refused everywhere: a NaN learning rate or weight silently trains garbage.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


#: Upper bound of counts (iterations, intervals, milestones).  Larger values are typos: 10**23 iterations would
#: never end.  They are refused up front instead of running (or overflowing) for days.
MAX_COUNT = 10**9
#: Images per process and step.  The recipes use 4-64 per GPU; the activations of a batch beyond this at their
#: patch sizes need far more memory than a GPU or a CPU host has.  Larger effective batches: train.accum_steps.
MAX_BATCH = 1024
Count = Annotated[int, Field(gt=0, le=MAX_COUNT)]
Seed = Annotated[int, Field(ge=0, lt=2**63)]  # torch seeds with at most 64 bits; sample_seed mixes in 63
Weight = Annotated[float, Field(ge=0)]


def _check_batch(v: int) -> int:
    if v > MAX_BATCH:
        raise ValueError(f"{v} is more than {MAX_BATCH} images per process: such a batch does not fit in memory "
                         "(the recipes use 4-64); use train.accum_steps for a larger effective batch")
    return v


Batch = Annotated[int, Field(gt=0), AfterValidator(_check_batch)]


# ------------------------------------------------------------------------------------------------- model
class ModelSection(Section):
    preset: str = Field(description="a name from `diffir list`, e.g. diffir_sr_x4_s1")
    overrides: dict[str, Any] = Field(
        default_factory=dict, description="fields of the preset's config (DiffIRConfig, HIDiffConfig), e.g. dim: 8")
    from_s1: str | None = Field(None, description="S1 checkpoint: teacher CPEN_S1 (S2) and DIRformer init")
    from_s2: str | None = Field(None, description="S2 checkpoint to start the GAN stage from")
    init: str | None = Field(None, description="start from these weights (fine-tuning): a run folder, model file "
                             "or bundled name of the same stage and config; loaded after --from-s1/--from-s2")
    base: str | None = Field(None, description="DiffBIR stage 2: the Stable Diffusion 2.1-base checkpoint (frozen "
                             "UNet, VAE, text tower); the stage-1 cleaner comes with --from-s1")


# -------------------------------------------------------------------------------------------------- data
class DegradationSection(Section):
    name: str = Field(description="bicubic_x4 | realesrgan_x4 | diffbir | motion_blur | ... (diffir.data)")
    options: dict[str, Any] = Field(default_factory=dict)


class DatasetSection(Section):
    kind: Literal["paired", "folder", "inpaint", "diffbir"] = "paired"
    gt_dir: str = Field(description="HQ images (folder; kind diffbir: also an official file list, one path a line)")
    lq_dir: str | None = None
    filename_tmpl: str = Field("{}", description="LQ file stem for GT stem s, e.g. '{}x4' (paired)")
    patch_size: int | None = Field(64, gt=0, description="GT patch size; null = whole images (validation)")
    augment: bool | Literal["hflip"] = Field(True, description="8 flip/rot90 combos; 'hflip' only; false none")
    repeat: Count = 1
    degradation: DegradationSection | None = None
    mask: dict[str, Any] = Field(default_factory=dict, description="LamaMaskGenerator options (inpaint)")
    crop_type: Literal["center", "random", "none"] = Field(
        "center", description="kind diffbir: how an HQ image becomes patch_size² (official CodeformerDataset: "
        "center = box-halve, resize the short side, centre crop; none = images already that size)")
    max_images: Count | None = Field(None, description="use only the first N images (validation)")
    skip_images: int = Field(0, ge=0, le=MAX_COUNT, description="leave out the first N images, sorted by path "
                             "(kinds folder, inpaint): hold them out for validation (max_images N) and evaluation "
                             "(diffir eval --limit N)")
    num_workers: int = Field(0, ge=0, le=256, description="data loader worker processes (0: load in the "
                             "training process)")
    pool_size: int = Field(0, ge=0, le=4096, description="Real-ESRGAN training-pair pool (queue_size; "
                           "RealSR: 180) per process; 0 = off.  Must be a multiple of train.batch_size")

    @field_validator("filename_tmpl")
    @classmethod
    def _template(cls, v: str) -> str:
        try:
            v.format("stem")
        except (IndexError, KeyError, ValueError):
            raise ValueError(f"{v!r} must contain one '{{}}' for the GT file stem, e.g. '{{}}x4'") from None
        return v

    @model_validator(mode="after")
    def _check(self) -> DatasetSection:
        if self.skip_images and self.kind not in ("folder", "inpaint"):
            raise ValueError(f"skip_images works for kinds folder and inpaint, not {self.kind!r}")
        if self.kind == "paired" and not self.lq_dir:
            raise ValueError("kind 'paired' needs lq_dir")
        if self.kind == "diffbir" and self.patch_size is None and self.crop_type != "none":
            raise ValueError(f"kind 'diffbir' with crop_type {self.crop_type!r} needs a patch_size (the official "
                             "out_size, e.g. 512); whole images need crop_type none")
        return self

    # How to fix each folder field when it is wrong (set by parse_config from the unexpanded YAML text).
    _path_hints: dict[str, str] = PrivateAttr(default_factory=dict)

    def path_hint(self, field: str) -> str:
        """The fix for a wrong ``gt_dir`` / ``lq_dir``: the environment variable it came from and the config key."""
        return self._path_hints.get(field) or f"check {field} in the config"


class ProgressiveSection(Section):
    """Restormer-style progressive patch/batch schedule (deblur): stage j lasts iters[j] iterations."""

    iters: list[Count]
    batch_sizes: list[Batch]
    patch_sizes: list[Annotated[int, Field(gt=0)]]

    @model_validator(mode="after")
    def _same_length(self) -> ProgressiveSection:
        if not (len(self.iters) == len(self.batch_sizes) == len(self.patch_sizes)) or not self.iters:
            raise ValueError("progressive iters, batch_sizes and patch_sizes need the same non-zero length")
        return self


class DataSection(Section):
    train: DatasetSection
    val: DatasetSection | None = None


# ----------------------------------------------------------------------------------------------- optimise
class ScheduleSection(Section):
    """LR as a pure function of the iteration (so resuming needs no scheduler state beyond the iteration).

    ``multistep``: base·gamma^(number of milestones passed).  ``cyclic_cosine``: BasicSR
    CosineAnnealingRestartCyclicLR (periods, restart_weights, eta_mins).  ``constant``.
    """

    type: Literal["constant", "multistep", "cyclic_cosine"] = "constant"
    milestones: list[Count] = Field(default_factory=list)
    gamma: float = Field(0.5, gt=0)
    periods: list[Count] = Field(default_factory=list)
    restart_weights: list[Weight] = Field(default_factory=list)
    eta_mins: list[Weight] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> ScheduleSection:
        if self.type == "cyclic_cosine":
            n = len(self.periods)
            if n == 0 or len(self.restart_weights) != n or len(self.eta_mins) != n:
                raise ValueError("cyclic_cosine needs periods, restart_weights and eta_mins of the same length")
        return self


class OptimizerSection(Section):
    type: Literal["adam", "adamw"] = "adam"
    lr: float = Field(2e-4, gt=0, description="learning rate (> 0)")
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = (0.9, 0.99)
    weight_decay: Weight = 0.0
    schedule: ScheduleSection = Field(default_factory=ScheduleSection)


class OptimSection(Section):
    g: OptimizerSection = Field(default_factory=OptimizerSection, description="the restoration network")
    e: OptimizerSection | None = Field(
        None, description="S2 warm-up optimiser (CPEN_S2 + denoiser) used while iter <= train.encoder_iters"
    )
    d: OptimizerSection = Field(
        default_factory=lambda: OptimizerSection(lr=1e-4), description="the discriminator"
    )


# ------------------------------------------------------------------------------------------------- losses
class KDSection(Section):
    type: Literal["l1", "l2", "kl"] = Field("l1", description="which IPR loss trains (paper Tab. 5)")
    weight: Weight = 1.0
    temperature: float = Field(0.15, gt=0)


class PerceptualSection(Section):
    weight: Weight = 0.0
    vgg_weights: str | None = Field(None, description="VGG19 weights file (torchvision layout, .pth/.safetensors), "
                                    "or 'random': a seeded random-weight VGG19 (no file needed)")
    layer_weights: dict[str, Weight] = Field(
        default_factory=lambda: {"conv1_2": 0.1, "conv2_2": 0.1, "conv3_4": 1.0, "conv4_4": 1.0, "conv5_4": 1.0}
    )
    imagenet_norm: bool = True


class GANSection(Section):
    """``vanilla`` (BCE, SR stages) or ``nonsaturating`` (LaMa inpainting: R1 + mask-as-fake target)."""

    type: Literal["vanilla", "nonsaturating"] = "vanilla"
    weight: Weight = 0.0
    r1_weight: Weight = 0.001
    mask_as_fake: bool = True
    feature_matching: Weight = 0.0
    regenerate_for_d: bool = Field(False, description="re-run the generator for the D step (LaMa/PL does)")


class ResNetPLSection(Section):
    weight: Weight = 0.0
    weights: str | None = Field(None, description="ade20k resnet50dilated encoder weights (user file)")


class LossSection(Section):
    pixel: Weight = Field(1.0, description="L1(output, GT) weight (SR, deblur)")
    usm_targets: bool = Field(
        False, description="RealSR V2: L1/perceptual targets and the teacher's GT are USM(GT); D sees plain GT "
        "(needs a degradation returning gt_usm, e.g. realesrgan with gt_usm: true)")
    masked_l1_known: Weight = Field(10.0, description="inpainting: L1 weight on known pixels")
    masked_l1_missing: Weight = Field(0.0, description="inpainting: L1 weight on hole pixels")
    kd: KDSection = Field(default_factory=KDSection)
    perceptual: PerceptualSection = Field(default_factory=PerceptualSection)
    gan: GANSection = Field(default_factory=GANSection)
    resnet_pl: ResNetPLSection = Field(default_factory=ResNetPLSection)


class DiscriminatorSection(Section):
    type: Literal["unet_sn", "nlayer"] = "unet_sn"
    num_feat: int = Field(64, gt=0, le=4096)
    n_layers: int = Field(4, gt=0, le=16)
    skip_connection: bool = True


class DiffusionSection(Section):
    """The paper's ablation switches (Tab. 4): V1 enabled=false, V2 traditional, V3 joint (default), V4 noise."""

    optimization: Literal["joint", "traditional"] = "joint"
    enabled: bool = True
    reverse_noise: bool = False
    timesteps: int | None = Field(None, gt=0, le=10_000, description="T; shorthand for model.overrides.timesteps")
    noise_aug: int = Field(0, ge=0, le=10_000, description="DiffBIR stage 2: noise the condition latent to "
                           "t ~ U{0..noise_aug-1} before the ControlNet sees it (v2.1: 200; 0 = off)")


# -------------------------------------------------------------------------------------------------- loop
class TrainSection(Section):
    iters: Count
    batch_size: Batch = Field(4, description="per process (per GPU), as in BasicSR")
    accum_steps: int = Field(1, gt=0, le=MAX_BATCH)
    progressive: ProgressiveSection | None = None
    encoder_iters: int = Field(0, ge=0, le=MAX_COUNT,
                               description="S2: diffusion-only warm-up iterations (optim.e, KD only)")
    ema_decay: float = Field(0.999, ge=0.0, lt=1.0, description="0 disables EMA")
    grad_clip: float | None = Field(None, description="max gradient norm (> 0); null or 0 = no clipping")
    amp: Literal["none", "bf16", "fp16"] = "none"
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N | mps")
    cpu_threads: int | None = Field(
        None, ge=1, le=4096, description="torch intra-op threads (None: torch's default); 1 avoids OpenMP "
        "thrashing on a CPU shared with other jobs")
    seed: Seed = 0

    @field_validator("grad_clip")
    @classmethod
    def _clip(cls, v: float | None) -> float | None:
        if v is not None and v < 0:  # clip_grad_norm_ with a negative norm flips the gradient: training ascends
            raise ValueError(f"{v} is negative; use a positive max gradient norm, or null for no clipping")
        return v


class ValSection(Section):
    every: int = Field(0, ge=0, le=MAX_COUNT, description="0 = no validation")
    crop_border: int = Field(0, ge=0, le=10_000)
    y_channel: bool = False
    metric: Literal["psnr", "ssim"] = "psnr"
    steps: int = Field(50, gt=0, le=1000, description="generative models (DiffBIR stage 2): spaced-sampler steps "
                       "of each validation image (the official image logs: 50)")
    seed: Seed = 0


class LogSection(Section):
    every: Count = 10
    tensorboard: bool = True
    images: bool = Field(True, description="image grids in TensorBoard at validation")
    progress: bool = True


class CheckpointSection(Section):
    every: Count = 1000
    keep: int = Field(3, ge=1, le=MAX_COUNT, description="training checkpoints kept on disk (best is kept separately)")


class GuardSection(Section):
    """NaN / loss-spike guard: roll back to the last good checkpoint instead of training on garbage."""

    enabled: bool = True
    spike_factor: float = Field(20.0, gt=1, description="a loss above factor × median of the window is a spike")
    window: int = Field(50, ge=1, le=1_000_000, description="losses kept for the spike median")
    max_rollbacks: int = Field(5, ge=0, le=MAX_COUNT)
    lr_factor: float = Field(1.0, gt=0, le=1, description="multiply every LR by this after each rollback")


class TrainConfig(Section):
    name: str = Field("diffir", description="the run's name; the default run folder is runs/<name>")
    stage: Literal["s1", "s2", "gan"]
    model: ModelSection
    data: DataSection
    train: TrainSection
    optim: OptimSection = Field(default_factory=OptimSection)
    losses: LossSection = Field(default_factory=LossSection)
    discriminator: DiscriminatorSection | None = None
    diffusion: DiffusionSection = Field(default_factory=DiffusionSection)
    val: ValSection = Field(default_factory=ValSection)
    log: LogSection = Field(default_factory=LogSection)
    checkpoint: CheckpointSection = Field(default_factory=CheckpointSection)
    guard: GuardSection = Field(default_factory=GuardSection)

    # "<config file>: <key>" (or "--set <key>") for errors found after loading (set by parse_config)
    _origin: tuple[str, list[str]] = PrivateAttr(default=("config", []))

    def where(self, key: str) -> str:
        return where(key, *self._origin)

    @field_validator("name")
    @classmethod
    def _folder_name(cls, v: str) -> str:
        if not _RUN_NAME.match(v) or v in (".", ".."):  # runs/<name> must stay inside runs/
            raise ValueError(f"{v!r} is not usable as a run folder name (runs/<name>); use letters, digits, "
                             "'.', '_', '-' and '+'")
        return v

    @field_validator("stage")
    @classmethod
    def _lower(cls, v: str) -> str:
        return v.lower()

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        wants = 1 if self.stage == "s1" else 2
        if not self.model.preset.endswith(f"_s{wants}"):
            raise ValueError(f"stage {self.stage!r} trains a stage-{wants} network; use a *_s{wants} preset")
        if self.stage == "gan" and self.discriminator is None:
            raise ValueError("stage 'gan' needs a discriminator section")
        if self.train.encoder_iters and self.optim.e is None:
            raise ValueError("train.encoder_iters > 0 needs optim.e (the warm-up optimiser)")
        if self.diffusion.noise_aug and self.stage != "s2":
            raise ValueError("diffusion.noise_aug is for stage s2 (it noises DiffBIR's condition latent)")
        if self.data.train.pool_size % self.train.batch_size:
            raise ValueError(f"data.train.pool_size {self.data.train.pool_size} must be a multiple of "
                             f"train.batch_size {self.train.batch_size}")
        return self

    # ---------------------------------------------------------------------------------------- helpers
    def model_overrides(self) -> dict[str, Any]:
        over = dict(self.model.overrides)
        if self.diffusion.timesteps is not None:
            over["timesteps"] = self.diffusion.timesteps
        return over

    @property
    def adversarial(self) -> bool:
        return self.discriminator is not None and self.losses.gan.weight > 0


# Run folder names: runs/<name> must stay inside runs/.
_RUN_NAME = re.compile(r"^[A-Za-z0-9._+-]{1,200}$")


def where(key: str, source: str = "config", set_keys: list[str] | None = None) -> str:
    """``<config file>: <key>``, or ``--set <key>`` when the value came from the command line."""
    for k in set_keys or []:
        if key == k or key.startswith(k + ".") or k.startswith(key + "."):
            return f"--set {k}"
    return f"{source}: {key}"
