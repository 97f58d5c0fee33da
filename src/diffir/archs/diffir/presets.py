"""Named presets for every configuration of the official DiffIR code: ``diffir_<task>_<variant>_s1|s2``.

Used through :mod:`diffir.registry` (``list_models``, ``create_model``).
"""

from __future__ import annotations

from typing import Any

from diffir.archs.diffir.config import DiffIRConfig

# specs §3.2: the network hyper-parameters of every official YAML.
_SR = dict(task="sr", dim=64, num_blocks=(13, 1, 1, 1), num_refinement_blocks=13, ffn_expansion_factor=2.2,
           layernorm="BiasFree", n_encoder_res=9)
_DEBLUR = dict(task="deblur", scale=1, dim=48, num_blocks=(3, 5, 6, 6), num_refinement_blocks=4,
               ffn_expansion_factor=2.0, layernorm="WithBias", n_encoder_res=5)
_INPAINT = dict(task="inpaint", scale=1, in_channels=4, dim=52, num_blocks=(1, 1, 1, 9), num_refinement_blocks=0,
                ffn_expansion_factor=1.8, layernorm="WithBias", n_encoder_res=5)
_INPAINT_BIG = {**_INPAINT, "num_blocks": (1, 1, 1, 20), "n_encoder_res": 8}

#: base name -> (network kwargs, description)
_BASES: dict[str, tuple[dict[str, Any], str]] = {
    "diffir_sr_x4": ({**_SR, "scale": 4}, "bicubic ×4 SR (DiffIR-SRGAN, DF2K)"),
    "diffir_sr_x2": ({**_SR, "scale": 2}, "bicubic ×2 SR (DiffIR-SRGAN, DF2K)"),
    "diffir_realsr_x4": ({**_SR, "scale": 4}, "real-world ×4 SR (DiffIR-RealSR, Real-ESRGAN degradations)"),
    "diffir_realsr_x2": ({**_SR, "scale": 2}, "real-world ×2 SR (DiffIR-RealSR)"),
    "diffir_realsr_x1": ({**_SR, "scale": 1}, "real-world ×1 restoration (DiffIR-RealSR)"),
    "diffir_deblur": (_DEBLUR, "motion deblurring (DiffIR-demotionblur, GoPro)"),
    "diffir_inpaint_celeba": (_INPAINT, "inpainting, CelebA-HQ 256 (DiffIR-inpainting)"),
    "diffir_inpaint_places": (_INPAINT, "inpainting, Places2 (DiffIR-inpainting)"),
    "diffir_inpaint_places_big": (_INPAINT_BIG, "inpainting, Places2 big model (DiffIR-inpainting)"),
}

PRESETS: dict[str, tuple[DiffIRConfig, str]] = {}
for _base, (_kw, _desc) in _BASES.items():
    for _stage in (1, 2):
        _name = f"{_base}_s{_stage}"
        PRESETS[_name] = (DiffIRConfig(stage=_stage, meta={"preset": _name}, **_kw), _desc)
