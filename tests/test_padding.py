"""Padding to the size multiple and cropping back: any size, including 1×1 and odd sizes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from diffir.nn.padding import crop_to, pad_to_multiple, padded_size, reflect_indices

sizes = st.integers(min_value=1, max_value=70)
multiples = st.sampled_from([1, 2, 3, 4, 8, 16, 32])


def _mirrored(x: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    """Reference for the end padding along ``dim``: the image, then its mirror image without repeating the edge
    pixel, then the image again without its first pixel, ... (a 1-pixel image is repeated), cut to ``length``."""
    n = x.shape[dim]
    if n == 1:
        return torch.cat([x] * length, dim=dim)
    back = x.flip(dim).narrow(dim, 1, n - 1)  # edge not repeated, like F.pad(mode="reflect")
    forth = x.narrow(dim, 1, n - 1)
    parts, total, i = [x], n, 0
    while total < length:
        parts.append(back if i % 2 == 0 else forth)
        total, i = total + n - 1, i + 1
    return torch.cat(parts, dim=dim).narrow(dim, 0, length)


@settings(max_examples=150, deadline=None)
@given(h=sizes, w=sizes, multiple=multiples, channels=st.sampled_from([1, 3, 4]))
def test_padding_reaches_the_next_multiple_mirrors_the_border_and_crops_back(
    h: int, w: int, multiple: int, channels: int
) -> None:
    x = torch.rand(1, channels, h, w)
    padded = pad_to_multiple(x, multiple)
    # The next multiple: divisible, not smaller than the image, less than one multiple more (1: no padding).
    for size, got in ((h, padded.shape[-2]), (w, padded.shape[-1])):
        assert got % multiple == 0 and size <= got < size + multiple
    # Reflected at the bottom/right as the official scripts pad, bouncing on when the pad exceeds the image.
    expected = _mirrored(_mirrored(x, padded.shape[-2], -2), padded.shape[-1], -1)
    assert torch.equal(padded, expected)
    assert torch.equal(crop_to(padded, h, w), x)


@settings(max_examples=150, deadline=None)
@given(h=sizes, w=sizes, multiple=st.sampled_from([2, 4, 8, 16, 32]))
def test_padding_equals_torch_reflect_whenever_that_is_defined(h: int, w: int, multiple: int) -> None:
    x = torch.rand(1, 2, h, w)
    ph, pw = padded_size(h, multiple) - h, padded_size(w, multiple) - w
    assume(ph + pw > 0 and ph < h and pw < w)  # torch's reflect needs pad < size; a zero pad compares x with x
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
