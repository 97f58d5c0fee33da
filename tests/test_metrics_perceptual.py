"""NIQE against the MATLAB value; LPIPS / DISTS / FID structure, weight handling and missing-weight errors.

No backbone weights are available offline, so LPIPS/DISTS/FID numbers with real weights cannot be checked
here; these tests pin down the parts that can: conventions, identities, weight loading and error messages.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from conftest import require_shared, shared_data
from diffir.bundled import asset_path
from diffir.errors import CheckpointError, ConfigError
from diffir.metrics import METRICS, MissingWeightsError, build_metric, calculate_niqe, describe
from diffir.metrics.backbones import alexnet_features, vgg16_features
from diffir.metrics.dists import DISTS
from diffir.metrics.fid import FID, FIDInception, frechet_distance
from diffir.metrics.lpips import LPIPS


def test_niqe_matches_matlab_on_baboon():
    # BasicSR's README: "NIQE ... produces the same results as MATLAB (both are 5.7296 for tests/data/baboon.png)";
    # that file is Set14's baboon.
    path = require_shared("data", "sr", "Set14", "HR", "baboon.png")
    img = np.array(Image.open(path).convert("RGB"))
    assert calculate_niqe(img, crop_border=0) == pytest.approx(5.7296, abs=1e-3)


def test_niqe_scores_a_natural_image_clearly_better_than_noise_and_needs_two_blocks():
    # Set5 baby (the stand-in's 1/f image without the shared folder), 384x384 centre: natural 3.3 (stand-in 5.0),
    # + Gaussian noise sigma 25: 11.6 (13.6), uniform noise: 28.8.  A real NIQE separates them by far more than
    # the margins asserted; a broken one (e.g. all features NaN-skipped) would not.
    with Image.open(shared_data("sr", "Set5", "HR", "baby.png")) as im:
        natural = np.asarray(im.convert("RGB"))[64:448, 64:448]
    rng = np.random.default_rng(0)
    noisy = np.clip(natural + rng.normal(0, 25, natural.shape), 0, 255).astype(np.uint8)
    noise = rng.integers(0, 256, natural.shape).astype(np.uint8)
    scores = [calculate_niqe(natural), calculate_niqe(noisy), calculate_niqe(noise)]
    assert all(np.isfinite(scores)) and scores[0] < 6
    assert scores[1] > max(2 * scores[0], scores[0] + 5)
    assert scores[2] > scores[1] + 10
    with pytest.raises(ValueError, match="96x96"):
        calculate_niqe(np.zeros((64, 200, 3), np.uint8))


def test_shipped_parameter_files():
    for net, chans in (("alex", (64, 192, 384, 256, 256)), ("vgg", (64, 128, 256, 512, 512))):
        heads = load_file(str(asset_path(f"lpips_v0.1_{net}_heads.safetensors")))
        assert [heads[f"lin{i}"].shape[1] for i in range(5)] == list(chans)
        assert all((heads[f"lin{i}"] >= 0).all() for i in range(5))  # LPIPS heads are trained non-negative
    ab = load_file(str(asset_path("dists_alpha_beta.safetensors")))
    assert ab["alpha"].shape == ab["beta"].shape == (1, 1475, 1, 1)
    with np.load(asset_path("niqe_pris_params.npz")) as z:
        assert z["mu_pris_param"].size == 36 and z["cov_pris_param"].shape == (36, 36)


@pytest.mark.parametrize("make", [lambda: LPIPS("alex", False), lambda: LPIPS("vgg", False), lambda: DISTS(False)])
def test_distance_identities(make):
    torch.manual_seed(0)
    metric = make()
    x, y = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    d = metric(x, y)
    assert d.shape == (2,) and (d > 0).all()
    torch.testing.assert_close(metric(x, x), torch.zeros(2), atol=1e-6, rtol=0)
    torch.testing.assert_close(metric(y, x), d, atol=1e-6, rtol=1e-5)  # symmetric


def _torchvision_style_file(tmp_path, features, name):
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    state["classifier.1.weight"] = torch.zeros(10, 4)  # extra keys of the full torchvision model are ignored
    path = tmp_path / name
    torch.save(state, path)
    return path


def test_backbone_loading_from_torchvision_format(tmp_path, monkeypatch):
    torch.manual_seed(1)
    ref = alexnet_features()
    path = _torchvision_style_file(tmp_path, ref, "alexnet-owt-7be5be79.pth")
    monkeypatch.setenv("DIFFIR_METRIC_WEIGHTS", str(tmp_path))
    metric = LPIPS("alex")  # found by its torchvision release name in $DIFFIR_METRIC_WEIGHTS
    torch.testing.assert_close(metric.features[0].weight, ref[0].weight)
    assert LPIPS("alex", path).features[10].bias.equal(ref[10].bias)
    wrong = _torchvision_style_file(tmp_path, vgg16_features(), "vgg16-397923af.pth")
    with pytest.raises(CheckpointError, match="alexnet"):
        LPIPS("alex", wrong)
    DISTS(wrong)  # the VGG file is right for DISTS


def test_missing_weights_are_reported_not_approximated(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFIR_METRIC_WEIGHTS", str(tmp_path / "empty"))
    for name, needle in (("lpips", "AlexNet"), ("lpips_vgg", "VGG16"), ("dists", "VGG16"), ("fid", "Inception")):
        with pytest.raises(MissingWeightsError, match=needle) as err:
            build_metric(name)
        assert "never downloads" in str(err.value) and "DIFFIR_METRIC_WEIGHTS" in str(err.value)
    with pytest.raises(MissingWeightsError, match="does not exist"):
        build_metric("lpips", weights={"alexnet": tmp_path / "nope.pth"})


def test_registry_declares_direction_and_convention():
    assert {n: s.higher_is_better for n, s in METRICS.items()} == {
        "psnr": True, "ssim": True, "psnr_hole": True, "ssim_hole": True, "lpips": False, "lpips_vgg": False,
        "dists": False, "niqe": False, "fid": False,
    }  # fmt: skip
    assert all(s.convention and s.kind in ("full-reference", "no-reference", "set", "hole") for s in METRICS.values())
    assert describe("PSNR").arrow == "↑"
    with pytest.raises(ConfigError, match="did you mean 'lpips'"):
        describe("lpip")
    a = np.full((32, 32, 3), 100, np.uint8)
    b = a.copy()
    b[10, 10] = 110
    psnr = build_metric("psnr", crop_border=4, test_y_channel=True)
    assert psnr(a, b) == pytest.approx(10 * np.log10(255**2 / ((10 * 219 / 255) ** 2 / 24**2)))


def test_frechet_distance_closed_form_and_scipy():
    rng = np.random.default_rng(0)
    d1, d2 = rng.uniform(0.5, 2, 5), rng.uniform(0.5, 2, 5)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    expect = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(d1) - np.sqrt(d2)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(d1), mu2, np.diag(d2)) == pytest.approx(expect, rel=1e-10)
    linalg = pytest.importorskip("scipy.linalg")
    a, b = rng.normal(size=(40, 6)), rng.normal(size=(50, 6)) * 1.5
    c1, c2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    ref = np.trace(c1) + np.trace(c2) - 2 * np.trace(linalg.sqrtm(c1 @ c2).real)
    assert frechet_distance(np.zeros(6), c1, np.zeros(6), c2) == pytest.approx(ref, rel=1e-8)


def test_fid_inception_loads_pytorch_fid_names(tmp_path):
    torch.manual_seed(2)
    net = FIDInception()
    names = set(net.state_dict())
    assert {"Conv2d_1a_3x3.conv.weight", "Mixed_5b.branch_pool.bn.running_var"} <= names
    assert "Mixed_7c.branch3x3dbl_3b.conv.weight" in names
    assert sum(p.numel() for p in net.parameters()) == 21_785_568  # torchvision inception_v3 minus aux and fc
    state = dict(net.state_dict())
    state["fc.weight"] = torch.zeros(1008, 2048)  # pytorch-fid files carry a 1008-class head; ignored
    torch.save(state, tmp_path / "pt_inception-2015-12-05-6726825d.pth")
    fid = FID(tmp_path / "pt_inception-2015-12-05-6726825d.pth")
    torch.testing.assert_close(fid.net.Mixed_6e.branch7x7dbl_5.conv.weight, net.Mixed_6e.branch7x7dbl_5.conv.weight)
    with torch.no_grad():
        assert fid.net(torch.rand(1, 3, 40, 40)).shape == (1, 2048)  # one forward: 299x299 is costly on CI
    fid.features = lambda images: images.flatten(1).double().numpy()  # feed known features to the set logic
    x = torch.rand(4, 3, 2, 2)
    fid.add(x, x)
    assert fid.compute() == pytest.approx(0.0, abs=1e-6)
    fid.add(x, x + 1)  # shift half of the real set by 1 in every dimension
    assert fid.compute() > 0
