"""Descriptive statistics over sequences of numbers."""

from collections.abc import Sequence


def mean(values: Sequence[float]) -> float:
    """Arithmetic mean of ``values``."""
    return sum(values) / len(values)


def median(values: Sequence[float]) -> float:
    """Middle value of ``values`` (mean of the two middle values for an even count)."""
    if not values:
        raise ValueError("median of an empty sequence")
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2
