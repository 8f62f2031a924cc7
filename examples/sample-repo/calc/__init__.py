"""A tiny statistics library: the factory's example repository."""

from calc.stats import mean, median

__all__ = ["mean", "median"]
