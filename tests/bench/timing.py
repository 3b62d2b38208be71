"""Warm-up, interleaved repeats and medians."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

# A unit of work; it may return its own measured seconds (e.g. a trainer's logged interval),
# which then replaces the wall time of the call.
Work = Callable[[], "float | None"]


@dataclass(frozen=True)
class Timing:
    """Seconds of each repeat of one unit of work (after warm-up)."""

    seconds: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def spread(self) -> float:
        """(max - min) / median: how noisy the repeats were."""
        return (max(self.seconds) - min(self.seconds)) / self.median


def run_once(work: Work) -> float:
    """Seconds of one call: the call's own figure when it returns one, else wall time."""
    start = time.perf_counter()
    own = work()
    return own if own is not None else time.perf_counter() - start


def interleaved(works: Mapping[str, Work], *, repeats: int, warmup: int = 1) -> dict[str, Timing]:
    """Time each work `repeats` times, round-robin (A B C A B C ...), after `warmup` rounds.

    Round-robin order makes slow drifts of the machine's load affect every variant equally, so
    ratios between variants stay meaningful where absolute times do not.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        for work in works.values():
            work()
    samples: dict[str, list[float]] = {name: [] for name in works}
    for _ in range(repeats):
        for name, work in works.items():
            samples[name].append(run_once(work))
    return {name: Timing(tuple(s)) for name, s in samples.items()}
