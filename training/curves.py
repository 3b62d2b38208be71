"""The one smoothing of logged curves, so the course figures and the dashboard draw the same
line."""

from __future__ import annotations

from collections.abc import Sequence

SMOOTHING = 0.6  # the default weight: figures' loss.png and the dashboard's curves


def smooth(values: Sequence[float], weight: float = SMOOTHING) -> list[float]:
    """Debiased exponential moving average (TensorBoard's smoothing) of `values`; weight in
    [0, 1), 0 = the raw values."""
    out, avg = [], 0.0
    for i, v in enumerate(values, 1):
        avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight**i) if weight else v)
    return out
