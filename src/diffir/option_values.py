"""Parsers of option values given as text (one per kind of value): the CLI's argparse types, and the web app's
request fields, so both accept and refuse the same values with the same words."""

from __future__ import annotations

import argparse
import math

from diffir.pipelines.limits import MAX_OUTSCALE, MAX_SEED


def _int_or_auto(value: str, minimum: int, expected: str) -> int | str:
    if value == "auto":
        return value
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected} or 'auto', got {value!r}") from None
    if number < minimum:
        raise argparse.ArgumentTypeError(f"{expected} must be >= {minimum}, got {value!r}")
    return number


def tile_size(value: str) -> int | str:
    """``--tile``: a size in input pixels, 0 (whole image) or auto."""
    return _int_or_auto(value, 0, "a tile size in pixels (0 = whole image)")


def thread_count(value: str) -> int | str:
    """``--threads``: a positive count or auto."""
    return _int_or_auto(value, 1, "a number of threads")


# Range checks happen here, while the value is still the text the user typed ("1e6", not 1000000.0), so the
# one-line argparse error quotes it as given.
def _whole(value: str, expected: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {value!r}") from None


def _finite(value: str, expected: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {value!r}")
    return number


def scale_factor(value: str) -> float:
    """``--outscale``: a finite scale in (0, MAX_OUTSCALE]."""
    expected = f"a finite scale above 0 and at most {MAX_OUTSCALE:g} (e.g. 2 or 3.5)"
    number = _finite(value, expected)
    if not 0 < number <= MAX_OUTSCALE:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {value!r}")
    return number


def threshold(value: str) -> float:
    """``--mask-threshold``: a finite number strictly between 0 and 1."""
    expected = "a number between 0 and 1 (exclusive), e.g. 0.5"
    number = _finite(value, expected)
    if not 0 < number < 1:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {value!r}")
    return number


def seed(value: str) -> int | None:
    """``--seed``: a whole number up to 2**64-1; negative or ``random``: fresh noise (None)."""
    if value.strip().lower() == "random":
        return None
    expected = f"a whole number up to 2**64-1 = {MAX_SEED} (negative or 'random': fresh noise)"
    number = _whole(value, expected)
    if number > MAX_SEED:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {value!r}")
    return None if number < 0 else number


def pixel_limit(value: str) -> int | None:
    """``--max-pixels`` and the like: a number of pixels; 0 or ``none``: no limit (None)."""
    if value.strip().lower() == "none":
        return None
    expected = "a number of pixels (0 or 'none': no limit)"
    number = _whole(value, expected)
    if number < 0:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {value!r}")
    return number or None


def whole_number(minimum: int, maximum: int | None = None, what: str = "a whole number"):
    """An argparse type: a whole number in [minimum, maximum] (``what`` names it in the error)."""
    expected = f"{what} from {minimum} to {maximum}" if maximum is not None else f"{what} of at least {minimum}"

    def parse(value: str) -> int:
        number = _whole(value, expected)
        if number < minimum or (maximum is not None and number > maximum):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value!r}")
        return number

    return parse
