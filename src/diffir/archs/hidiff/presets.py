"""Named presets for the released HI-Diff configurations: ``hidiff_<dataset>_s1|s2`` (spec §A.4-A.7)."""

from __future__ import annotations

from typing import Any

from diffir.archs.hidiff.config import HIDiffConfig

# GoPro is the HIDiffConfig default; RealBlur-J and -R share one architecture.
_GOPRO: dict[str, Any] = {}
_REALBLUR: dict[str, Any] = dict(
    ffn_expansion_factor=2.0, encoder="lrelu", encoder_blocks=5, denoiser="simple_denoise", denoiser_res_blocks=4,
    timesteps=16, diffusion_path="ldm",
)

#: base name -> (config kwargs, description)
_BASES: dict[str, tuple[dict[str, Any], str]] = {
    "hidiff_gopro": (_GOPRO, "motion deblurring, GoPro (gelu encoders, `denoising` ε-net, T 8, linear β)"),
    "hidiff_realblur_j": (_REALBLUR, "real-world deblurring, RealBlur-J (lrelu encoders, `simple_denoise`, T 16, LDM)"),
    "hidiff_realblur_r": (_REALBLUR, "real-world deblurring, RealBlur-R (lrelu encoders, `simple_denoise`, T 16, LDM)"),
}

PRESETS: dict[str, tuple[HIDiffConfig, str]] = {}
for _base, (_kw, _desc) in _BASES.items():
    for _stage in (1, 2):
        _name = f"{_base}_s{_stage}"
        PRESETS[_name] = (HIDiffConfig(stage=_stage, meta={"preset": _name}, **_kw), _desc)
