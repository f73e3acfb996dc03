"""Fractions as people write them on command lines and in tables: ``"1/8"`` <-> 0.125."""

from __future__ import annotations

import math


def parse_fraction(text: str) -> float:
    """``"1/8"`` or ``"0.125"`` -> 0.125; a clear ``ValueError`` for anything else."""
    item = text.strip()
    try:
        if "/" in item:
            num, den = item.split("/")
            return float(num) / float(den)
        return float(item)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"expected a number or a fraction such as 1/8, got {text!r}") from None


def parse_fractions(text: str) -> list[float]:
    """A comma-separated list of :func:`parse_fraction` values (empty items are skipped)."""
    return [parse_fraction(item) for item in text.split(",") if item.strip()]


def format_fraction(value: float) -> str:
    """0.125 -> ``"1/8"``; values that are not a unit fraction keep their decimal form (0 -> ``"0"``)."""
    if value == 0:
        return "0"
    inverse = 1 / value
    return f"1/{round(inverse)}" if math.isclose(inverse, round(inverse)) and value < 1 else f"{value:g}"
