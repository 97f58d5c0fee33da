"""Named DiffBIR configurations (``diffir list``): the released pipelines, and a tiny one for tests and CI.

The released presets build full-size networks with random weights (1.7 G parameters); to restore with them, load
the released files instead (``diffir restore -m SD.ckpt,CONTROLNET.pth,CLEANER.pth``, see docs/diffbir.md).
"""

from __future__ import annotations

from diffir.archs.diffbir.config import DiffBIRConfig

#: configs/inference/swinir.yaml (general_swinir_v1, face_swinir_v1, realesrgan_s4_swinir_100k)
SWINIR = {"img_size": 64, "patch_size": 1, "in_chans": 3, "embed_dim": 180, "depths": [6] * 8,
          "num_heads": [6] * 8, "window_size": 8, "mlp_ratio": 2.0, "sf": 8, "img_range": 1.0,
          "upsampler": "nearest+conv", "resi_connection": "1conv", "unshuffle": True, "unshuffle_scale": 8}
#: BSRNet.pth (KAIR) and scunet_color_real_psnr.pth
BSRNET = {"in_nc": 3, "out_nc": 3, "nf": 64, "nb": 23, "gc": 32, "sf": 4}
SCUNET = {"in_nc": 3, "config": [4] * 7, "dim": 64}
#: configs/inference/cldm.yaml: SD 2.1-base UNet, IRControlNet, VAE, OpenCLIP ViT-H text tower
UNET = {"model_channels": 320, "channel_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attention_resolutions": [4, 2, 1],
        "num_head_channels": 64, "context_dim": 1024}
CONTROLNET = {**UNET, "hint_channels": 4}
VAE = {"embed_dim": 4, "z_channels": 4, "ch": 128, "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2}
TEXT = {"context_length": 77, "vocab_size": 49408, "width": 1024, "heads": 16, "layers": 24}

_STAGE2 = {"unet": UNET, "controlnet": CONTROLNET, "vae": VAE, "text": TEXT}

#: A tiny pipeline for tests and CI: a 2-level UNet with SD's head width (64, so its official files load without a
#: hint), the parity case's VAE, a text tower as wide as the UNet's context (the tokenizer's full vocabulary), a
#: small SwinIR.
TINY_UNET = {"model_channels": 64, "channel_mult": [1, 2], "num_res_blocks": 1, "attention_resolutions": [2, 1],
             "num_head_channels": 64, "context_dim": 64}
TINY = {
    "cleaner": "swinir",
    "cleaner_config": {**SWINIR, "img_size": 8, "embed_dim": 16, "depths": [2, 2], "num_heads": [2, 2],
                       "window_size": 4},
    "unet": TINY_UNET,
    "controlnet": {**TINY_UNET, "hint_channels": 4},
    "vae": {"embed_dim": 4, "z_channels": 4, "ch": 32, "ch_mult": [1, 1, 2, 2], "num_res_blocks": 1},
    "text": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2},
    "min_size": 64,
}


def _preset(description: str, **fields) -> tuple[DiffBIRConfig, str]:
    return DiffBIRConfig(**fields, meta={"preset": True}), description


PRESETS: dict[str, tuple[DiffBIRConfig, str]] = {
    "diffbir_v2.1_sr_s2": _preset(
        "DiffBIR v2.1: SwinIR cleaner (Real-ESRGAN degradations) + IRControlNet on SD 2.1-base with zero terminal "
        "SNR, v-prediction (blind SR x4)",
        cleaner="swinir", cleaner_config=SWINIR, **_STAGE2, parameterization="v", zero_snr=True),
    "diffbir_v2_sr_s2": _preset(
        "DiffBIR v2: BSRNet cleaner + IRControlNet on SD 2.1-base, eps-prediction (blind SR x4)",
        cleaner="bsrnet", cleaner_config=BSRNET, **_STAGE2, parameterization="eps", zero_snr=False),
    "diffbir_v2_denoise_s2": _preset(
        "DiffBIR v2: SCUNet cleaner + IRControlNet on SD 2.1-base, eps-prediction (blind denoising)",
        task="denoise", cleaner="scunet", cleaner_config=SCUNET, **_STAGE2, parameterization="eps",
        zero_snr=False, upscale=1),
    "diffbir_v1_sr_s2": _preset(
        "DiffBIR v1: SwinIR cleaner + IRControlNet on SD 2.1-base, eps-prediction (blind SR x4)",
        cleaner="swinir", cleaner_config=SWINIR, **_STAGE2, parameterization="eps", zero_snr=False),
    "diffbir_swinir_s1": _preset(
        "DiffBIR stage 1: the SwinIR cleaner alone (trained with the sum of squared errors)",
        stage=1, cleaner="swinir", cleaner_config=SWINIR, upscale=1),
    "diffbir_tiny_s2": _preset(
        "a tiny random DiffBIR pipeline (tests, CI, trying the options in seconds)", **TINY,
        parameterization="eps", zero_snr=False),
    "diffbir_tiny_s1": _preset(
        "the tiny pipeline's SwinIR cleaner alone (stage-1 training in tests and CI)",
        stage=1, cleaner="swinir", cleaner_config=TINY["cleaner_config"], upscale=1, min_size=64),
}

