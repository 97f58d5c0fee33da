"""Stable Diffusion 2.x saved as a diffusers folder → the SD (LDM) checkpoint layout that DiffBIR loads.

A diffusers folder (``model_index.json`` + ``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``)
becomes one state_dict with the keys of ``v2-1_512-ema-pruned.ckpt``: ``model.diffusion_model.*`` (UNet),
``first_stage_model.*`` (VAE), ``cond_stage_model.model.*`` (OpenCLIP text tower) and ``alphas_cumprod`` (the
schedule, from ``scheduler/scheduler_config.json``), so :mod:`diffir.archs.diffbir.arch` reads it like the
``.ckpt``: configs from the tensors, the parameterization from the schedule.  The key correspondence is the one
of diffusers' ``convert_diffusers_to_original_stable_diffusion.py``, derived here from the keys present (any
number of levels and blocks) rather than hard-coded for four levels.

Three things do not map one to one:

* **Text tower depth.**  SD 2.x conditions on OpenCLIP's *penultimate* block (``ln_final`` applied to the output
  of block 23 of 24).  diffusers exports that tower as a Hugging Face ``CLIPTextModel`` with the unused last block
  removed (23 layers) and its pipelines take ``last_hidden_state`` (``final_layer_norm`` after the last kept
  layer): the same tensor.  Our tower runs all blocks but the last one, so one *identity* block is appended: a
  residual block whose every weight is zero adds zero to the residual stream (LayerNorm with zero weight and bias
  outputs 0, and both sub-layers' output projections are zero).  Our "penultimate" output then equals the
  folder's ``last_hidden_state``, which for SD 2.x's 23-layer export is exactly OpenCLIP's penultimate-layer
  output; "last" gives the same tensor (the true 24th block is not in the folder).
* **text_projection / logit_scale.**  A ``CLIPTextModel`` has neither (a ``CLIPTextModelWithProjection``'s
  ``text_projection.weight`` is used, transposed, when present).  DiffBIR never uses them (no pooled embedding),
  so placeholders fill them: a zero ``(width, width)`` projection and CLIP's initial ``log(1/0.07)``.  A
  checkpoint written back with ``save_model(official=True)`` keeps those placeholders.
* **Hints the tensors do not hold.**  The UNet's head width (``unet/config.json``: heads per level, misnamed
  ``attention_head_dim`` there) and the text tower's heads (``num_attention_heads``) are read from the configs and
  checked against what DiffBIR infers by default (64-wide heads, SD 2.x); another value gives a warning naming the
  hint to pass (``num_head_channels=`` / ``text_heads=``).

The tokenizer is not read from ``tokenizer/``: SD 2.x's is the OpenAI CLIP BPE that DiffBIR ships (with ``!``,
id 0, as padding, as OpenCLIP pads).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from diffir.archs.diffbir.diffusers_keys import text_to_openclip, unet_to_ldm, vae_to_ldm
from diffir.archs.diffbir.ldm import TEXT_PREFIX, UNET_PREFIX, VAE_PREFIX
from diffir.errors import CheckpointError

StateDict = dict[str, torch.Tensor]

#: SD 2.x's head width, the default of :func:`diffir.archs.diffbir.arch.infer_config` (``num_head_channels``).
DEFAULT_HEAD_WIDTH = 64
#: Weight files of a component, in order of preference (the fp16 variant only when no full-precision file).
_WEIGHT_STEMS = {
    "unet": ("diffusion_pytorch_model",),
    "vae": ("diffusion_pytorch_model",),
    "text_encoder": ("model", "pytorch_model"),
}
_SUFFIXES = (".safetensors", ".bin", ".fp16.safetensors", ".fp16.bin")


# -------------------------------------------------------------------------------------------------- reading
def is_diffusers_folder(path: str | Path) -> bool:
    """A diffusers pipeline folder: ``model_index.json`` next to a ``unet/`` folder."""
    p = Path(path)
    return p.is_dir() and (p / "model_index.json").is_file() and (p / "unet").is_dir()


def read_diffusers_folder(folder: str | Path, read: Callable[[Path], StateDict]) -> StateDict:
    """The SD-layout state_dict of a diffusers Stable Diffusion 2.x folder (see the module docstring); ``read``
    reads one weights file (the loader's reader: safetensors, or a pickle without executing code)."""
    folder = Path(folder)
    sd: StateDict = {}
    unet_config = _config(folder / "unet" / "config.json")
    _check_unet_config(unet_config, folder)
    sd.update(_prefixed(unet_to_ldm(_weights(folder, "unet", read), f"{folder}/unet"), UNET_PREFIX))
    vae_config = _config(folder / "vae" / "config.json")
    _check_vae_config(vae_config, folder)
    sd.update(_prefixed(vae_to_ldm(_weights(folder, "vae", read), f"{folder}/vae"), VAE_PREFIX))
    text_config = _config(folder / "text_encoder" / "config.json")
    _check_text_config(text_config, folder)
    text = text_to_openclip(_weights(folder, "text_encoder", read), f"{folder}/text_encoder")
    sd.update(_prefixed(text, TEXT_PREFIX))
    sd.update(schedule_buffers(_config(folder / "scheduler" / "scheduler_config.json"), f"{folder}/scheduler"))
    return sd


def _config(path: Path) -> dict[str, Any]:
    """A component's JSON config, {} when absent."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable diffusers config ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: a diffusers config is a JSON object, found {type(data).__name__}")
    return data


def _weights(folder: Path, component: str, read: Callable[[Path], StateDict]) -> StateDict:
    """The tensors of ``folder/component``: one weights file, or the shards listed by its ``.index.json``."""
    sub = folder / component
    for stem in _WEIGHT_STEMS[component]:
        for suffix in _SUFFIXES:
            if (sub / f"{stem}{suffix}").is_file():
                return read(sub / f"{stem}{suffix}")
            index = sub / f"{stem}{suffix}.index.json"
            if index.is_file():
                shards = sorted(set(_config(index).get("weight_map", {}).values()))
                if not shards:
                    raise CheckpointError(f"{index}: lists no weight files")
                sd: StateDict = {}
                for shard in shards:
                    sd.update(read(sub / shard))
                return sd
    names = ", ".join(f"{s}{x}" for s in _WEIGHT_STEMS[component] for x in _SUFFIXES[:2])
    raise CheckpointError(f"{sub}: no weights ({names}) in this diffusers folder; a Stable Diffusion 2.x folder "
                          "has unet/, vae/ and text_encoder/ weights (download it again, without a file filter)")


def _prefixed(sd: StateDict, prefix: str) -> StateDict:
    return {prefix + k: v for k, v in sd.items()}


# ------------------------------------------------------------------------------------------------- configs
def _heads(value: Any, levels: int) -> list[int]:
    return [int(h) for h in value] if isinstance(value, (list, tuple)) else [int(value)] * levels


def _check_unet_config(cfg: Mapping[str, Any], folder: Path) -> None:
    """What the UNet's tensors do not show: head widths and the timestep embedding's convention."""
    if not cfg:
        return
    where = f"{folder}/unet/config.json"
    unsupported = {
        "flip_sin_to_cos": (True, "the [cos, sin] timestep embedding of SD"),
        "freq_shift": (0, "SD's timestep frequencies"),
        "time_embedding_type": ("positional", "SD's sinusoidal timestep embedding"),
        "resnet_time_scale_shift": ("default", "SD's additive timestep injection"),
        "class_embed_type": (None, "no class conditioning"),
        "addition_embed_type": (None, "no added conditioning (SDXL)"),
        "encoder_hid_dim": (None, "no context projection"),
        "only_cross_attention": (False, "self- then cross-attention"),
        "dual_cross_attention": (False, "one cross-attention"),
    }
    for key, (expected, what) in unsupported.items():
        value = cfg.get(key, expected)
        if isinstance(value, list) and all(v == expected for v in value):  # per-level flags
            value = expected
        if value != expected:
            raise CheckpointError(f"{where}: {key}={value!r} is not supported (DiffBIR's SD 2.x UNet has {what})")
    widths = [int(w) for w in cfg.get("block_out_channels", [])]
    heads = cfg.get("num_attention_heads") or cfg.get("attention_head_dim")
    if not widths or heads is None:
        return
    head_widths = {w // h for w, h in zip(widths, _heads(heads, len(widths)), strict=False) if h}
    if len(head_widths) != 1:
        raise CheckpointError(f"{where}: the attention heads are {sorted(head_widths)} wide at different levels "
                              "(an SD 1.x-style UNet); DiffBIR supports SD 2.x UNets, whose heads have one width")
    width = head_widths.pop()
    if width != DEFAULT_HEAD_WIDTH:
        warnings.warn(f"{where}: the UNet's attention heads are {width} wide (SD 2.x: {DEFAULT_HEAD_WIDTH}), which "
                      f"no tensor shows; load with the hint num_head_channels={width}", stacklevel=3)


def _check_vae_config(cfg: Mapping[str, Any], folder: Path) -> None:
    if not cfg:
        return
    where = f"{folder}/vae/config.json"
    for key in ("use_quant_conv", "use_post_quant_conv", "mid_block_add_attention"):
        if cfg.get(key, True) is not True:
            raise CheckpointError(f"{where}: {key}=false is not supported (the SD VAE has it)")
    scale = cfg.get("scaling_factor", 0.18215)
    if not math.isclose(float(scale), 0.18215, rel_tol=1e-6) or cfg.get("shift_factor") not in (None, 0, 0.0):
        raise CheckpointError(f"{where}: latent scaling_factor={scale}, shift_factor={cfg.get('shift_factor')}: "
                              "DiffBIR runs SD 2.x's VAE (scale 0.18215, no shift)")


def _check_text_config(cfg: Mapping[str, Any], folder: Path) -> None:
    if not cfg:
        return
    where = f"{folder}/text_encoder/config.json"
    act = cfg.get("hidden_act", "gelu")
    if act != "gelu":
        raise CheckpointError(f"{where}: hidden_act={act!r}; DiffBIR's text tower is OpenCLIP ViT-H/14 (exact GELU), "
                              "as in SD 2.x (SD 1.x's quick_gelu CLIP is not supported)")
    eps = float(cfg.get("layer_norm_eps", 1e-5))
    if not math.isclose(eps, 1e-5):
        raise CheckpointError(f"{where}: layer_norm_eps={eps} (OpenCLIP uses 1e-5)")
    width, heads = cfg.get("hidden_size"), cfg.get("num_attention_heads")
    if width and heads and int(width) // int(heads) != DEFAULT_HEAD_WIDTH:
        warnings.warn(f"{where}: the text tower has {heads} heads ({int(width) // int(heads)} wide; DiffBIR assumes "
                      f"{DEFAULT_HEAD_WIDTH}-wide heads), which no tensor shows; load with the hint text_heads={heads}",
                      stacklevel=3)


def schedule_buffers(cfg: Mapping[str, Any], where: str = "scheduler") -> StateDict:
    """``alphas_cumprod`` of a diffusers scheduler config, the buffer an LDM checkpoint stores and from which
    DiffBIR reads the parameterization (ᾱ_T = 0: zero terminal SNR, v-prediction); {} without a config.

    DiffBIR runs two schedules of SD 2.1-base (β from 0.00085 to 0.012, "scaled_linear", 1000 steps): eps
    prediction (v1, v2), and v-prediction with zero terminal SNR (v2.1); other combinations are refused.
    """
    if not cfg:
        return {}
    from diffir.archs.diffbir.schedule import enforce_zero_terminal_snr, linear_betas

    prediction = cfg.get("prediction_type", "epsilon")
    zero_snr = bool(cfg.get("rescale_betas_zero_snr", False))
    schedule = (cfg.get("beta_schedule", "linear"), float(cfg.get("beta_start", 0.0001)),
                float(cfg.get("beta_end", 0.02)), int(cfg.get("num_train_timesteps", 1000)))
    if (schedule[0] != "scaled_linear" or not math.isclose(schedule[1], 0.00085) or not math.isclose(schedule[2], 0.012)
            or schedule[3] != 1000 or cfg.get("trained_betas") is not None):
        raise CheckpointError(f"{where}: beta_schedule={schedule[0]!r}, beta_start={schedule[1]}, beta_end="
                              f"{schedule[2]}, num_train_timesteps={schedule[3]}: not SD 2.1-base's schedule "
                              "(scaled_linear, 0.00085 to 0.012, 1000 steps), the one DiffBIR samples with")
    if prediction not in ("epsilon", "v_prediction"):
        raise CheckpointError(f"{where}: prediction_type={prediction!r}; DiffBIR runs epsilon or v_prediction models")
    if (prediction == "v_prediction") != zero_snr:
        detail = ("v_prediction without rescale_betas_zero_snr (e.g. SD 2.1-768)" if not zero_snr else
                  "epsilon with rescale_betas_zero_snr (an eps model has no x0 at the last step)")
        raise CheckpointError(f"{where}: {detail} is not supported: DiffBIR runs SD 2.1-base with eps, or v-prediction "
                              "with zero terminal SNR (sd2.1-base-zsnr-laionaes5, DiffBIR v2.1); if this folder is "
                              "that model, set \"rescale_betas_zero_snr\": true in scheduler_config.json")
    betas = linear_betas(schedule[3], schedule[1], schedule[2])
    if zero_snr:
        betas = enforce_zero_terminal_snr(betas)
    alphas_cumprod = torch.from_numpy(1.0 - betas).cumprod(0).float()
    return {"alphas_cumprod": alphas_cumprod}
