"""Pure routing decisions over an immutable fleet snapshot.

Importing this package registers every built-in policy and pipeline plugin by
its config name. Never imports aiohttp, redis or anything that does I/O.
"""

import core.native  # noqa: F401  (first: keeps a stale compiled build out, docs/compiled.md)
from policies import baselines, filters, pickers, pipeline, predictive, scorers
from policies.registry import build_policy, registered

__all__ = [
    "baselines",
    "build_policy",
    "filters",
    "pickers",
    "pipeline",
    "predictive",
    "registered",
    "scorers",
]
