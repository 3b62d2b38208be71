"""argparse value types of `python -m samplers` and `python -m training`: a bad value becomes a
one-line usage error (exit status 2) before anything loads."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

MAX_SEED = 2**63 - 1  # the largest seed a torch.Generator takes (a signed 64-bit integer)


def number(
    kind: type = float,
    *,
    positive: bool = False,
    low: float | None = None,
    high: float | None = None,
) -> Callable[[str], float | int]:
    """A parser of finite `kind` values (int or float); with `positive`, only values > 0; with
    `low` / `high`, only values in [low, high] (the bounds named in the error)."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            what = "a whole number" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if positive and value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high:,}, got {text}")
        if low is not None and value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low:,}, got {text}")
        return value

    return parse


finite_float = number(float)
positive_int = number(int, positive=True)
positive_float = number(float, positive=True)
seed = number(int, low=0, high=MAX_SEED)


def at_most(high: int) -> Callable[[str], float | int]:
    """A parser of whole numbers from 1 to `high` (a size option with its limit)."""
    return number(int, positive=True, high=high)
