"""Training losses: pixel / KD (IPR distillation), VGG19 perceptual, adversarial, inpainting (LaMa) terms."""

from diffir.train.losses.adversarial import (
    feature_matching_loss,
    nonsaturating_d_loss,
    nonsaturating_g_loss,
    vanilla_gan_loss,
)
from diffir.train.losses.kd import KDLoss
from diffir.train.losses.perceptual import VGG19Features, VGGPerceptualLoss
from diffir.train.losses.pixel import l1_loss, masked_l1_loss

__all__ = [
    "KDLoss",
    "VGG19Features",
    "VGGPerceptualLoss",
    "feature_matching_loss",
    "l1_loss",
    "masked_l1_loss",
    "nonsaturating_d_loss",
    "nonsaturating_g_loss",
    "vanilla_gan_loss",
]
