"""Output-length and per-backend latency predictors (pure: no network, no I/O on the request path).

The decision engine holds one ``Predictor`` (``predictors.facade``); the rest
is its parts: ``features`` (the one feature function), ``output_length`` (the
serving model), ``online`` (per-key residual correction), ``latency``
(per-backend TTFT/TPOT), ``persistence`` (model files), and the offline-only
``training_data``, ``length_training`` and ``evaluation``.
"""

import core.native  # noqa: F401  (first: keeps a stale compiled build out, docs/compiled.md)
from predictors.facade import Predictor
from predictors.persistence import ModelFileError

__all__ = ["ModelFileError", "Predictor"]
