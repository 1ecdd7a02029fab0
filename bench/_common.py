"""Helpers shared by the benchmarks: repeated timing and a plain report."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable


@dataclass
class Timing:
    """Wall-clock seconds of each repetition of one variant."""

    name: str
    seconds: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def spread(self) -> str:
        return f"{min(self.seconds):.3f}-{max(self.seconds):.3f}s"


def time_interleaved(
    variants: dict[str, Callable[[], None]],
    repeat: int,
    before_each: Callable[[str], None] | None = None,
) -> dict[str, Timing]:
    """Time every variant ``repeat`` times, interleaving them so drift hits all alike."""
    timings = {name: Timing(name, []) for name in variants}
    for _ in range(repeat):
        for name, run in variants.items():
            if before_each is not None:
                before_each(name)
            started = time.perf_counter()
            run()
            timings[name].seconds.append(time.perf_counter() - started)
    return timings


def verdict(ratio: float, target: float, at_most: bool = False) -> str:
    """``PASS``/``MISS`` against a target ratio."""
    met = ratio <= target if at_most else ratio >= target
    return ("PASS" if met else "MISS") + f" (target {'<=' if at_most else '>='} {target}x)"
