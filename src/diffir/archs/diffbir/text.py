"""The OpenCLIP ViT-H/14 text tower that DiffBIR (like SD 2.1) uses to turn prompts into cross-attention context.

``FrozenOpenCLIPEmbedder`` with ``layer="penultimate"``: token + positional embeddings, the residual attention
blocks with a causal mask **except the last one**, then ``ln_final`` (the ``text_projection`` and the EOT pooling of
CLIP are not used).  State-dict keys are the official ones without the checkpoint's ``cond_stage_model.`` prefix
(``model.positional_embedding``, ``model.transformer.resblocks.0.attn.in_proj_weight``, …), in the official order,
so the 294 keys of the released tower load strictly.

Checkpoints: the released SD/DiffBIR files hold the text tower only (the visual tower is deleted), and so does the
tiny parity file.  A full OpenCLIP checkpoint would also carry ``model.visual.*``: :func:`text_state_dict` keeps
the text keys and drops those.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from diffir.errors import CheckpointError, ConfigError

CHECKPOINT_PREFIX = "cond_stage_model."
LAYERS = ("last", "penultimate")
_FLOAT8 = tuple(getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2") if hasattr(torch, n))


@dataclass(frozen=True)
class TextConfig:
    """The released ViT-H text tower by default (spec B.3); ``layer`` picks the output of the last or the
    penultimate block."""

    context_length: int = 77
    vocab_size: int = 49408
    width: int = 1024
    heads: int = 16
    layers: int = 24
    embed_dim: int = 1024
    mlp_ratio: float = 4.0
    layer: str = "penultimate"

    def __post_init__(self) -> None:
        if self.layer not in LAYERS:
            raise ConfigError(f"text layer must be one of {', '.join(LAYERS)}, got {self.layer!r}")
        if self.width % self.heads:
            raise ConfigError(f"text width {self.width} is not divisible by {self.heads} heads")


class ResidualAttentionBlock(nn.Module):
    """Pre-LayerNorm block: x + attn(ln_1(x)), then x + mlp(ln_2(x)); exact GELU (OpenCLIP ViT-H, not QuickGELU)."""

    def __init__(self, width: int, heads: int, mlp_width: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict(
            c_fc=nn.Linear(width, mlp_width), gelu=nn.GELU(), c_proj=nn.Linear(mlp_width, width)))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.ln_2(x))


class _Transformer(nn.Module):
    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        mlp_width = int(cfg.width * cfg.mlp_ratio)
        blocks = (ResidualAttentionBlock(cfg.width, cfg.heads, mlp_width) for _ in range(cfg.layers))
        self.resblocks = nn.ModuleList(blocks)


class _OpenCLIPText(nn.Module):
    """Registration order reproduces the official key order: own parameters, then transformer, token_embedding,
    ln_final."""

    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.empty(cfg.context_length, cfg.width))
        self.text_projection = nn.Parameter(torch.empty(cfg.width, cfg.embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.transformer = _Transformer(cfg)
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.ln_final = nn.LayerNorm(cfg.width)


class TextEncoder(nn.Module):
    """``encode(tokens)``: (B, n ≤ context_length) int64 ids → (B, n, width) context."""

    def __init__(self, config: TextConfig | None = None) -> None:
        super().__init__()
        self.config = config or TextConfig()
        self.model = _OpenCLIPText(self.config)
        nn.init.normal_(self.model.positional_embedding, std=0.01)
        nn.init.normal_(self.model.text_projection, std=self.config.width ** -0.5)

    @property
    def blocks_run(self) -> int:
        """Blocks evaluated: all of them for "last", all but the final one for "penultimate"."""
        return self.config.layers - (1 if self.config.layer == "penultimate" else 0)

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        n = tokens.shape[-1]
        if n > self.config.context_length:
            raise ConfigError(f"{n} tokens exceed the text context length {self.config.context_length}")
        m = self.model
        x = m.token_embedding(tokens) + m.positional_embedding[:n]
        # −inf above the diagonal: token i attends to tokens ≤ i only.  Made per call rather than kept as OpenCLIP's
        # non-persistent buffer, which a meta-device build followed by to_empty() would leave uninitialised.
        mask = torch.full((n, n), float("-inf"), device=x.device, dtype=x.dtype).triu_(1)
        for block in m.transformer.resblocks[: self.blocks_run]:
            x = block(x, mask)
        return m.ln_final(x)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.encode(tokens)

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, torch.Tensor], heads: int | None = None,
                        layer: str = "penultimate") -> TextEncoder:
        """Build with :func:`infer_text_config` and load the text keys strictly (float8 parameters cast to float32)."""
        text = text_state_dict(sd)
        enc = cls(infer_text_config(text, heads=heads, layer=layer))
        result = enc.load_state_dict(text, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise CheckpointError(f"text tower keys do not match: missing {result.missing_keys[:3]}, "
                                  f"unexpected {result.unexpected_keys[:3]}")
        return enc


def text_state_dict(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The text tower's ``model.*`` entries of a bare or SD-prefixed (``cond_stage_model.``) state_dict, float8
    cast to float32; ``model.visual.*`` (a full OpenCLIP checkpoint) is dropped."""
    if any(k.startswith(CHECKPOINT_PREFIX) for k in sd):
        sd = {k[len(CHECKPOINT_PREFIX):]: v for k, v in sd.items() if k.startswith(CHECKPOINT_PREFIX)}
    out = {k: v.float() if v.dtype in _FLOAT8 else v for k, v in sd.items()
           if k.startswith("model.") and not k.startswith("model.visual.") and k != "model.attn_mask"}
    if "model.positional_embedding" not in out:
        raise CheckpointError("no OpenCLIP text tower in this state_dict (no model.positional_embedding key)")
    return out


def infer_text_config(sd: Mapping[str, torch.Tensor], heads: int | None = None,
                      layer: str = "penultimate") -> TextConfig:
    """The tower's shapes from its tensors; heads are not in the shapes: ``width // 64`` (ViT-H's head width) unless
    given."""
    sd = text_state_dict(sd)
    context_length, width = sd["model.positional_embedding"].shape
    blocks = {int(m.group(1)) for k in sd if (m := re.match(r"model\.transformer\.resblocks\.(\d+)\.", k))}
    if heads is None:
        if width % 64:
            raise ConfigError(f"text width {width} is not a multiple of 64: pass the number of heads")
        heads = width // 64
    return TextConfig(
        context_length=int(context_length), vocab_size=int(sd["model.token_embedding.weight"].shape[0]),
        width=int(width), heads=int(heads), layers=len(blocks), embed_dim=int(sd["model.text_projection"].shape[1]),
        mlp_ratio=sd["model.transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / width, layer=layer,
    )
