"""Baseline routing policies, by their config names (formulas in shared/reference/formulas.md)."""

from policies.baselines import round_robin, session_affinity

__all__ = ["round_robin", "session_affinity"]
