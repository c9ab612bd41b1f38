"""The decision engine the proxy and the simulator both call."""

import core.native  # noqa: F401  (first: keeps a stale compiled build out, docs/compiled.md)
