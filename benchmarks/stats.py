"""Small statistics for benchmark samples: medians, percentiles, a least-squares line, timing loops."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass


def median(samples: Sequence[float]) -> float:
    if not samples:
        raise ValueError("median of no samples")
    return float(statistics.median(samples))


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation between closest ranks (numpy's default)."""
    if not samples:
        raise ValueError("percentile of no samples")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    ordered = sorted(samples)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True, slots=True)
class LinearFit:
    """y = intercept + slope·x, with the coefficient of determination."""

    slope: float
    intercept: float
    r_squared: float


def linear_fit(xs: Sequence[float], ys: Sequence[float]) -> LinearFit:
    """Ordinary least squares over the points (at least two distinct x)."""
    if len(xs) != len(ys) or len(xs) < 2:
        raise ValueError("a fit needs at least two (x, y) points")
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mean_x) ** 2 for x in xs)
    if sxx == 0:
        raise ValueError("a fit needs at least two distinct x values")
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sxx
    intercept = mean_y - slope * mean_x
    ss_tot = sum((y - mean_y) ** 2 for y in ys)
    ss_res = sum((y - (intercept + slope * x)) ** 2 for x, y in zip(xs, ys, strict=True))
    return LinearFit(slope=slope, intercept=intercept, r_squared=1.0 if ss_tot == 0 else 1 - ss_res / ss_tot)


def repeat(
    action: Callable[[], object],
    *,
    min_repeats: int,
    max_repeats: int,
    min_seconds: float,
    timer: Callable[[], float] = time.perf_counter,
) -> list[float]:
    """Time ``action`` (seconds per call): at least ``min_repeats`` calls, then more until the calls
    took ``min_seconds`` in all or ``max_repeats`` were made."""
    if not 1 <= min_repeats <= max_repeats:
        raise ValueError(f"need 1 <= min_repeats <= max_repeats, got {min_repeats}, {max_repeats}")
    samples: list[float] = []
    while len(samples) < max_repeats and (len(samples) < min_repeats or sum(samples) < min_seconds):
        started = timer()
        action()
        samples.append(timer() - started)
    return samples
