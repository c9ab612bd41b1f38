"""Fleet state owned by the proxy: in-flight accounting, health, EWMA latencies, engine metrics.

``FleetState`` is mutable and lives on the event loop; decisions only ever see
its immutable ``FleetSnapshot``.
"""

import core.native  # noqa: F401  (first: keeps a stale compiled build out, docs/compiled.md)
from state.fleet import FleetState
from state.inflight import InFlightGuard

__all__ = ["FleetState", "InFlightGuard"]
