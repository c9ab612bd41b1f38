"""``consistent_hash`` scorer: a session sticks to one backend, with bounded load.

Rule (consistent hashing with bounded loads, Mirrokni, Thorup & Zadimoghaddam,
SODA 2018; the load-factor override of SMG ``prefix_hash``): every candidate
owns ``vnodes`` points on a 64-bit ring (BLAKE2b of ``"<backend>#<i>"``, so
all proxy replicas build the same ring). The session key (``x-session-id`` or
the body's ``user``; ``RequestFeatures.session_key``) hashes to a point; walking
the ring clockwise gives an order of backends. A backend is *full* when its
in-flight requests ``q >= ceil(load_factor · (Σq + 1) / n)``; full backends
move behind the others, keeping ring order. Score of the i-th backend in
that order: ``1 - i/n``, so the picker takes the first non-full backend on
the ring and the ring order gives the retry fallbacks.

Adding or removing a backend moves only the sessions whose ring segment
changed. Parameters: ``vnodes`` (default 100), ``load_factor`` c (default
1.25; each backend takes at most c times the mean load). Scores every candidate
1 (all equal, so the pick is random) when the request has no session key.

The ring is a pure function of the candidate set; it is memoised per set (a
few sets at most: the fleet changes rarely).
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Mapping, Sequence

from core.types import BackendId, BackendView
from policies.context import RouteContext
from policies.params import ConsistentHashParams
from policies.registry import BuildContext, register_plugin

TYPE = "consistent_hash"
_MAX_CACHED_RINGS = 8


def point(key: str) -> int:
    """A stable 64-bit ring position for ``key`` (same in every process)."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "big")


class _Ring:
    __slots__ = ("owners", "points")

    def __init__(self, backend_ids: Sequence[BackendId], vnodes: int) -> None:
        entries = sorted((point(f"{b}#{i}"), b) for b in backend_ids for i in range(vnodes))
        self.points = [p for p, _ in entries]
        self.owners = [b for _, b in entries]

    def walk(self, key_point: int, wanted: int) -> list[BackendId]:
        """Distinct backends clockwise from ``key_point``, until ``wanted`` are found."""
        start = bisect.bisect_right(self.points, key_point)
        size = len(self.owners)
        seen: dict[BackendId, None] = {}
        for step in range(size):
            owner = self.owners[(start + step) % size]
            if owner not in seen:
                seen[owner] = None
                if len(seen) == wanted:
                    break
        return list(seen)


class ConsistentHashScorer:
    consumes = ("session_key", "in_flight_requests")

    def __init__(self, params: ConsistentHashParams) -> None:
        self.name = TYPE
        self._vnodes = params.vnodes
        self._load_factor = params.load_factor
        self._rings: dict[tuple[BackendId, ...], _Ring] = {}

    def _ring(self, ids: tuple[BackendId, ...]) -> _Ring:
        ring = self._rings.get(ids)
        if ring is None:
            if len(self._rings) >= _MAX_CACHED_RINGS:
                self._rings.clear()
            ring = self._rings[ids] = _Ring(ids, self._vnodes)
        return ring

    def order(self, session_key: str, candidates: Sequence[BackendView]) -> list[BackendId]:
        """Candidates in the order the rule prefers them for ``session_key``."""
        ids = tuple(sorted(v.backend_id for v in candidates))
        walk = self._ring(ids).walk(point(session_key), len(ids))
        load = {v.backend_id: v.in_flight_requests for v in candidates}
        capacity = math.ceil(self._load_factor * (sum(load.values()) + 1) / len(ids))
        open_ = [b for b in walk if load[b] < capacity]
        full = [b for b in walk if load[b] >= capacity]
        return open_ + full

    def score(self, ctx: RouteContext, candidates: Sequence[BackendView]) -> Mapping[BackendId, float]:
        key = ctx.features.session_key
        if not key:
            return dict.fromkeys((v.backend_id for v in candidates), 1.0)
        ordered = self.order(key, candidates)
        n = len(ordered)
        return {backend_id: 1.0 - i / n for i, backend_id in enumerate(ordered)}


@register_plugin("scorer", TYPE, ConsistentHashParams, "session affinity on a hash ring with bounded load")
def _build(params: ConsistentHashParams, ctx: BuildContext) -> ConsistentHashScorer:
    return ConsistentHashScorer(params)
