"""Pipeline filters; importing this package registers each by its config ``type``."""

from policies.filters import imbalance_guard, max_concurrency, slo_headroom, subset

__all__ = ["imbalance_guard", "max_concurrency", "slo_headroom", "subset"]
