"""Pure routing and admission decisions over an immutable fleet snapshot.

Importing this package registers every built-in policy by its config name.
Never imports aiohttp, redis or anything that does I/O.
"""

from policies import baselines
from policies.registry import build_policy, registered

__all__ = ["baselines", "build_policy", "registered"]
