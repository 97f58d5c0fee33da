"""DiffBIR stage 1 against the official code (../shared/parity/diffbir, README §3(a), §7.1-7.2): SwinIR, RRDBNet
(BSRNet) and SCUNet built from each case's json, strict-loaded from its files, compared tensor by tensor; their
official state_dict layouts (tiny and released) and the configuration read back from the tensors."""

from __future__ import annotations

import dataclasses
import functools

import pytest
import torch

from diffbir_parity import case, case_names
from diffir.archs.diffbir.cleaners import (
    CLEANERS,
    build_layout,
    detect_cleaner,
    infer_cleaner_config,
    load_cleaner,
    official_key_order,
)
from diffir.archs.diffbir.swinir import SwinIRConfig
from diffir.errors import CheckpointError, ConfigError

#: Reference groups this file compares completely.
OWNED = ("s1.",)

CASES = case_names()
KINDS = tuple(CLEANERS)
#: Inputs of each whole-model output (the other s1.* keys are sub-module outputs, captured with hooks).
OUTPUTS = {
    "swinir": {"out": "in.swinir", "out_exact": "in.swinir_exact", "out_pad": "in.swinir_pad"},
    "bsrnet": {"out": "in.bsrnet"},
    "scunet": {"out": "in.scunet"},
}


def _config(name: str, kind: str):
    return CLEANERS[kind][0](**case(name).meta[kind])


@functools.cache
def _loaded(name: str, kind: str) -> torch.nn.Module:
    module = CLEANERS[kind][1](_config(name, kind))
    result = module.load_state_dict(case(name).weights(kind), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    return module.eval()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", CASES)
def test_stage1_parity(name: str, kind: str) -> None:
    """Every s1.<kind>.* tensor: sub-module outputs via hooks on the official names (first input), then outputs."""
    c, module, prefix = case(name), _loaded(name, kind), f"s1.{kind}."
    outputs = OUTPUTS[kind]
    seen: dict[str, torch.Tensor] = {}
    hooked = [k.removeprefix(prefix) for k in c.keys(prefix) if k.removeprefix(prefix) not in outputs]
    handles = [module.get_submodule(sub).register_forward_hook(
        lambda _m, _i, out, sub=sub: seen.__setitem__(sub, out)) for sub in hooked]
    try:
        with torch.no_grad():
            first = module(c.input(outputs["out"]))
    finally:
        for handle in handles:
            handle.remove()
    for sub in hooked:
        c.check(prefix + sub, seen[sub])
    c.check(prefix + "out", first)
    with torch.no_grad():
        for key, source in outputs.items():
            if key != "out" and prefix + key in c.ref:  # a case may lack an input (e.g. no exact-size one)
                c.check(prefix + key, module(c.input(source)))
    c.assert_group_checked(prefix)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", CASES)
def test_official_state_dict_layout(name: str, kind: str) -> None:
    """A fresh module saves exactly the official keys in module order (buffers before children, no attn_mask in
    unshifted blocks), with the file's shapes, and computes the file's buffers bit for bit, in their dtypes."""
    c = case(name)
    expected = c.meta["state_dicts"][kind]
    weights = c.weights(kind)
    saved = CLEANERS[kind][1](_config(name, kind)).state_dict()
    assert list(saved) == expected["keys_in_module_order"] == official_key_order(_loaded(name, kind))
    assert {k: tuple(v.shape) for k, v in saved.items()} == {k: tuple(v.shape) for k, v in weights.items()}
    buffers = [k for k in saved if k.endswith(("relative_position_index", "attn_mask"))]
    assert buffers == expected["buffers"]
    for key in buffers:
        assert saved[key].dtype == weights[key].dtype and torch.equal(saved[key], weights[key]), key
    if kind == "swinir":
        for key in (k for k in saved if k.endswith("attn_mask")):
            assert int(key.split(".blocks.")[1].split(".")[0]) % 2 == 1, f"{key}: a mask in an unshifted block"


def _tensor_recoverable(config):
    """What the tensors can tell about a config: an unshifted SwinIR (img_size <= window, where the constructor
    sets the window to img_size, or no odd block) is the same network whatever the window or img_size says, and
    the MLP ratio is known only through int(embed_dim·mlp_ratio)."""
    if not isinstance(config, SwinIRConfig):
        return config
    tokens = config.img_size // config.patch_size
    window = min(config.window_size, tokens)
    img_size = tokens if window < tokens and any(d > 1 for d in config.depths) else window
    hidden = int(config.embed_dim * config.mlp_ratio)
    return dataclasses.replace(config, window_size=window, img_size=img_size, mlp_ratio=hidden / config.embed_dim)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", CASES)
def test_config_from_tensors(name: str, kind: str) -> None:
    weights = case(name).weights(kind)
    assert detect_cleaner(weights) == kind
    inferred = infer_cleaner_config(kind, weights)
    assert inferred == _tensor_recoverable(_config(name, kind))
    loaded_kind, module = load_cleaner({"state_dict": {f"module.{k}": v for k, v in weights.items()}})
    assert loaded_kind == kind and module.config == inferred and not module.training


@pytest.mark.parametrize("kind", KINDS)
def test_released_layout(kind: str) -> None:
    """The released configurations build the released keys, shapes and parameter count (on the meta device), and
    the configuration is read back from those shapes alone."""
    released = case(CASES[0]).released_layout[kind]
    config = CLEANERS[kind][0](**released["kwargs"])
    layout = build_layout(kind, config)
    assert [[k, list(v.shape)] for k, v in layout.items()] == released["keys"]
    assert len(layout) == released["n_keys"]
    buffers = set(released["buffers"])
    assert sum(v.numel() for k, v in layout.items() if k not in buffers) == released["n_params"]
    fake = {k: torch.empty(shape, device="meta") for k, shape in released["keys"]}
    assert detect_cleaner(fake) == kind
    assert infer_cleaner_config(kind, fake) == config


def _one_line_error(kind: str, sd: dict[str, torch.Tensor]) -> str:
    with pytest.raises(CheckpointError) as info:
        infer_cleaner_config(kind, sd)
    message = str(info.value)
    assert message and "\n" not in message
    return message


@pytest.mark.parametrize("kind", KINDS)
def test_wrong_state_dict_is_a_one_line_checkpoint_error(kind: str) -> None:
    c = case(CASES[0])
    weights = c.weights(kind)
    keys = c.meta["state_dicts"][kind]["keys_in_module_order"]
    assert "missing" in _one_line_error(kind, {k: weights[k] for k in keys[:-1]})  # a truncated file
    assert "unexpected" in _one_line_error(kind, {**weights, "extra.weight": torch.zeros(1)})
    resized = {**weights, keys[-1]: torch.zeros(7, *weights[keys[-1]].shape)}
    assert "shape" in _one_line_error(kind, resized)
    assert "not a tensor" in _one_line_error(kind, {**weights, "epoch": 3})
    flat = {k: v.flatten() if v.dim() > 1 else v for k, v in weights.items()}  # every tensor 1-D: no layer shape
    _one_line_error(kind, flat)
    other = next(k for k in KINDS if k != kind)
    _one_line_error(other, weights)  # a file of another cleaner kind
    assert detect_cleaner({"foo.weight": torch.zeros(1)}) is None
    with pytest.raises(CheckpointError):
        load_cleaner({"foo.weight": torch.zeros(1)})


def test_unsupported_swinir_options_are_one_line_config_errors() -> None:
    for change in ({"upsampler": "pixelshuffle"}, {"resi_connection": "3conv"}, {"unshuffle_scale": 4},
                   {"num_heads": (7,) * 8}):
        with pytest.raises(ConfigError) as info:
            dataclasses.replace(SwinIRConfig(), **change)
        assert "\n" not in str(info.value)


OTHER_CONFIGS = (
    ("swinir", {"img_size": 16, "embed_dim": 24, "depths": (1, 3), "num_heads": (1, 4), "window_size": 4,
                "mlp_ratio": 1.5, "sf": 8, "unshuffle_scale": 8}, (1, 3, 128, 96)),
    ("swinir", {"img_size": 4, "embed_dim": 8, "depths": (2,), "num_heads": (2,), "window_size": 8,
                "mlp_ratio": 2.0, "sf": 4, "unshuffle_scale": 4}, (1, 3, 32, 48)),
    ("swinir", {"img_size": 8, "embed_dim": 8, "depths": (2,), "num_heads": (2,), "window_size": 4,
                "sf": 4, "unshuffle": False, "unshuffle_scale": None}, (1, 3, 8, 12)),
    ("bsrnet", {"nf": 8, "nb": 1, "gc": 4, "sf": 2}, (1, 3, 6, 10)),
    ("scunet", {"config": (1, 2, 1, 3, 1, 2, 1), "dim": 128}, (1, 3, 40, 70)),
)


@pytest.mark.parametrize(("kind", "fields", "shape"), OTHER_CONFIGS)
def test_other_configs_round_trip(kind: str, fields: dict, shape: tuple[int, ...]) -> None:
    """Configurations no case covers (held-out-like depths, heads, windows, factors) build, run, and are read back
    from their own state_dict; img_size <= window sets the window to img_size and removes every shift."""
    config = CLEANERS[kind][0](**fields)
    module = CLEANERS[kind][1](config).eval()
    assert infer_cleaner_config(kind, module.state_dict()) == _tensor_recoverable(config)
    with torch.no_grad():
        out = module(torch.rand(shape))
    unshuffled = kind == "swinir" and config.unshuffle
    scale = 1 if kind == "scunet" or unshuffled else config.sf
    assert out.shape == (shape[0], 3, shape[2] * scale, shape[3] * scale) and torch.isfinite(out).all()
    if kind == "swinir" and config.img_size <= config.window_size:
        assert not any(k.endswith("attn_mask") for k in module.state_dict())
