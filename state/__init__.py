"""Fleet state owned by the proxy: in-flight accounting, health, EWMA latencies, engine metrics.

``FleetState`` is mutable and lives on the event loop; decisions only ever see
its immutable ``FleetSnapshot``.
"""

from state.fleet import FleetState
from state.inflight import InFlightGuard

__all__ = ["FleetState", "InFlightGuard"]
