"""The generator and discriminator objectives of every stage (mixed into :class:`~diffir.train.engine.Trainer`).

* S1: the network sees LQ and GT (CPEN_S1); loss L1 (SR/deblur) or the LaMa terms (inpainting).
* S2 warm-up (``iter <= train.encoder_iters``): only CPEN_S2 + denoiser, KD loss only.
* S2 / GAN: V3 joint optimisation through all T reverse steps (default), V1 (``diffusion.enabled: false``),
  V2 (``optimization: traditional``), V4 (``reverse_noise``), always with the KD loss on the final IPR.
* A model with its own ``training_loss`` (DiffBIR: the cleaner's sum-MSE in S1, the ControlNet's diffusion loss
  in S2): that loss alone.
* GAN terms: VGG19 perceptual, vanilla GAN (SR) or non-saturating GAN + R1 + feature matching (inpainting).
"""

from __future__ import annotations

from typing import Any

import torch

from diffir.errors import ConfigError
from diffir.train.losses import (
    feature_matching_loss,
    l1_loss,
    masked_l1_loss,
    nonsaturating_d_loss,
    nonsaturating_g_loss,
    vanilla_gan_loss,
)


class Objectives:
    """Forward passes and losses.  Expects the attributes the Trainer sets: ``cfg``, ``stage``, ``mc``,
    ``student``, ``teacher``, ``disc``, ``kd``, ``perceptual``, ``resnet_pl``, ``gen``, ``device``, ``own_loss``."""

    def _teacher_ipr(self, lq: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        assert self.teacher is not None
        with torch.no_grad():  # frozen: upstream computes its graph but never applies the gradients
            return self.teacher.prior(lq, gt)

    def _generate(self, batch: dict[str, torch.Tensor], warmup: bool) -> tuple[torch.Tensor | None, dict]:
        """Forward of the trainee.  Returns (restored image or None in the warm-up, KD terms)."""
        lq, gt = batch["lq"], self._target(batch)
        s = self.student
        if self.stage == "s1":
            return s(lq, gt), {}
        ipr_s1 = self._teacher_ipr(lq, gt)
        diff = self.cfg.diffusion
        if warmup:  # phase A: only the prior's networks, KD loss only, the restoration network untouched
            iprs = s.train_chain(ipr_s1, s.condition_of(lq), generator=self.gen)
            return None, self._kd(iprs[-1], ipr_s1)
        if diff.optimization == "traditional" and diff.enabled:
            # V2: the denoiser learns the per-step x0 objective at a random t; the restoration network gets the
            # prior sampled by the (detached) reverse chain, so no gradient links the two.
            x0, ipr = s.traditional_targets(ipr_s1, s.condition_of(lq), generator=self.gen)
            return s.restore(lq, ipr), self._kd(x0, ipr_s1)
        out, iprs = s(lq, ipr_s1, generator=self.gen)  # V3 (joint through all T steps), V1, V4
        return out, self._kd(iprs[-1], ipr_s1)

    def _target(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The restoration target: GT, or USM-sharpened GT in the RealSR V2 recipes."""
        if self.cfg.losses.usm_targets:
            if "gt_usm" not in batch:
                raise ConfigError("losses.usm_targets needs a degradation that returns gt_usm (gt_usm: true)")
            return batch["gt_usm"]
        return batch["gt"]

    def _kd(self, student_ipr: torch.Tensor, teacher_ipr: torch.Tensor) -> dict:
        loss, logs = self.kd(student_ipr, teacher_ipr)
        return {"loss": loss, "logs": logs}

    def _g_losses(self, batch: dict[str, torch.Tensor], warmup: bool) -> tuple[torch.Tensor, dict[str, float], Any]:
        if self.own_loss:  # DiffBIR: the model's own objective (sum-MSE of the cleaner, or the diffusion loss)
            options = {"noise_aug": self.cfg.diffusion.noise_aug} if self.stage == "s2" else {}
            loss, logs = self.student.training_loss(batch, self.gen, **options)
            return loss, logs, None
        cfg = self.cfg.losses
        out, kd = self._generate(batch, warmup)
        logs: dict[str, float] = {}
        terms: list[torch.Tensor] = []
        if kd:
            terms.append(kd["loss"])
            logs.update(kd["logs"])
            logs["loss_kd"] = kd["loss"].item()
        if out is None:
            return torch.stack(terms).sum(), logs, None
        gt = self._target(batch)
        if self.mc.task == "inpaint":
            rec = masked_l1_loss(out, gt, batch["mask"], cfg.masked_l1_known, cfg.masked_l1_missing)
        else:
            rec = cfg.pixel * l1_loss(out, gt)
        terms.append(rec)
        logs["loss_pix"] = rec.item()
        if self.perceptual is not None:
            p = cfg.perceptual.weight * self.perceptual(out, gt)
            terms.append(p)
            logs["loss_percep"] = p.item()
        if self.resnet_pl is not None:
            p = cfg.resnet_pl.weight * self.resnet_pl(out, gt)
            terms.append(p)
            logs["loss_resnet_pl"] = p.item()
        if self.disc is not None:
            logits, feats = self.disc(out)
            if cfg.gan.type == "vanilla":
                adv = cfg.gan.weight * vanilla_gan_loss(logits, True)
            else:
                adv = cfg.gan.weight * nonsaturating_g_loss(logits)
            terms.append(adv)
            logs["loss_gan"] = adv.item()
            if cfg.gan.feature_matching > 0:
                with torch.no_grad():
                    _, real_feats = self.disc(batch["gt"])
                fm = cfg.gan.feature_matching * feature_matching_loss(feats, real_feats)
                terms.append(fm)
                logs["loss_fm"] = fm.item()
        return torch.stack([t.float() for t in terms]).sum(), logs, out.detach()

    def _d_losses(self, batch: dict[str, torch.Tensor], fake: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        assert self.disc is not None
        gan = self.cfg.losses.gan
        gt = batch["gt"]
        if gan.type == "vanilla":
            real_logits, _ = self.disc(gt)
            fake_logits, _ = self.disc(fake)
            l_real, l_fake = vanilla_gan_loss(real_logits, True), vanilla_gan_loss(fake_logits, False)
            return l_real + l_fake, {"d_real": l_real.item(), "d_fake": l_fake.item()}
        real = gt.detach().requires_grad_(gan.r1_weight > 0)
        real_logits, _ = self.disc(real)
        fake_logits, _ = self.disc(fake)
        return nonsaturating_d_loss(real_logits, fake_logits, real, batch.get("mask"), gan.r1_weight,
                                    gan.mask_as_fake)

