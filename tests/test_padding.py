"""Padding to the size multiple and cropping back: any size, including 1×1 and odd sizes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from diffir.pipelines.padding import crop_to, pad_to_multiple, padded_size, reflect_indices

sizes = st.integers(min_value=1, max_value=70)
multiples = st.sampled_from([1, 4, 8, 16, 32])


@settings(max_examples=150, deadline=None)
@given(h=sizes, w=sizes, multiple=multiples, channels=st.sampled_from([1, 3, 4]))
def test_pad_then_crop_is_exact_at_any_size(h: int, w: int, multiple: int, channels: int) -> None:
    x = torch.rand(1, channels, h, w)
    padded = pad_to_multiple(x, multiple)
    assert padded.shape[-2] % multiple == 0 and padded.shape[-1] % multiple == 0
    assert padded.shape[-2] - h < multiple and padded.shape[-1] - w < multiple
    assert torch.equal(crop_to(padded, h, w), x)


@settings(max_examples=150, deadline=None)
@given(h=sizes, w=sizes, multiple=multiples)
def test_padding_equals_torch_reflect_whenever_that_is_defined(h: int, w: int, multiple: int) -> None:
    x = torch.rand(1, 2, h, w)
    ph, pw = padded_size(h, multiple) - h, padded_size(w, multiple) - w
    if ph >= h or pw >= w:  # torch's reflect needs pad < size; ours keeps bouncing between the edges
        return
    assert torch.equal(pad_to_multiple(x, multiple), F.pad(x, (0, pw, 0, ph), mode="reflect"))


@settings(max_examples=100, deadline=None)
@given(size=sizes, extra=st.integers(min_value=0, max_value=200))
def test_reflect_indices_stay_inside_and_never_jump(size: int, extra: int) -> None:
    idx = reflect_indices(size, size + extra)
    assert idx.min() >= 0 and idx.max() < size
    assert torch.equal(idx[:size], torch.arange(size))
    # A reflection moves by exactly one pixel per step (or stays, for a 1-pixel image): no seams.
    steps = idx.diff().abs()
    assert bool((steps <= 1).all())


def test_one_pixel_image_is_replicated() -> None:
    x = torch.tensor([[[[0.25]]]])
    padded = pad_to_multiple(x, 8)
    assert padded.shape == (1, 1, 8, 8)
    assert bool((padded == 0.25).all())


def test_scaled_crop_after_super_resolution() -> None:
    x = torch.rand(1, 3, 5, 7)
    up = F.interpolate(pad_to_multiple(x, 8), scale_factor=4, mode="nearest")
    assert torch.equal(crop_to(up, 20, 28), F.interpolate(x, scale_factor=4, mode="nearest"))
