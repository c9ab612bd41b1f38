"""Min-max normalisation shared by scorers that turn a cost or load into a score in [0, 1]."""

from __future__ import annotations

from collections.abc import Mapping

from core.types import BackendId


def lower_is_better(values: Mapping[BackendId, float]) -> dict[BackendId, float]:
    """``(max - v) / (max - min)``: the lowest value scores 1, the highest 0; all equal -> all 1."""
    if not values:
        return {}
    high = max(values.values())
    low = min(values.values())
    span = high - low
    if span <= 0.0:
        return dict.fromkeys(values, 1.0)
    return {key: (high - value) / span for key, value in values.items()}


def higher_is_better(values: Mapping[BackendId, float]) -> dict[BackendId, float]:
    """``(v - min) / (max - min)``: the highest value scores 1; all equal -> all 1."""
    if not values:
        return {}
    high = max(values.values())
    low = min(values.values())
    span = high - low
    if span <= 0.0:
        return dict.fromkeys(values, 1.0)
    return {key: (value - low) / span for key, value in values.items()}
