"""Typed, validated description of one HI-Diff network (stage 1 or 2, deblurring).

One flat dataclass covers the four official networks: the Transformer ``G``, the latent encoders ``LE``
(stage 1, input [GT, LQ]) / ``LE_DM`` (stage 2, input LQ) — which share one description —, the denoiser ``D``
and the diffusion.  Defaults are the released GoPro configuration (spec §A.4–A.7).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from diffir.archs import common
from diffir.archs.common import ConfigMixin
from diffir.diffusion.schedule import DEFAULT_LINEAR_END, DEFAULT_LINEAR_START
from diffir.errors import ConfigError

LAYERNORMS = ("BiasFree", "WithBias")
ENCODERS = ("gelu", "lrelu")
DENOISERS = ("denoising", "simple_denoise")
#: ``eps``: HI-Diff's own sampler (GoPro, ``apply_ldm: False``); ``ldm``: ``ldm.ddpm.DDPM`` (RealBlur).
DIFFUSION_PATHS = ("eps", "ldm")
#: The official ``simple_denoise`` default ``timesteps=5`` (time divisor 50), never set by the option files.
SIMPLE_DENOISE_TIMESTEPS = 5


@dataclass(frozen=True)
class HIDiffConfig(ConfigMixin):
    """Hyper-parameters of a HI-Diff model (field groups: G, latent encoder, denoiser, diffusion)."""

    task: str = "deblur"
    stage: int = 2
    # --- G (official ``Transformer``)
    in_channels: int = 3
    out_channels: int = 3
    dim: int = 48
    num_blocks: tuple[int, int, int, int] = (3, 5, 6, 6)
    num_refinement_blocks: int = 4
    heads: tuple[int, int, int, int] = (1, 2, 4, 8)
    ffn_expansion_factor: float = 2.66
    bias: bool = False
    layernorm: str = "WithBias"
    dual_pixel: bool = False
    embed_dim: int = 64  # prior tokens are 4·embed_dim wide; G, LE and LE_DM share it
    group: int = 4  # prior tokens: group² (LE pools to group × group)
    # --- LE / LE_DM (official ``latent_encoder_gelu`` / ``latent_encoder_lrelu``)
    encoder: str = "gelu"
    encoder_blocks: int = 6
    encoder_patch_expansion: float = 0.5
    encoder_channel_expansion: float = 4.0
    # --- D: ``denoising`` (inner width, block_num, mixer expansions) or ``simple_denoise`` (res blocks, timesteps)
    denoiser: str = "denoising"
    denoiser_inner_channels: int = 512
    denoiser_block_num: int = 4
    denoiser_patch_expansion: float = 0.5
    denoiser_channel_expansion: float = 2.0
    denoiser_res_blocks: int = 4
    denoiser_timesteps: int = SIMPLE_DENOISE_TIMESTEPS
    # --- diffusion
    timesteps: int = 8
    linear_start: float = DEFAULT_LINEAR_START
    linear_end: float = DEFAULT_LINEAR_END
    diffusion_path: str = "eps"
    # Free-form provenance (preset name, source files, assumed fields); never affects the network.
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)

    KIND = "HI-Diff config"
    #: Fields that only the stage-2 networks use (an S1 teacher may differ in them).
    STAGE2_FIELDS: ClassVar[tuple[str, ...]] = (
        "stage", "denoiser", "denoiser_inner_channels", "denoiser_block_num", "denoiser_patch_expansion",
        "denoiser_channel_expansion", "denoiser_res_blocks", "denoiser_timesteps", "timesteps", "linear_start",
        "linear_end", "diffusion_path",
    )

    def __post_init__(self) -> None:
        self._check_types()
        self._validate()

    def _check_types(self) -> None:
        """Types and ranges of every field, before the relations between them (and before any network is built
        from them): presets, training overrides and checkpoint metadata all pass here."""
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        deep, wide = common.MAX_DEPTH, common.MAX_WIDTH
        for name, low, high in (("stage", 1, 2), ("in_channels", 1, common.MAX_CHANNELS),
                                ("out_channels", 1, common.MAX_CHANNELS), ("dim", 1, wide // 8),
                                ("num_refinement_blocks", 0, deep), ("embed_dim", 1, wide), ("group", 1, 64),
                                ("encoder_blocks", 0, deep), ("denoiser_inner_channels", 1, wide),
                                ("denoiser_block_num", 0, deep), ("denoiser_res_blocks", 0, deep),
                                ("denoiser_timesteps", 1, common.MAX_TIMESTEPS),
                                ("timesteps", 1, common.MAX_TIMESTEPS)):
            put(name, common.checked_int(name, getattr(self, name), low, high))
        put("num_blocks", common.checked_ints("num_blocks", self.num_blocks, 4, 0, common.MAX_DEPTH))
        put("heads", common.checked_ints("heads", self.heads, 4, 1, common.MAX_HEADS))
        for name in ("ffn_expansion_factor", "encoder_patch_expansion", "encoder_channel_expansion",
                     "denoiser_patch_expansion", "denoiser_channel_expansion"):
            put(name, common.checked_float(name, getattr(self, name), 0.0, common.MAX_FACTOR))
        for name in ("bias", "dual_pixel"):
            put(name, common.checked_bool(name, getattr(self, name)))
        for name, choices in (("layernorm", LAYERNORMS), ("encoder", ENCODERS),
                              ("denoiser", DENOISERS), ("diffusion_path", DIFFUSION_PATHS)):
            common.checked_choice(name, getattr(self, name), choices)
        start, end = common.checked_beta_range(self.linear_start, self.linear_end)
        put("linear_start", start)
        put("linear_end", end)

    def _validate(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(message)

        need(self.task == "deblur", f"HI-Diff is a deblurring model: task must be 'deblur', got {self.task!r}")
        need(self.stage in (1, 2), f"stage must be 1 or 2, got {self.stage!r}")
        need(self.in_channels == 3, "HI-Diff's latent encoders take RGB (official assert in_chans == 6 // stage): "
             f"in_channels must be 3, got {self.in_channels}")
        need(self.out_channels == self.in_channels or self.dual_pixel,
             f"out_channels ({self.out_channels}) must equal in_channels (the output adds the input image)")
        need(len(self.num_blocks) == 4 and len(self.heads) == 4, "num_blocks and heads need 4 entries (levels 1-4)")
        need(min(self.num_blocks) >= 0 and self.num_refinement_blocks >= 0, "block counts must be >= 0")
        need(self.layernorm in LAYERNORMS, f"layernorm must be one of {LAYERNORMS}, got {self.layernorm!r}")
        need(self.dim >= 2 and self.dim % 2 == 0, f"dim must be even (Downsample halves it), got {self.dim}")
        for level, (heads, width) in enumerate(zip(self.heads, self.level_dims, strict=True)):
            need(heads >= 1 and width % heads == 0,
                 f"level {level + 1}: width {width} is not divisible by {heads} heads")
        need(2 * self.dim % self.heads[0] == 0, f"decoder level 1 width {2 * self.dim} is not divisible by "
             f"{self.heads[0]} heads")
        need(self.ffn_expansion_factor > 0 and self.ffn_hidden(self.dim) >= 1, "ffn_expansion_factor is too small")
        need(self.group >= 4 and self.group % 2 == 0,
             f"group must be even and >= 4 (levels 2/3 use group//2 >= 2 HIM tokens), got {self.group}")
        need(self.embed_dim >= 1, f"embed_dim must be >= 1, got {self.embed_dim}")
        need(self.encoder in ENCODERS, f"encoder must be one of {ENCODERS}, got {self.encoder!r}")
        need(self.encoder_blocks >= 0, f"encoder_blocks must be >= 0, got {self.encoder_blocks}")
        need(int(self.encoder_patch_expansion * self.num_tokens) >= 1
             and int(self.encoder_channel_expansion * self.encoder_width) >= 1,
             "encoder MLP-Mixer expansions leave an empty hidden layer")
        need(self.denoiser in DENOISERS, f"denoiser must be one of {DENOISERS}, got {self.denoiser!r}")
        need(self.denoiser_block_num >= 2, f"denoiser_block_num must be >= 2 (block_num-2 mixer stages), "
             f"got {self.denoiser_block_num}")
        need(self.denoiser_inner_channels >= 1, "denoiser_inner_channels must be >= 1")
        need(int(self.denoiser_patch_expansion * self.num_tokens) >= 1
             and int(self.denoiser_channel_expansion * self.denoiser_inner_channels) >= 1,
             "denoiser MLP-Mixer expansions leave an empty hidden layer")
        need(self.denoiser_res_blocks >= 0, "denoiser_res_blocks must be >= 0")
        need(self.denoiser_timesteps >= 1, "denoiser_timesteps must be >= 1")
        need(self.timesteps >= 1, f"timesteps must be >= 1, got {self.timesteps}")
        need(0 < self.linear_start < 1 and 0 < self.linear_end < 1,
             f"beta range must lie in (0, 1), got {self.linear_start}..{self.linear_end}")
        need(self.diffusion_path in DIFFUSION_PATHS, f"diffusion_path must be one of {DIFFUSION_PATHS}, "
             f"got {self.diffusion_path!r}")

    # ----------------------------------------------------------------------------------------------- derived
    @property
    def scale(self) -> int:
        return 1

    @property
    def size_multiple(self) -> int:
        """H and W must be multiples of 8 (three downsamplings; the latent encoder needs 4)."""
        return 8

    @property
    def num_tokens(self) -> int:
        """N = group² prior tokens."""
        return self.group**2

    @property
    def token_width(self) -> int:
        """C' = 4·embed_dim, the width of a prior token."""
        return 4 * self.embed_dim

    @property
    def level_dims(self) -> tuple[int, int, int, int]:
        return (self.dim, self.dim * 2, self.dim * 4, self.dim * 8)

    @property
    def encoder_width(self) -> int:
        """Width of the latent encoder's pooled features (MLP-Mixer width): gelu embed_dim, lrelu 4·embed_dim."""
        return self.embed_dim if self.encoder == "gelu" else 4 * self.embed_dim

    @property
    def schedule(self) -> str:
        """β formula of the path (both are called "linear" upstream: pitfall A.11.1)."""
        return "linear" if self.diffusion_path == "eps" else "sqrt_linear"

    def ffn_hidden(self, width: int) -> int:
        return int(width * self.ffn_expansion_factor)
