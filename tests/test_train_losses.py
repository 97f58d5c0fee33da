"""Training losses and discriminators: definitions from specs §5, clear errors for missing VGG weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from diffir.errors import ConfigError
from diffir.train.config import DiscriminatorSection
from diffir.train.discriminators import NLayerDiscriminator, UNetDiscriminatorSN, build_discriminator
from diffir.train.losses import (
    KDLoss,
    VGG19Features,
    VGGPerceptualLoss,
    feature_matching_loss,
    masked_l1_loss,
    nonsaturating_d_loss,
    nonsaturating_g_loss,
    vanilla_gan_loss,
)


def test_kd_loss_trains_selected_term_and_logs_kl():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(3, 256, generator=g, requires_grad=True), torch.randn(3, 256, generator=g)
    for kind, ref in [("l1", F.l1_loss(s, t)), ("l2", F.mse_loss(s, t))]:
        loss, logs = KDLoss(kind)(s, t)
        assert torch.allclose(loss, ref)
        assert set(logs) == {"kd_l1", "kd_kl"}
    kl = F.kl_div(F.log_softmax(s / 0.15, 1), F.softmax(t / 0.15, 1), reduction="batchmean")
    loss, logs = KDLoss("kl")(s, t)
    assert torch.allclose(loss, kl) and logs["kd_kl"] == pytest.approx(kl.item(), rel=1e-6)
    t.requires_grad_(True)
    KDLoss("l1")(s, t)[0].backward()
    assert t.grad is None  # the teacher IPR is detached


def test_masked_l1_only_known_pixels_times_ten():
    pred, gt = torch.zeros(1, 3, 4, 4), torch.ones(1, 3, 4, 4)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2, :] = 1  # half the image is a hole
    assert masked_l1_loss(pred, gt, mask).item() == pytest.approx(10 * 0.5)
    assert masked_l1_loss(pred, gt, mask, known=10, missing=1).item() == pytest.approx(10 * 0.5 + 0.5)


def test_vanilla_gan_is_bce_with_logits():
    x = torch.tensor([[0.3, -2.0]])
    assert vanilla_gan_loss(x, True).item() == pytest.approx(F.softplus(-x).mean().item())
    assert vanilla_gan_loss(x, False).item() == pytest.approx(F.softplus(x).mean().item())


def test_nonsaturating_d_loss_r1_and_mask_as_fake():
    torch.manual_seed(0)
    d = NLayerDiscriminator(3, 8, 2)
    real = torch.rand(2, 3, 32, 32, requires_grad=True)
    fake = torch.rand(2, 3, 32, 32)
    mask = torch.zeros(2, 1, 32, 32)
    real_logits, _ = d(real)
    fake_logits, _ = d(fake)
    total, logs = nonsaturating_d_loss(real_logits, fake_logits, real, mask, r1_weight=0.001)
    # an all-known mask pushes every fake pixel towards "real": softplus(-D(fake))
    assert logs["d_fake"] == pytest.approx(F.softplus(-fake_logits).mean().item(), rel=1e-6)
    (grad,) = torch.autograd.grad(real_logits.sum(), real, retain_graph=True)
    r1 = grad.pow(2).flatten(1).sum(1).mean().item()
    assert logs["r1"] == pytest.approx(r1, rel=1e-5)
    assert total.item() == pytest.approx(logs["d_real"] + 0.001 * r1 + logs["d_fake"], rel=1e-5)
    _, logs_hole = nonsaturating_d_loss(real_logits, fake_logits, real, torch.ones_like(mask), r1_weight=0)
    assert logs_hole["d_fake"] == pytest.approx(F.softplus(fake_logits).mean().item(), rel=1e-6)
    assert nonsaturating_g_loss(fake_logits).item() == pytest.approx(F.softplus(-fake_logits).mean().item())


def test_feature_matching_is_mean_mse():
    a = [torch.ones(1, 2, 2, 2), torch.zeros(1, 1, 3, 3)]
    b = [torch.zeros(1, 2, 2, 2), torch.zeros(1, 1, 3, 3)]
    assert feature_matching_loss(a, b).item() == pytest.approx(0.5)


def test_discriminator_shapes_and_keys():
    x = torch.rand(2, 3, 64, 64)
    u = UNetDiscriminatorSN(3, 8)
    logits, feats = u(x)
    assert logits.shape == (2, 1, 64, 64) and len(feats) == 7
    keys = set(u.state_dict())
    assert {"conv0.weight", "conv1.weight_orig", "conv9.bias"} <= keys
    n = build_discriminator(DiscriminatorSection(type="nlayer", num_feat=64, n_layers=4))
    widths = [getattr(n, f"model{i}")[0].out_channels for i in range(6)]
    assert widths == [64, 128, 256, 512, 512, 1]  # specs §5.4
    logits, feats = n(torch.rand(2, 3, 64, 64))
    assert len(feats) == 5 and logits.shape[1] == 1


def test_vgg_missing_weights_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="VGG19 weights not found: .*vgg19.pth"):
        VGGPerceptualLoss({"conv5_4": 1.0}, tmp_path / "vgg19.pth")
    with pytest.raises(ConfigError, match="needs a VGG19 weights file: --set losses.perceptual.vgg_weights="):
        VGGPerceptualLoss({"conv5_4": 1.0}, None)


def test_vgg_loads_torchvision_layout(tmp_path):
    torch.manual_seed(0)
    full = VGG19Features(["conv5_4"])
    sd = {k: v.clone() for k, v in full.state_dict().items()}
    assert "features.34.weight" in sd  # torchvision's index of conv5_4
    sd["classifier.0.weight"] = torch.zeros(1)  # extra keys of a full vgg19 state_dict are ignored
    torch.save(sd, tmp_path / "vgg.pth")
    loss = VGGPerceptualLoss({"conv1_2": 0.1, "conv3_4": 1.0}, tmp_path / "vgg.pth")
    assert torch.equal(loss.vgg.features[2].weight, full.features[2].weight)
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    assert loss(x, x.detach()).item() == 0.0
    value = loss(x, torch.rand(1, 3, 32, 32))
    value.backward()
    assert value.item() > 0 and x.grad is not None
    assert not any(p.requires_grad for p in loss.vgg.parameters())
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ConfigError, match="not a VGG19 state_dict"):
        VGGPerceptualLoss({"conv1_2": 1.0}, tmp_path / "bad.pth")


def test_resnet_pl_optional_user_weights(tmp_path):
    from diffir.train.losses.resnet_pl import ResNet50Dilated, ResNetPLLoss

    with pytest.raises(ConfigError, match="ResNet-PL weights not found"):
        ResNetPLLoss(tmp_path / "encoder_epoch_20.pth")
    torch.manual_seed(0)
    enc = ResNet50Dilated()
    feats = enc(torch.rand(1, 3, 64, 64))
    assert [f.shape[1] for f in feats] == [256, 512, 1024, 2048]
    assert [f.shape[-1] for f in feats] == [16, 8, 8, 8]  # output stride 8 (dilated layers 3 and 4)
    assert "layer4.0.downsample.0.weight" in enc.state_dict() and "conv3.weight" in enc.state_dict()
    torch.save(enc.state_dict(), tmp_path / "enc.pth")
    loss = ResNetPLLoss(tmp_path / "enc.pth")
    x = torch.rand(1, 3, 32, 32)
    assert loss(x, x).item() == 0.0 and loss(x, torch.rand(1, 3, 32, 32)).item() > 0


def test_random_vgg_is_seeded_and_keeps_every_layers_scale():
    layers = {"conv1_2": 0.1, "conv3_4": 1.0, "conv5_4": 1.0}
    torch.manual_seed(1)
    a = VGGPerceptualLoss(layers, "random")
    torch.manual_seed(2)  # the global seed does not matter: the same loss on every machine and restart
    b = VGGPerceptualLoss(layers, "random")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    x = torch.rand(1, 3, 64, 64)
    feats = a.vgg(a._norm(x))
    scales = [feats[k].std().item() for k in layers]
    assert max(scales) < 10 * min(scales), scales  # no layer vanishes or explodes, so each weight means what it says
    pred = x.clone().requires_grad_(True)
    assert a(pred, x).item() == 0.0
    value = a(pred, torch.rand(1, 3, 64, 64))
    value.backward()
    assert value.item() > 0 and pred.grad.abs().sum() > 0
