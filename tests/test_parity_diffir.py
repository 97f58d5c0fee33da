"""Parity with the official DiffIR code (../shared/parity/diffir, README there).

Every case listed in index.json is checked the same way (public and held-out cases share the format), in
float64 (tolerance 1e-10, with the official float32 rounding details reproduced) and in float32 (1e-4 images,
1e-5 vectors).  Hyper-parameters come only from each case's json.
"""

from __future__ import annotations

import json

import pytest
import torch

import diffir.diffusion.sampler as sampler_mod
from conftest import require_shared, shared_dir
from diffir.archs.diffir.config import DiffIRConfig
from diffir.archs.diffir.model import DiffIRS1, DiffIRS2
from diffir.archs.diffir.official import to_official_state_dict
from diffir.io.checkpoint import load_model, read_checkpoint

#: Every case is checked on the fast and on the reference formulation of the networks.
pytestmark = pytest.mark.usefixtures("network_path")

TASK_OF_FOLDER = {
    "DiffIR-SRGAN": "sr",
    "DiffIR-RealSR": "sr",
    "DiffIR-demotionblur": "deblur",
    "DiffIR-inpainting": "inpaint",
}


def _case_names() -> list[str]:
    index = shared_dir() / "parity" / "diffir" / "index.json"
    if not index.exists():
        return ["<missing>"]
    return [c["name"] for c in json.loads(index.read_text())["cases"]]


class Case:
    def __init__(self, name: str) -> None:
        from safetensors.torch import load_file

        root = require_shared("parity", "diffir")
        self.meta = json.loads((root / f"{name}.json").read_text())
        files = self.meta["files"]
        self.s1_path = root / files["S1"]
        self.s2_path = root / files["S2"]
        self.io = load_file(str(root / files["io"]))
        self.task = TASK_OF_FOLDER[self.meta["task_folder"]]
        self.c1 = DiffIRConfig.from_official_kwargs(self.task, 1, self.meta["s1_kwargs"])
        self.c2 = DiffIRConfig.from_official_kwargs(self.task, 2, self.meta["s2_kwargs"])

    def models(self, dtype: torch.dtype) -> tuple[DiffIRS1, DiffIRS2]:
        m1 = DiffIRS1(self.c1)
        m1.load_state_dict(read_checkpoint(self.s1_path)[0], strict=True)
        m2 = load_model(self.s2_path, config=self.c2)  # strict load of the full official dict (dups + buffers)
        return m1.to(dtype).eval(), m2.to(dtype).eval()


@pytest.fixture(scope="module", params=_case_names())
def case(request) -> Case:
    if request.param == "<missing>":
        require_shared("parity", "diffir", "index.json")
    return Case(request.param)


def _close(a: torch.Tensor, ref: torch.Tensor, tol: float, what: str) -> None:
    assert a.shape == ref.shape, f"{what}: shape {tuple(a.shape)} != {tuple(ref.shape)}"
    err = (a.double() - ref.double()).abs().max().item()
    assert err <= tol, f"{what}: max abs error {err:.3g} > {tol:g}"


@pytest.mark.parametrize("dtype,img_tol,vec_tol", [(torch.float64, 1e-10, 1e-10), (torch.float32, 1e-4, 1e-5)])
def test_stage1_and_condition(case: Case, dtype, img_tol, vec_tol) -> None:
    m1, m2 = case.models(dtype)
    lq, gt = case.io["lq"].to(dtype), case.io["gt"].to(dtype)
    with torch.no_grad():
        out, ipr = m1(lq, gt, return_ipr=True)
        cond = m2.condition_of(lq)
    _close(out, case.io["s1_out"], img_tol, "s1_out")
    _close(ipr, case.io["s1_ipr"], vec_tol, "s1_ipr")
    _close(cond, case.io["s2_cond"], vec_tol, "s2_cond")


@pytest.mark.parametrize("dtype,img_tol,vec_tol", [(torch.float64, 1e-10, 1e-10), (torch.float32, 1e-4, 1e-5)])
def test_stage2_seeded_sampling(case: Case, dtype, img_tol, vec_tol, monkeypatch) -> None:
    _, m2 = case.models(dtype)
    lq = case.io["lq"].to(dtype)
    draws: list[torch.Tensor] = []
    real_randn = sampler_mod._randn

    def recording_randn(batch, like, generator):
        draws.append(real_randn(batch, like, generator))
        return draws[-1]

    monkeypatch.setattr(sampler_mod, "_randn", recording_randn)
    torch.manual_seed(case.meta["seeds"]["eval_seed"])
    with torch.no_grad():
        out1 = m2(lq)
        ipr2 = m2.sample_prior(m2.condition_of(lq))
    T = case.meta["timesteps"]
    assert len(draws) == 2 * (T + 1), "each eval forward draws x_T plus one discarded normal per reverse step"
    assert torch.equal(draws[0].float(), case.io["eval_xT"][0]), "x_T of the 1st forward"
    assert torch.equal(draws[T + 1].float(), case.io["eval_xT"][1]), "x_T of the 2nd forward"
    _close(out1, case.io["eval_out"], img_tol, "eval_out")
    _close(ipr2, case.io["eval_ipr"][1], vec_tol, "eval_ipr[1]")


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_stage2_reverse_chain_step_by_step(case: Case, dtype, tol) -> None:
    _, m2 = case.models(dtype)
    cond = m2.condition_of(case.io["lq"].to(dtype)).detach()
    x = case.io["eval_xt"][0].to(dtype)
    T = case.meta["timesteps"]
    with torch.no_grad():
        for i, t in enumerate(reversed(range(T))):
            x_ref = case.io["eval_xt"][i].to(dtype)  # feed the reference input: isolates each step
            x, x0 = m2.diffusion.p_step(m2.denoise, x_ref, t, cond)
            _close(x0, case.io["eval_x0"][i], tol, f"eval_x0[{i}]")
            ref_next = case.io["eval_xt"][i + 1] if i + 1 < T else case.io["eval_ipr"][0]
            _close(x, ref_next, tol, f"x after step t={t}")


@pytest.mark.parametrize("dtype,img_tol,vec_tol", [(torch.float64, 1e-10, 1e-10), (torch.float32, 1e-4, 1e-5)])
def test_stage2_training_chain(case: Case, dtype, img_tol, vec_tol, monkeypatch) -> None:
    _, m2 = case.models(dtype)
    m2.train()
    lq = case.io["lq"].to(dtype)
    draws: list[torch.Tensor] = []
    real_randn = sampler_mod._randn
    monkeypatch.setattr(sampler_mod, "_randn", lambda b, like, g: draws.append(real_randn(b, like, g)) or draws[-1])
    torch.manual_seed(case.meta["seeds"]["train_seed"])
    cond = m2.condition_of(lq)
    t_last = torch.full((lq.shape[0],), case.meta["timesteps"] - 1, dtype=torch.long)
    with torch.no_grad():
        img, iprs = m2(lq, case.io["train_ipr_in"])
        xnoisy = m2.diffusion.q_sample(case.io["train_ipr_in"].to(dtype), t_last, case.io["train_eps"])
        x0_first = m2.denoise(xnoisy, t_last, cond)
    assert torch.equal(draws[0].float(), case.io["train_eps"]), "q_sample noise is the first draw after the seed"
    _close(xnoisy, case.io["train_xnoisy"], vec_tol, "train_xnoisy")
    _close(x0_first, case.io["train_x0"][0], vec_tol, "train_x0[0]")
    _close(torch.stack(iprs), case.io["train_pred_ipr"], vec_tol, "train_pred_ipr")
    _close(img, case.io["train_out"], img_tol, "train_out")


def test_schedule_buffers_bit_exact(case: Case) -> None:
    _, m2 = case.models(torch.float32)
    for name, value in case.io.items():
        if name.startswith("sched_"):
            assert torch.equal(getattr(m2.diffusion, name.removeprefix("sched_")), value), name


def test_official_layout_round_trip(case: Case) -> None:
    """Saving in the official layout reproduces the official key list (order included) and tensors."""
    m1, m2 = case.models(torch.float32)
    for model, keys, path in ((m1, "s1_state_dict_keys", case.s1_path), (m2, "s2_state_dict_keys", case.s2_path)):
        sd = to_official_state_dict(model)
        assert list(sd) == case.meta[keys]
        ref = read_checkpoint(path)[0]
        for k, v in sd.items():
            assert torch.equal(v, ref[k].float()), k
    sd2 = to_official_state_dict(m2)
    for dup, src in case.meta["s2_duplicate_keys"].items():
        assert sd2[dup].data_ptr() == sd2[src].data_ptr(), f"{dup} must share storage with {src}"


def test_inferred_config_builds_the_official_network(case: Case) -> None:
    """load_model without a config infers every hyper-parameter from the tensors."""
    for path, cfg in ((case.s1_path, case.c1), (case.s2_path, case.c2)):
        model = load_model(path)
        got = model.config
        assert (got.task, got.stage, got.scale) == (cfg.task, cfg.stage, cfg.scale)
        ref = type(model)(cfg).state_dict()
        assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in ref.items()}
        for f in ("dim", "num_blocks", "num_refinement_blocks", "bias", "layernorm", "n_encoder_res"):
            if f == "num_refinement_blocks" and not cfg.refinement:
                continue
            assert getattr(got, f) == getattr(cfg, f), f
        if cfg.stage == 2:
            for f in ("n_denoise_res", "timesteps", "linear_start", "linear_end"):
                if f == "linear_end" and cfg.timesteps == 1:
                    continue  # linspace of one point is the start: the end changes no buffer and no output
                assert getattr(got, f) == getattr(cfg, f), f
        for level, heads in enumerate(cfg.heads):
            if cfg.num_blocks[level]:
                assert got.heads[level] == heads
