"""diffusers key names → the SD (LDM) checkpoint's: UNet, VAE and the text encoder (OpenCLIP's fused attention).

The correspondence is the one of diffusers' ``convert_diffusers_to_original_stable_diffusion.py``, derived from the
keys present (any number of levels and blocks); why the text tower gets one extra, all-zero block is in
:mod:`diffir.archs.diffbir.diffusers_layout`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import torch

from diffir.errors import CheckpointError

StateDict = dict[str, torch.Tensor]


# ------------------------------------------------------------------------------------------------ key maps
def _indices(sd: Mapping[str, Any], pattern: str) -> list[int]:
    regex = re.compile(pattern)
    return sorted({int(m.group(1)) for k in sd if (m := regex.match(k))})


def _convert(sd: Mapping[str, torch.Tensor], rules: list[tuple[str, str]], source: str, what: str,
             reshape: Callable[[str, torch.Tensor], torch.Tensor] | None = None) -> StateDict:
    """Apply the first matching ``(diffusers prefix, SD prefix)`` rule to every key (longest prefixes first);
    an exact-key rule has no trailing dot.  A key no rule maps is an error naming it."""
    ordered = sorted(rules, key=lambda r: len(r[0]), reverse=True)
    out: StateDict = {}
    for key, tensor in sd.items():
        for old, new in ordered:
            if key == old or (old.endswith(".") and key.startswith(old)):
                mapped = new + key[len(old):]
                out[mapped] = reshape(mapped, tensor) if reshape else tensor
                break
        else:
            raise CheckpointError(f"{source}: key '{key}' has no Stable Diffusion 2.x counterpart: not an SD 2.x "
                                  f"{what} (SDXL, SD 1.x and other variants are not supported)")
    return out


_RESNET = (("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("time_emb_proj", "emb_layers.1"),
           ("norm2", "out_layers.0"), ("conv2", "out_layers.3"), ("conv_shortcut", "skip_connection"))


def unet_rules(sd: Mapping[str, torch.Tensor]) -> list[tuple[str, str]]:
    """(diffusers prefix, LDM prefix) pairs of a diffusers ``UNet2DConditionModel``'s keys."""
    rules = [("time_embedding.linear_1.", "time_embed.0."), ("time_embedding.linear_2.", "time_embed.2."),
             ("conv_in.", "input_blocks.0.0."), ("conv_norm_out.", "out.0."), ("conv_out.", "out.2.")]

    def resnet(old: str, new: str) -> None:
        rules.extend((f"{old}{a}.", f"{new}{b}.") for a, b in _RESNET)

    levels = _indices(sd, r"down_blocks\.(\d+)\.")
    n = len(_indices(sd, r"down_blocks\.0\.resnets\.(\d+)\."))
    for i in levels:
        for j in _indices(sd, rf"down_blocks\.{i}\.resnets\.(\d+)\."):
            resnet(f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{1 + i * (n + 1) + j}.0.")
        for j in _indices(sd, rf"down_blocks\.{i}\.attentions\.(\d+)\."):
            rules.append((f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{1 + i * (n + 1) + j}.1."))
        rules.append((f"down_blocks.{i}.downsamplers.0.conv.", f"input_blocks.{(i + 1) * (n + 1)}.0.op."))
    resnet("mid_block.resnets.0.", "middle_block.0.")
    rules.append(("mid_block.attentions.0.", "middle_block.1."))
    resnet("mid_block.resnets.1.", "middle_block.2.")
    for i in _indices(sd, r"up_blocks\.(\d+)\."):
        attention = _indices(sd, rf"up_blocks\.{i}\.attentions\.(\d+)\.")
        for j in _indices(sd, rf"up_blocks\.{i}\.resnets\.(\d+)\."):
            resnet(f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{i * (n + 1) + j}.0.")
        for j in attention:
            rules.append((f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{i * (n + 1) + j}.1."))
        rules.append((f"up_blocks.{i}.upsamplers.0.conv.",
                      f"output_blocks.{i * (n + 1) + n}.{2 if attention else 1}.conv."))
    return rules


def unet_to_ldm(sd: Mapping[str, torch.Tensor], source: str = "unet") -> StateDict:
    """A diffusers SD 2.x UNet's state_dict → the LDM ``UNetModel`` keys (no prefix).  The transformer blocks'
    inner names (``proj_in``, ``transformer_blocks.k.attn1.to_q`` ...) are the same in both layouts."""
    levels = _indices(sd, r"down_blocks\.(\d+)\.")
    counts = {len(_indices(sd, rf"down_blocks\.{i}\.resnets\.(\d+)\.")) for i in levels}
    if not levels or len(counts) != 1:
        raise CheckpointError(f"{source}: not a diffusers UNet2DConditionModel with the same number of res blocks "
                              f"per level (down_blocks: {len(levels)}, res blocks per level: {sorted(counts)})")
    return _convert(sd, unet_rules(sd), source, "UNet")


_VAE_ATTN = (("group_norm", "norm"), ("to_q", "q"), ("query", "q"), ("to_k", "k"), ("key", "k"), ("to_v", "v"),
             ("value", "v"), ("to_out.0", "proj_out"), ("proj_attn", "proj_out"))


def vae_rules(sd: Mapping[str, torch.Tensor]) -> list[tuple[str, str]]:
    """(diffusers prefix, LDM prefix) pairs of a diffusers ``AutoencoderKL``'s keys."""
    rules = [("quant_conv.", "quant_conv."), ("post_quant_conv.", "post_quant_conv.")]

    def block(old: str, new: str) -> None:
        rules.extend((f"{old}{a}.", f"{new}{a}.") for a in ("norm1", "conv1", "norm2", "conv2"))
        rules.append((f"{old}conv_shortcut.", f"{new}nin_shortcut."))

    def attention(old: str, new: str) -> None:
        rules.extend((f"{old}{a}.", f"{new}{b}.") for a, b in _VAE_ATTN)

    for part, blocks, resample in (("encoder", "down_blocks", "downsample"), ("decoder", "up_blocks", "upsample")):
        rules += [(f"{part}.conv_in.", f"{part}.conv_in."), (f"{part}.conv_norm_out.", f"{part}.norm_out."),
                  (f"{part}.conv_out.", f"{part}.conv_out.")]
        block(f"{part}.mid_block.resnets.0.", f"{part}.mid.block_1.")
        attention(f"{part}.mid_block.attentions.0.", f"{part}.mid.attn_1.")
        block(f"{part}.mid_block.resnets.1.", f"{part}.mid.block_2.")
        levels = _indices(sd, rf"{part}\.{blocks}\.(\d+)\.")
        for i in levels:
            level = i if part == "encoder" else len(levels) - 1 - i  # the decoder's up_blocks run deepest first
            name = "down" if part == "encoder" else "up"
            for j in _indices(sd, rf"{part}\.{blocks}\.{i}\.resnets\.(\d+)\."):
                block(f"{part}.{blocks}.{i}.resnets.{j}.", f"{part}.{name}.{level}.block.{j}.")
            for j in _indices(sd, rf"{part}\.{blocks}\.{i}\.attentions\.(\d+)\."):
                attention(f"{part}.{blocks}.{i}.attentions.{j}.", f"{part}.{name}.{level}.attn.{j}.")
            rules.append((f"{part}.{blocks}.{i}.{resample}rs.0.conv.", f"{part}.{name}.{level}.{resample}.conv."))
    return rules


def _vae_reshape(key: str, tensor: torch.Tensor) -> torch.Tensor:
    """diffusers' attention projections are Linear (C, C) (1×1 convs in old diffusers); the LDM's are 1×1 convs."""
    if re.search(r"\.(mid\.attn_1|attn\.\d+)\.(q|k|v|proj_out)\.weight$", key) and tensor.ndim == 2:
        return tensor.reshape(*tensor.shape, 1, 1)
    return tensor


def vae_to_ldm(sd: Mapping[str, torch.Tensor], source: str = "vae") -> StateDict:
    """A diffusers ``AutoencoderKL`` state_dict → the LDM ``AutoencoderKL`` keys (no prefix)."""
    if "encoder.conv_in.weight" not in sd:
        raise CheckpointError(f"{source}: no encoder.conv_in.weight: not a diffusers AutoencoderKL")
    return _convert(sd, vae_rules(sd), source, "VAE", _vae_reshape)


_TEXT = (("layer_norm1.", "ln_1."), ("layer_norm2.", "ln_2."), ("mlp.fc1.", "mlp.c_fc."), ("mlp.fc2.", "mlp.c_proj."),
         ("self_attn.out_proj.", "attn.out_proj."))
#: Hugging Face CLIP keys with no OpenCLIP counterpart (buffers): dropped.
_TEXT_IGNORED = ("text_model.embeddings.position_ids",)


def text_to_openclip(sd: Mapping[str, torch.Tensor], source: str = "text_encoder") -> StateDict:
    """A Hugging Face ``CLIPTextModel`` (or ``...WithProjection``) state_dict → OpenCLIP text keys (``model.*``
    without ``cond_stage_model.``), q/k/v fused into ``in_proj``, plus one identity block and placeholders for
    ``text_projection``/``logit_scale`` (see the module docstring)."""
    if "embeddings.token_embedding.weight" in sd:  # transformers 5 saves CLIPTextModel without text_model.
        sd = {k if k.startswith("text_projection.") else f"text_model.{k}": v for k, v in sd.items()}
    sd = {k: v for k, v in sd.items() if k not in _TEXT_IGNORED}
    if "text_model.embeddings.token_embedding.weight" not in sd:
        raise CheckpointError(f"{source}: no text_model.embeddings.token_embedding.weight: not a Hugging Face "
                              "CLIPTextModel")
    layers = _indices(sd, r"text_model\.encoder\.layers\.(\d+)\.")
    if layers != list(range(len(layers))) or not layers:
        raise CheckpointError(f"{source}: text encoder layers {layers[:5]}... are not numbered 0..n-1")
    out: StateDict = {}
    consumed: set[str] = set()

    def take(key: str) -> torch.Tensor:
        if key not in sd:
            raise CheckpointError(f"{source}: missing key '{key}' (truncated or not a CLIPTextModel)")
        consumed.add(key)
        return sd[key]

    out["model.positional_embedding"] = take("text_model.embeddings.position_embedding.weight")
    width = out["model.positional_embedding"].shape[1]
    if "text_projection.weight" in sd:
        out["model.text_projection"] = take("text_projection.weight").t().contiguous()
    else:  # placeholder: DiffBIR uses neither the projection nor the pooled output
        out["model.text_projection"] = torch.zeros(width, width, dtype=out["model.positional_embedding"].dtype)
    out["model.logit_scale"] = torch.tensor(math.log(1 / 0.07))
    for i in layers:
        old, new = f"text_model.encoder.layers.{i}.", f"model.transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[f"{new}attn.in_proj_{kind}"] = torch.cat([take(f"{old}self_attn.{p}_proj.{kind}") for p in "qkv"])
            for a, b in _TEXT:
                out[f"{new}{b}{kind}"] = take(f"{old}{a}{kind}")
    # The identity block: all zeros (see the module docstring), shaped like the others.
    last = f"model.transformer.resblocks.{layers[-1]}."
    identity = f"model.transformer.resblocks.{len(layers)}."
    for key in [k for k in out if k.startswith(last)]:
        out[identity + key[len(last):]] = torch.zeros_like(out[key])
    out["model.token_embedding.weight"] = take("text_model.embeddings.token_embedding.weight")
    for kind in ("weight", "bias"):
        out[f"model.ln_final.{kind}"] = take(f"text_model.final_layer_norm.{kind}")
    left = [k for k in sd if k not in consumed]
    if left:
        raise CheckpointError(f"{source}: key '{left[0]}' has no OpenCLIP text-tower counterpart ({len(left)} such "
                              "keys): not the CLIP text encoder of SD 2.x")
    return out
