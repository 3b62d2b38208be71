"""argparse value types of `python -m samplers` and `python -m training`: a bad value becomes a
one-line usage error (exit status 2) before anything loads."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def number(kind: type = float, *, positive: bool = False) -> Callable[[str], float | int]:
    """A parser of finite `kind` values (int or float); with `positive`, only values > 0."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            what = "a whole number" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if positive and value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    return parse


finite_float = number(float)
positive_int = number(int, positive=True)
positive_float = number(float, positive=True)
