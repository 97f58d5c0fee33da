"""Training config: typed, rejects unknown keys with a suggestion, env-var paths, --set overrides, schedules."""

from __future__ import annotations

import math

import pytest

from diffir.errors import ConfigError
from diffir.train.config import ScheduleSection
from diffir.train.loading import apply_overrides, expand_vars, load_config, parse_config, path_hint
from diffir.train.schedules import lr_at

BASE = {
    "stage": "s1",
    "model": {"preset": "diffir_sr_x4_s1"},
    "data": {"train": {"kind": "folder", "gt_dir": "x", "degradation": {"name": "bicubic_x4"}}},
    "train": {"iters": 10},
}


def _with(**sections):
    return {**BASE, **sections}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (_with(trian={"iters": 3}), "unknown config key 'trian'; did you mean 'train'?"),
        (_with(train={"iters": 3, "batchsize": 2}), "did you mean 'train.batch_size'?"),
        (_with(losses={"kd": {"tpye": "l2"}}), "did you mean 'losses.kd.type'?"),
        (_with(optim={"g": {"lr": 1e-4, "schedule": {"milestone": [1]}}}), "'optim.g.schedule.milestones'"),
    ],
)
def test_misspelled_key_is_one_clear_line(data, expected):
    with pytest.raises(ConfigError) as err:
        parse_config(data, source="cfg.yaml")
    msg = str(err.value)
    assert expected in msg
    assert "\n" not in msg and msg.startswith("cfg.yaml: ")


def test_other_errors_are_one_line():
    for data, part in [
        (_with(stage="s2"), "use a *_s2 preset"),
        (_with(train={}), "missing required config key 'train.iters'"),
        (_with(losses={"kd": {"type": "l3"}}), "losses.kd.type"),
        (_with(stage="gan", model={"preset": "diffir_sr_x4_s2"}), "needs a discriminator"),
    ]:
        with pytest.raises(ConfigError) as err:
            parse_config(data)
        assert part in str(err.value) and "\n" not in str(err.value)


def test_env_var_expansion(monkeypatch):
    monkeypatch.delenv("DIFFIR_DATA", raising=False)
    assert expand_vars("${DIFFIR_DATA:-../shared/data}/T91") == "../shared/data/T91"
    monkeypatch.setenv("DIFFIR_DATA", "/data")
    assert expand_vars({"a": ["${DIFFIR_DATA:-x}/T91"]}) == {"a": ["/data/T91"]}
    monkeypatch.delenv("DIFFIR_DATA")
    with pytest.raises(ConfigError, match="DIFFIR_DATA is not set"):
        expand_vars("${DIFFIR_DATA}/x")


def test_set_overrides_and_file_loading(tmp_path):
    import yaml

    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(BASE))
    cfg = load_config(p, ["train.iters=7", "losses.kd.type=kl", "diffusion.timesteps=3"])
    assert cfg.train.iters == 7 and cfg.losses.kd.type == "kl" and cfg.model_overrides()["timesteps"] == 3
    with pytest.raises(ConfigError, match="did you mean 'train.seed'"):
        load_config(p, ["train.sed=1"])
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["train.iters"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_shipped_configs_parse(monkeypatch):
    from pathlib import Path

    monkeypatch.setenv("DIFFIR_DATA", "/nonexistent")
    root = Path(__file__).resolve().parents[1] / "configs"
    # training recipes only (other folders of configs/ hold other kinds of YAML)
    files = sorted(f for d in ("sr", "realsr", "deblur", "inpaint", "tiny") for f in (root / d).glob("*.yaml"))
    assert len(files) >= 29
    assert {f.name for f in (root / "tiny").glob("*.yaml")} >= {
        "sr_x4_s1.yaml", "sr_x4_s2.yaml", "sr_x4_gan.yaml", "inpaint_s1.yaml", "inpaint_s2.yaml"}
    for f in files:
        cfg = load_config(f)
        assert cfg.train.iters > 0, f


def test_path_hint_names_the_variable_and_the_key(monkeypatch):
    monkeypatch.delenv("DIFFIR_DATA", raising=False)
    raw = "${DIFFIR_DATA:-../shared/data}/train/T91"
    assert path_hint(raw, "data.train.gt_dir", "c.yaml") == (
        "set DIFFIR_DATA to the folder that holds train/T91, or edit data.train.gt_dir in c.yaml"
        "; what it holds and where to get the public sets: docs/data.md")
    monkeypatch.setenv("DIFFIR_DATA", "/d")
    assert path_hint(raw, "data.train.gt_dir", "c.yaml") == (
        "DIFFIR_DATA is /d: point it at the folder that holds train/T91, or edit data.train.gt_dir in c.yaml"
        "; what it holds and where to get the public sets: docs/data.md")
    assert path_hint("${DIFFIR_DATA}", "data.val.lq_dir").startswith("DIFFIR_DATA is /d: point it at the data "
                                                                     "folder, or edit data.val.lq_dir in the config;")
    assert path_hint("/data/HR", "data.train.gt_dir", "c.yaml") == "edit data.train.gt_dir in c.yaml"
    assert path_hint("/data/HR", "data.train.gt_dir", "c.yaml", from_set=True) == "fix --set data.train.gt_dir"


def test_missing_dataset_folder_names_variable_and_key(tmp_path, monkeypatch):
    """A missing folder says which variable (DIFFIR_DATA / DIFFIR_DATASETS) or config key to fix."""
    from pathlib import Path

    from diffir.train.data import build_dataset

    root = Path(__file__).resolve().parents[1] / "configs"
    monkeypatch.chdir(tmp_path)  # ../shared/data does not exist from here
    monkeypatch.delenv("DIFFIR_DATA", raising=False)
    tiny = root / "tiny" / "sr_x4_s1.yaml"
    cfg = load_config(tiny)
    with pytest.raises(ConfigError) as err:
        build_dataset(cfg.data.train, 4, "sr", train=True)
    assert str(err.value) == (
        f"image folder not found: ../shared/data/train/T91 (relative to the working directory {tmp_path}; "
        f"set DIFFIR_DATA to the folder that holds train/T91, or edit data.train.gt_dir in {tiny}; what it holds "
        "and where to get the public sets: docs/data.md)")
    with pytest.raises(ConfigError, match=r"set DIFFIR_DATA to the folder that holds sr/Set5/HR, or edit data\.val"):
        build_dataset(cfg.data.val, 4, "sr", train=False)

    monkeypatch.setenv("DIFFIR_DATASETS", str(tmp_path / "ds"))
    realsr = root / "realsr" / "realsr_x4_s1.yaml"
    cfg = load_config(realsr)
    with pytest.raises(ConfigError) as err:
        build_dataset(cfg.data.train, 4, "sr", train=True)
    assert f"DIFFIR_DATASETS is {tmp_path / 'ds'}: point it at the folder that holds " in str(err.value)
    assert str(err.value).endswith(f"or edit data.train.gt_dir in {realsr})")

    (tmp_path / "empty").mkdir()  # exists but holds no images; given with --set
    cfg = load_config(tiny, [f"data.train.gt_dir={tmp_path / 'empty'}"])
    with pytest.raises(ConfigError) as err:
        build_dataset(cfg.data.train, 4, "sr", train=True)
    assert str(err.value).startswith(f"no images in {tmp_path / 'empty'}")
    assert str(err.value).endswith(".webp; fix --set data.train.gt_dir)")  # the extensions looked for, then the fix

    cfg = parse_config(BASE)  # no file, no variable
    with pytest.raises(ConfigError, match=r"^image folder not found: x \(.*; edit data.train.gt_dir in the config\)$"):
        build_dataset(cfg.data.train, 4, "sr", train=True)


def test_multistep_schedule_matches_basicsr_stepping():
    s = ScheduleSection(type="multistep", milestones=[3, 5], gamma=0.5)
    # BasicSR steps its schedulers from the 2nd iteration on: iteration i sees i-1 completed steps.
    assert [lr_at(s, 1.0, i) for i in range(1, 8)] == [1, 1, 1, 0.5, 0.5, 0.25, 0.25]


def test_cyclic_cosine_deblur_first_cycle_rises():
    s = ScheduleSection(type="cyclic_cosine", periods=[92000, 208000], restart_weights=[1, 1],
                        eta_mins=[2.85e-4, 1e-6])
    assert lr_at(s, 2e-4, 1) == pytest.approx(2e-4)
    assert lr_at(s, 2e-4, 92001) == pytest.approx(2.85e-4)  # eta_min above the base: the LR rises (specs §7.14)
    assert lr_at(s, 2e-4, 92002) == pytest.approx(2e-4, rel=1e-6)  # restart
    mid = lr_at(s, 2e-4, 92001 + 104000)
    assert mid == pytest.approx(1e-6 + 0.5 * (2e-4 - 1e-6) * (1 + math.cos(math.pi / 2)))
    assert lr_at(s, 2e-4, 300001) == pytest.approx(1e-6)


def test_skip_images_holds_out_the_first_images(tmp_path):
    import numpy as np
    from PIL import Image

    from diffir.train.config import DatasetSection
    from diffir.train.data import build_dataset

    for i in range(5):
        Image.fromarray(np.full((40, 40, 3), 50 * i, np.uint8)).save(tmp_path / f"f{i}.png")
    section = DatasetSection(kind="inpaint", gt_dir=str(tmp_path), patch_size=32, skip_images=2)
    ds = build_dataset(section, 1, "inpaint", train=True)
    assert [p.name for p in ds.images.files] == ["f2.png", "f3.png", "f4.png"]
    held_out = build_dataset(DatasetSection(kind="inpaint", gt_dir=str(tmp_path), patch_size=32, max_images=2),
                             1, "inpaint", train=False)
    assert [p.name for p in held_out.dataset.images.files[: len(held_out)]] == ["f0.png", "f1.png"]  # left out
    with pytest.raises(ConfigError, match="no images found in .* after skip_images 5"):
        build_dataset(DatasetSection(kind="folder", gt_dir=str(tmp_path), patch_size=32, skip_images=5,
                                     degradation={"name": "bicubic_x4"}), 4, "sr", train=True)
    with pytest.raises(ValueError, match="skip_images works for kinds folder and inpaint, not 'paired'"):
        DatasetSection(kind="paired", gt_dir=str(tmp_path), lq_dir=str(tmp_path), skip_images=1)
