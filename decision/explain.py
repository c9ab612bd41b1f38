"""A bounded ring buffer of recent routing decisions, for ``/debug/decisions``.

Why it is cheap on the hot path: ``append`` stores a small record in a
``deque(maxlen=capacity)``: references to objects the decision already built
(the frozen ``RoutingDecision`` and the prefix-match mapping) and the five
request fields a record shows; nothing is formatted until someone reads the
buffer. ``recent()`` renders plain, JSON-ready dicts (the router serialises
them with orjson). Memory is bounded by ``capacity`` entries; the oldest entry
is dropped first.

Why not the whole ``RequestFeatures``: the log would then hold every request's
features (its prefix-hash tuple of ~100 int objects, its last user message)
for ``capacity`` requests after it finished, so each ``append`` freed a request
from ~1,000 requests ago, cold in the cache (several µs of the route stage at
64 backends); now they are freed when the request itself lets go of them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

from core.types import BackendId, RequestFeatures, RoutingDecision


class _Record:
    """One decision as the log keeps it (a plain class: compiled, a native object with typed fields)."""

    __slots__ = ("at_s", "decision", "matched", "model", "prompt_tokens", "request_id", "route", "tenant")

    def __init__(
        self,
        at_s: float,
        features: RequestFeatures,
        decision: RoutingDecision,
        matched: Mapping[BackendId, int],
    ) -> None:
        self.at_s = at_s
        self.request_id = features.request_id
        self.route = features.route
        self.model = features.model
        self.tenant = features.tenant
        self.prompt_tokens = features.prompt_tokens
        self.decision = decision
        self.matched = matched


class DecisionLog:
    __slots__ = ("_entries",)

    def __init__(self, capacity: int = 1_024) -> None:
        if capacity < 1:
            raise ValueError("capacity must be positive")
        self._entries: deque[_Record] = deque(maxlen=capacity)

    @property
    def capacity(self) -> int:
        maxlen = self._entries.maxlen
        return maxlen if maxlen is not None else 0

    def __len__(self) -> int:
        return len(self._entries)

    def append(
        self,
        at_s: float,
        features: RequestFeatures,
        decision: RoutingDecision,
        prefix_matched_tokens: Mapping[BackendId, int],
    ) -> None:
        self._entries.append(_Record(at_s, features, decision, prefix_matched_tokens))

    def recent(
        self, limit: int | None = None, request_id: str | None = None, top_n: int = 5
    ) -> list[dict[str, Any]]:
        """Newest first; at most ``limit`` records, optionally only ``request_id``'s.

        ``top_n`` caps how many ranked backends each record lists with their
        per-scorer scores (a 64-backend fleet would otherwise print 64 rows).
        """
        out: list[dict[str, Any]] = []
        for record in reversed(self._entries):
            if request_id is not None and record.request_id != request_id:
                continue
            out.append(_render(record, top_n))
            if limit is not None and len(out) >= limit:
                break
        return out


def render(
    at_s: float,
    features: RequestFeatures,
    decision: RoutingDecision,
    matched: Mapping[BackendId, int],
    top_n: int = 5,
) -> dict[str, Any]:
    """One decision as a JSON-ready dict: who was chosen, why, and who was filtered out."""
    return _render(_Record(at_s, features, decision, matched), top_n)


def _render(record: _Record, top_n: int) -> dict[str, Any]:
    decision = record.decision
    matched = record.matched
    shown = decision.ranked[:top_n]
    return {
        "at_s": record.at_s,
        "request_id": record.request_id,
        "route": record.route,
        "model": record.model,
        "tenant": record.tenant,
        "prompt_tokens": record.prompt_tokens,
        "policy": decision.policy,
        "chosen": decision.chosen,
        "reason": decision.reason,
        "predicted_ttft_ms": decision.predicted_ttft_ms,
        "predicted_e2e_ms": decision.predicted_e2e_ms,
        "predicted_output_tokens": decision.predicted_output_tokens,
        "candidates": len(decision.ranked),
        "ranked": [
            {
                "backend": backend_id,
                "prefix_matched_tokens": matched.get(backend_id, 0),
                "scores": {name: scores.get(backend_id) for name, scores in decision.scores.items()},
            }
            for backend_id in shown
        ],
        "removed": dict(decision.removed),
    }
