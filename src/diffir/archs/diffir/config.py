"""Typed, validated description of one DiffIR network (S1 or S2, any task).

The same dataclass is built by presets (:mod:`diffir.archs.diffir.presets`), inferred from checkpoint tensor shapes
(:mod:`diffir.io.checkpoint`) and stored as JSON in the safetensors metadata we write.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from diffir.archs import common
from diffir.archs.common import ConfigMixin
from diffir.diffusion.schedule import DEFAULT_LINEAR_END, DEFAULT_LINEAR_START
from diffir.errors import ConfigError

TASKS = ("sr", "deblur", "inpaint")
LAYERNORMS = ("BiasFree", "WithBias")
#: CPEN feature width and IPR size are hard-wired in the official code (IPR = 4 * 64 = 256).
CPEN_FEATS = 64
IPR_DIM = 4 * CPEN_FEATS
#: DiffIR's number of diffusion steps in every official configuration (the paper's T = 4).
DIFFIR_TIMESTEPS = 4


@dataclass(frozen=True)
class DiffIRConfig(ConfigMixin):
    """Hyper-parameters of a DiffIR network.

    ``in_channels`` counts *image* channels (3 for RGB, 4 for inpainting: RGB·(1−mask) ⊕ mask).  For SR the
    DIRformer sees a pixel-unshuffled LR (×2: 4·C, ×1: 16·C channels); that is derived, not configured.
    """

    task: str = "sr"
    stage: int = 2
    scale: int = 4
    in_channels: int = 3
    out_channels: int = 3
    dim: int = 48
    num_blocks: tuple[int, int, int, int] = (4, 6, 6, 8)
    num_refinement_blocks: int = 4
    heads: tuple[int, int, int, int] = (1, 2, 4, 8)
    ffn_expansion_factor: float = 2.66
    bias: bool = False
    layernorm: str = "WithBias"
    dual_pixel: bool = False
    n_encoder_res: int = 6
    n_denoise_res: int = 1
    timesteps: int = DIFFIR_TIMESTEPS
    linear_start: float = DEFAULT_LINEAR_START
    linear_end: float = DEFAULT_LINEAR_END
    # The paper's inference-time ablation variants (Tab. 4), kept in the file because they change what the weights
    # compute: V1 has no diffusion (the CPEN_S2 output is the IPR), V4 adds posterior noise in the reverse steps.
    prior_diffusion: bool = True
    reverse_noise: bool = False
    # Free-form provenance (preset name, source file); never affects the network.
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)

    #: Fields that only the stage-2 network uses (an S1 teacher may differ in them).
    STAGE2_FIELDS: ClassVar[tuple[str, ...]] = ("stage", "n_denoise_res", "timesteps", "linear_start", "linear_end",
                                                "prior_diffusion", "reverse_noise")

    def __post_init__(self) -> None:
        # Types and ranges first (the same checks serve presets, training overrides and checkpoint metadata), so
        # that a damaged value fails here, before a network is built from it.
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        deep, wide = common.MAX_DEPTH, common.MAX_WIDTH
        for name, low, high in (("stage", 1, 2), ("scale", 1, 4), ("in_channels", 1, common.MAX_CHANNELS),
                                ("out_channels", 1, common.MAX_CHANNELS), ("dim", 1, wide // 8),  # level 4: 8·dim
                                ("num_refinement_blocks", 0, deep), ("n_encoder_res", 0, deep),
                                ("n_denoise_res", 0, deep), ("timesteps", 1, common.MAX_TIMESTEPS)):
            put(name, common.checked_int(name, getattr(self, name), low, high))
        put("num_blocks", common.checked_ints("num_blocks", self.num_blocks, 4, 0, deep))
        put("heads", common.checked_ints("heads", self.heads, 4, 1, common.MAX_HEADS))
        put("ffn_expansion_factor",
            common.checked_float("ffn_expansion_factor", self.ffn_expansion_factor, 0.0, common.MAX_FACTOR))
        for name in ("bias", "dual_pixel", "prior_diffusion", "reverse_noise"):
            put(name, common.checked_bool(name, getattr(self, name)))
        common.checked_choice("task", self.task, TASKS)
        common.checked_choice("layernorm", self.layernorm, LAYERNORMS)
        start, end = common.checked_beta_range(self.linear_start, self.linear_end)
        put("linear_start", start)
        put("linear_end", end)
        if self.task == "sr" and self.scale not in (1, 2, 4):
            raise ConfigError(f"DiffIR SR supports scale 1, 2 or 4 (got {self.scale}); the tail is always x4")
        if self.task != "sr" and self.scale != 1:
            raise ConfigError(f"task {self.task!r} has scale 1, got {self.scale}")
        for level, (heads, width) in enumerate(zip(self.heads, self.level_dims, strict=True)):
            if width % heads:
                raise ConfigError(f"level {level + 1}: width {width} is not divisible by {heads} heads")
        if self.dim % 2:
            raise ConfigError(f"dim must be even (Downsample halves it), got {self.dim}")
        if self.ffn_hidden(self.dim) < 1:
            raise ConfigError(f"ffn_expansion_factor {self.ffn_expansion_factor} leaves an empty FFN at width "
                              f"{self.dim}")
        if self.task == "sr" and self.dual_pixel:
            raise ConfigError("dual_pixel exists only for deblur/inpaint DIRformers")

    # ----------------------------------------------------------------------------------------------- derived
    @property
    def level_dims(self) -> tuple[int, int, int, int]:
        return (self.dim, self.dim * 2, self.dim * 4, self.dim * 8)

    @property
    def unshuffle(self) -> int:
        """Pixel-unshuffle factor applied to the LQ before the DIRformer (SR ×2: 2, SR ×1: 4, else 1)."""
        return {4: 1, 2: 2, 1: 4}[self.scale] if self.task == "sr" else 1

    @property
    def embed_channels(self) -> int:
        """Input channels of ``G.patch_embed``."""
        return self.in_channels * self.unshuffle**2

    @property
    def prior_lq_factor(self) -> int:
        """Pixel-unshuffle factor of the LQ part of the CPEN input (SR ×4 sees the LR as is)."""
        return {4: 1, 2: 2, 1: 4}[self.scale] if self.task == "sr" else 4

    @property
    def cpen_s2_channels(self) -> int:
        return self.in_channels * self.prior_lq_factor**2

    @property
    def cpen_s1_channels(self) -> int:
        return self.cpen_s2_channels + self.out_channels * 16

    @property
    def refinement(self) -> bool:
        return self.task != "inpaint"

    @property
    def size_multiple(self) -> int:
        """LQ height/width must be a multiple of this (U-Net needs 8 at level 1; CPEN needs 4 after unshuffle)."""
        return 8 * self.unshuffle

    def ffn_hidden(self, width: int) -> int:
        return int(width * self.ffn_expansion_factor)

    # ------------------------------------------------------------------------------------------ conversion
    def official_kwargs(self) -> dict[str, Any]:
        """Constructor kwargs of the official ``DiffIRS1`` / ``DiffIRS2`` classes for this config."""
        kw: dict[str, Any] = {
            "n_encoder_res": self.n_encoder_res,
            "inp_channels": self.in_channels,
            "out_channels": self.out_channels,
            "dim": self.dim,
            "num_blocks": list(self.num_blocks),
            "num_refinement_blocks": self.num_refinement_blocks,
            "heads": list(self.heads),
            "ffn_expansion_factor": self.ffn_expansion_factor,
            "bias": self.bias,
            "LayerNorm_type": self.layernorm,
        }
        if self.task == "sr":
            kw["scale"] = self.scale
        elif self.task == "inpaint":  # only the inpainting constructor takes it (deblur: our extension)
            kw["dual_pixel_task"] = self.dual_pixel
        if self.stage == 2:
            kw.update(n_denoise_res=self.n_denoise_res, linear_start=self.linear_start,
                      linear_end=self.linear_end, timesteps=self.timesteps)
        return kw

    @classmethod
    def from_official_kwargs(cls, task: str, stage: int, kwargs: dict[str, Any]) -> DiffIRConfig:
        """Build from the kwargs given to the official constructors (unknown kwargs are rejected).

        Omitted kwargs take the official constructor defaults, which differ between the classes (specs §3.1).
        """
        rename = {"inp_channels": "in_channels", "LayerNorm_type": "layernorm", "dual_pixel_task": "dual_pixel"}
        data = {rename.get(k, k): v for k, v in {**official_defaults(task, stage), **kwargs}.items()}
        if task == "sr":
            # The official SR DIRformer overwrites inp_channels from the scale; image channels = out channels.
            data["in_channels"] = data.get("out_channels", 3)
            data.setdefault("scale", 4)
        else:
            data["scale"] = 1
        if data.get("layernorm", "WithBias") != "BiasFree":  # the official code: anything else is WithBias
            data["layernorm"] = "WithBias"
        return cls.from_dict(data, task=task, stage=stage)


def official_defaults(task: str, stage: int) -> dict[str, Any]:
    """Defaults of the official ``DiffIRS1``/``DiffIRS2`` constructors of one task folder (specs §3.1)."""
    kw: dict[str, Any] = dict(
        n_encoder_res=6, inp_channels=3, out_channels=3, dim=48, num_blocks=[4, 6, 6, 8], num_refinement_blocks=4,
        heads=[1, 2, 4, 8], ffn_expansion_factor=2.66, bias=False, LayerNorm_type="WithBias",
    )
    if task == "inpaint" and stage == 1:  # the inpainting S1 class has its own defaults; its S2 class does not
        kw.update(n_encoder_res=5, inp_channels=4, num_blocks=[3, 5, 6, 6], ffn_expansion_factor=2)
    if stage == 2:
        kw.update(n_denoise_res=1, linear_start=DEFAULT_LINEAR_START, linear_end=DEFAULT_LINEAR_END,
                  timesteps=DIFFIR_TIMESTEPS)
    return kw
