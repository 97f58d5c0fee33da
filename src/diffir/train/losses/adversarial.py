"""Adversarial losses.

* ``vanilla``: BCE-with-logits, real target 1 / fake 0 (the SR GAN stages, BasicSR ``GANLoss('vanilla')``).
* ``nonsaturating``: LaMa's inpainting GAN: G minimises softplus(−D(fake)); D minimises softplus(−D(real)) +
  R1·|∇D(real)|² + softplus(±D(fake)) where, with ``mask_as_fake``, only the hole pixels of the prediction are
  pushed towards "fake" and the known pixels towards "real".
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def vanilla_gan_loss(logits: torch.Tensor, target_real: bool) -> torch.Tensor:
    target = torch.ones_like(logits) if target_real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits.float(), target.float())


def nonsaturating_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    return F.softplus(-fake_logits.float()).mean()


def r1_penalty(real_logits: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Squared gradient norm of ΣD(real) w.r.t. the real images, averaged over the batch."""
    (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()


def nonsaturating_d_loss(
    real_logits: torch.Tensor,
    fake_logits: torch.Tensor,
    real: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    r1_weight: float = 0.001,
    mask_as_fake: bool = True,
) -> tuple[torch.Tensor, dict[str, float]]:
    """``real`` must have ``requires_grad`` (set before calling D) when ``r1_weight > 0``."""
    real_term = F.softplus(-real_logits.float()).mean()
    r1 = r1_penalty(real_logits, real) if (r1_weight > 0 and real is not None) else real_logits.new_zeros(())
    fake_logits = fake_logits.float()
    if mask_as_fake and mask is not None:
        m = F.interpolate(mask.float(), size=fake_logits.shape[-2:], mode="nearest")
        fake_term = (m * F.softplus(fake_logits) + (1 - m) * F.softplus(-fake_logits)).mean()
    else:
        fake_term = F.softplus(fake_logits).mean()
    total = real_term + r1_weight * r1 + fake_term
    return total, {"d_real": real_term.item(), "d_fake": fake_term.item(), "r1": float(r1.item())}


def feature_matching_loss(fake_feats: list[torch.Tensor], real_feats: list[torch.Tensor]) -> torch.Tensor:
    """Mean over D's intermediate activations of MSE(fake, real); the real features are constants."""
    losses = [F.mse_loss(f.float(), r.detach().float()) for f, r in zip(fake_feats, real_feats, strict=True)]
    return torch.stack(losses).mean()
