"""Baseline routing policies, by their config names (formulas in shared/reference/formulas.md §2)."""

from policies.baselines import presets

__all__ = ["presets"]
