"""The DiffBIR pipeline as one module: cleaner → condition latent → IRControlNet-guided latent diffusion → VAE
decoder → wavelet colour fix (spec §B.1).

``generate(lq, options, generator)`` is what :class:`~diffir.pipelines.restorer.Restorer` calls for a generative
model (its descriptor says so).  Every random draw comes from the one CPU generator, in the official order
(start point, noise augmentation, one draw per step, guidance samples), so a seed gives the same image on
every device.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from diffir.archs.base import ModelDescriptor
from diffir.archs.diffbir.cleaners import CLEANERS
from diffir.archs.diffbir.colorfix import wavelet_reconstruction
from diffir.archs.diffbir.config import DiffBIRConfig
from diffir.archs.diffbir.guidance import make_guidance
from diffir.archs.diffbir.ldm import ControlLDM
from diffir.archs.diffbir.samplers import initial_latent, make_sampler, noise_augment
from diffir.archs.diffbir.schedule import Diffusion
from diffir.archs.diffbir.text import TextEncoder
from diffir.archs.diffbir.tiled import cleaner_multiple, tiled_cleaner, tiled_denoiser, tiled_vae
from diffir.archs.generation import GenerationOptions
from diffir.errors import DiffIRError
from diffir.nn.padding import pad_to_multiple

#: (pass name, done, total) — the Restorer's progress callback
Report = Callable[[str, int, int], None]
#: Official padding of the stage-1 output: to 64 pixels untiled (8 latent pixels, the UNet's 3 down-samplings),
#: to 8 when the VAE or the diffusion is tiled (each tile is then a multiple of 64 on its own).
PAD_UNTILED, PAD_TILED = 64, 8


class DiffBIR(nn.Module):
    """``cleaner`` (stage 1), ``cldm`` (UNet + IRControlNet + VAE), ``text`` (OpenCLIP text tower), ``diffusion``
    (schedule buffers, not saved).  A stage-1 model holds only the cleaner."""

    architecture = "diffbir"

    def __init__(self, config: DiffBIRConfig) -> None:
        super().__init__()
        self.config = config
        parts = config.components()
        self.cleaner = CLEANERS[config.cleaner][1](parts["cleaner"]) if "cleaner" in parts else None
        if config.stage == 2:
            self.cldm = ControlLDM(parts["unet"], parts["controlnet"], parts["vae"], config.latent_scale)
            self.text = TextEncoder(parts["text"])
            self.diffusion = Diffusion(config.timesteps, config.linear_start, config.linear_end,
                                       config.parameterization, config.zero_snr)
        self._tokenizer: Any = None

    @property
    def descriptor(self) -> ModelDescriptor:
        c = self.config
        return ModelDescriptor(
            architecture=self.architecture, task=c.task, stage=c.stage, scale=c.upscale, in_channels=3,
            out_channels=3, size_multiple=1, prior_shape=(), exact_tiled_condition=False,
            attention_statistics=False, generative=c.stage == 2)

    # ---------------------------------------------------------------------------------------------- stages
    def clean(self, image: torch.Tensor, tile: int = 0) -> torch.Tensor:
        """Stage 1 on an image in [0, 1] already at the cleaner's input size; output in [0, 1]."""
        if self.cleaner is None:
            return image
        if tile:
            out = tiled_cleaner(self.cleaner, image, tile, self.cleaner_scale)
        else:  # SwinIR's token grid must split into windows: reflect-pad, then crop the output back
            out = self.cleaner(pad_to_multiple(image, cleaner_multiple(self.cleaner)))
        return out[..., : image.shape[-2] * self.cleaner_scale, : image.shape[-1] * self.cleaner_scale].clamp(0, 1)

    @property
    def cleaner_scale(self) -> int:
        return self.config.upscale if self.config.cleaner == "bsrnet" else 1

    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """(B, 77, width) penultimate-layer features of the prompts (an empty prompt is encoded too)."""
        if self._tokenizer is None:
            from diffir.archs.diffbir.tokenizer import CLIPTokenizer

            self._tokenizer = CLIPTokenizer.load()
        width, context = self.text.config.width, self.cldm.unet.config.context_dim
        if width != context:
            raise DiffIRError(f"the text tower is {width} wide but the UNet reads a {context}-wide context: the SD "
                              "checkpoint's text tower does not belong to its UNet")
        tokens = self._tokenizer(prompts, self.text.config.context_length)
        return self.text.encode(tokens.to(next(self.text.parameters()).device))

    @torch.no_grad()
    def generate(self, lq: torch.Tensor, options: GenerationOptions | None = None,
                 generator: torch.Generator | None = None, report: Report | None = None,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(1, 3, H, W) image in [0, 1] → (1, 3, H·upscale, W·upscale) restored image in [0, 1]."""
        o = options or GenerationOptions()
        c = self.config
        height, width = lq.shape[-2:]
        size = (height * c.upscale, width * c.upscale)
        x = _resize(lq, size) if c.pre_resize and c.upscale != 1 else lq
        cond = self.clean(x, o.cleaner_tile)
        short = min(cond.shape[-2:])
        if short < c.min_size:  # official: the cleaner's output is brought to >= 512 on its short side
            factor = c.min_size / short
            cond = _resize(cond, (round(cond.shape[-2] * factor), round(cond.shape[-1] * factor)))
        sample = self.sample(cond, o, generator, report, dtype)
        image = (sample + 1) / 2
        if o.color_fix:
            image = wavelet_reconstruction(image, cond)
        return _resize(image, size).clamp(0, 1)

    def sample(self, cond_img: torch.Tensor, o: GenerationOptions, generator: torch.Generator | None = None,
               report: Report | None = None, dtype: torch.dtype = torch.float32,
               contexts: tuple[torch.Tensor, torch.Tensor] | None = None,
               trace: dict[str, Any] | None = None) -> torch.Tensor:
        """Official ``Pipeline.apply_cldm``: the decoded sample in about [−1, 1], at ``cond_img``'s size.

        ``contexts``: (positive, negative) text features instead of encoding ``o.prompt``/``o.negative_prompt``.
        ``trace``: filled with the condition latent, the start point, the noised hint and every sampler step."""
        height, width = cond_img.shape[-2:]
        multiple = PAD_TILED if (o.latent_tile or o.vae_tile) else PAD_UNTILED
        padded = F.pad(cond_img, (0, -width % multiple, 0, -height % multiple))  # zeros: −1 in VAE space
        encode = self.cldm.vae_encode
        if o.vae_tile:
            encode = tiled_vae(self.cldm.vae_encode, self.cldm.vae, o.vae_tile, "encoder")
        c_img = encode(padded * 2 - 1)
        c_txt, u_txt = contexts if contexts is not None else (self.encode_text([o.prompt]),
                                                             self.encode_text([o.negative_prompt]))
        x_T, start_noise = initial_latent(self.diffusion, c_img, o.start_point, generator)
        hint, hint_noise = noise_augment(self.diffusion, c_img, o.noise_aug, generator)
        scales = [float(o.strength)] * (len(self.cldm.controlnet.zero_convs) + 1)
        denoiser = _denoiser(self.cldm, scales, dtype)
        if o.latent_tile:
            denoiser = tiled_denoiser(denoiser, o.latent_tile // 8)
        guidance, decode_fn, encode_fn = None, None, None
        if o.guidance.enabled:
            g = o.guidance
            guidance = make_guidance(g.loss, g.scale, g.start, g.stop, g.space, g.repeat)
            guidance.load_target(padded * 2 - 1)  # the zero padding pulls towards −1, as officially
            decode_fn = self.cldm.vae_decode
            encode_fn = lambda image, source: self.cldm.vae_encode(image, sample=True, generator=source)  # noqa: E731
        sampler = make_sampler(o.sampler, self.diffusion, o.rescale_cfg, guidance, decode_fn, encode_fn)
        steps: list[Any] = []  # the sampler's per-step records (a few latents each: small)
        if trace is not None:
            trace.update(c_img=c_img, x_T=x_T, start_noise=start_noise, hint=hint, hint_noise=hint_noise, steps=steps)

        def step_done(step: Any) -> None:
            steps.append(step)
            if report is not None:
                report("steps", len(steps), len(sampler.timesteps))

        z = sampler.sample(denoiser, x_T, o.steps, {"c_txt": c_txt, "c_img": hint}, {"c_txt": u_txt, "c_img": hint},
                           o.cfg_scale, noise_source=generator, callback=step_done)
        decode = tiled_vae(self.cldm.vae_decode, self.cldm.vae, o.vae_tile, "decoder") if o.vae_tile else \
            self.cldm.vae_decode
        return decode(z)[..., :height, :width]

    # ----------------------------------------------------------------------------------------------- training
    # The interface ``diffir train`` uses (spec §B.8); the engine never looks further inside the pipeline.
    # Batches hold ``lq`` and ``gt`` in [0, 1] (B, 3, H, W), and optionally ``prompt`` (a list of strings).  A smaller
    # ``lq`` (Real-ESRGAN ×4 pairs) is resized back to the GT size first, as v2.1's batch transform ends.

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Stage 1: the cleaner.  Stage 2: the IRControlNet only (UNet, VAE, text tower and cleaner stay frozen)."""
        return list((self.cleaner if self.config.stage == 1 else self.cldm.controlnet).parameters())

    @torch.no_grad()
    def init_controlnet_from_unet(self) -> None:
        """Official ``load_controlnet_from_unet``: copy every UNet weight the ControlNet shares; its first conv gets
        zeros for the hint channels; ``zero_convs`` and ``middle_block_out`` start at zero (official zero_module)."""
        unet = self.cldm.unet.state_dict()
        for key, value in self.cldm.controlnet.state_dict().items():
            if key not in unet:
                value.zero_()
            elif value.shape == unet[key].shape:
                value.copy_(unet[key])
            else:  # input_blocks.0.0.weight: [x_t channels | hint channels]
                value.zero_()
                value[:, : unet[key].shape[1]].copy_(unet[key])

    def training_loss(self, batch: dict[str, Any], generator: torch.Generator,
                      noise_aug: int = 0) -> tuple[torch.Tensor, dict[str, float]]:
        """Stage 1: sum of squared errors of cleaner(lq) against gt.  Stage 2: the latent diffusion loss (ε or v) of
        the ControlNet-guided UNet; every draw comes from ``generator`` in the official order (posterior sample,
        noise augmentation, t, ε)."""
        lq, gt = batch["lq"], batch["gt"]
        if lq.shape[-2:] != gt.shape[-2:] and self.cleaner_scale == 1:  # bicubic, clamped, rounded to 8 bits
            lq = (F.interpolate(lq, size=gt.shape[-2:], mode="bicubic").clamp(0, 1) * 255).round() / 255
        if self.config.stage == 1:
            loss = F.mse_loss(self._raw_clean(lq), gt, reduction="sum")
            return loss, {"loss_mse_sum": loss.item()}
        n, diffusion = lq.shape[0], self.diffusion
        with torch.no_grad():
            z0 = self.cldm.vae_encode(gt * 2 - 1, sample=True, generator=generator)
            c_img = self.cldm.vae_encode(self._raw_clean(lq) * 2 - 1)
            c_txt = self.encode_text(list(batch.get("prompt") or [""] * n))
            if noise_aug > 0:
                t_aug = torch.randint(0, noise_aug, (n,), generator=generator)
                c_img = diffusion.q_sample(c_img, t_aug, torch.randn(c_img.shape, generator=generator).to(c_img))
        t = torch.randint(0, diffusion.num_timesteps, (n,), generator=generator).to(z0.device)
        loss = diffusion.p_losses(lambda x, ts, c: self.cldm(x, ts, c_txt, c), z0, t, c_img, generator=generator)
        return loss, {"loss_diffusion": loss.item()}

    @torch.no_grad()
    def validation_output(self, lq: torch.Tensor, generator: torch.Generator, steps: int) -> torch.Tensor:
        """What training validation scores, at the training geometry (output size = ``lq`` size): stage 1 the
        cleaner's output; stage 2 a spaced sampling without CFG or colour fix, as the official image logs."""
        clean = self._raw_clean(lq).clamp(0, 1)
        if self.config.stage == 1:
            return clean
        c_txt = self.encode_text([""] * lq.shape[0])
        options = GenerationOptions(steps=steps, sampler="spaced", cfg_scale=1.0, color_fix=False)
        return ((self.sample(clean, options, generator, contexts=(c_txt, c_txt)) + 1) / 2).clamp(0, 1)

    def _raw_clean(self, lq: torch.Tensor) -> torch.Tensor:
        """The cleaner as trained officially: no clamp (padded to its window grid only if needed)."""
        h, w = lq.shape[-2:]
        out = self.cleaner(pad_to_multiple(lq, cleaner_multiple(self.cleaner)))
        return out[..., : h * self.cleaner_scale, : w * self.cleaner_scale]

def _denoiser(cldm: ControlLDM, scales: list[float], dtype: torch.dtype) -> Callable:
    """``model(x, t, cond)`` for the samplers; half precision runs under autocast (GroupNorm stays float32)."""

    def run(x: torch.Tensor, t: torch.Tensor, cond: dict[str, torch.Tensor]) -> torch.Tensor:
        if dtype == torch.float32:
            return cldm(x, t, cond["c_txt"], cond["c_img"], scales)
        with torch.autocast(x.device.type, dtype=dtype):
            return cldm(x, t, cond["c_txt"], cond["c_img"], scales).float()

    return run


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubic, antialiased when shrinking (official: PIL bicubic up, torch bicubic + antialias at the end)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=shrink)
