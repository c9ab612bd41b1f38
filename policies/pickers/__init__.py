"""Pipeline pickers; importing this package registers each by its config ``type``."""

from policies.pickers import max_score, p2c, random_order, round_robin, softmax

__all__ = ["max_score", "p2c", "random_order", "round_robin", "softmax"]
