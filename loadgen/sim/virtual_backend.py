"""A backend of the virtual-time fleet: its engine, its faults and what a metrics scrape would return.

Faults in virtual time (``loadgen.sim.faults``): ``slowdown`` and ``hang`` act on the engine;
``crashed`` drops every request and empties the KV cache (``SimEngine.drop_all``) and, like
``refuse_connections``, makes new connections fail; ``error_rate`` and ``drop_stream_rate`` are drawn
per request from this backend's seeded RNGs. A scrape of a crashed, refusing or hung backend fails.
"""

from __future__ import annotations

import random

from core.types import EngineMetrics
from loadgen.sim.engine import SimEngine
from loadgen.sim.faults import FaultPatch, FaultSpec
from loadgen.sim.fleet_config import BackendSpec
from loadgen.sim.request import SimRequest


class VirtualBackend:
    __slots__ = ("drop_rng", "engine", "error_rng", "faults", "max_model_len", "models", "name", "output_rng")

    def __init__(self, spec: BackendSpec) -> None:
        self.name = spec.name
        self.engine = SimEngine(spec.profile)
        self.models = spec.models
        self.max_model_len = spec.profile.scheduler.max_model_len
        self.output_rng = random.Random(spec.seed)
        self.error_rng = random.Random(spec.seed + 1)
        self.drop_rng = random.Random(spec.seed + 2)
        self.faults = FaultSpec()

    @property
    def reachable(self) -> bool:
        return not (self.faults.crashed or self.faults.refuse_connections)

    @property
    def answers(self) -> bool:
        """Whether health checks and scrapes get an answer."""
        return self.reachable and not self.faults.hang

    def apply(self, patch: FaultPatch, now_s: float) -> list[SimRequest]:
        """Change faults; returns the requests a crash lost."""
        old, new = self.faults, self.faults.apply(patch)
        self.faults = new
        if new.slowdown != old.slowdown:
            self.engine.set_slowdown(new.slowdown, now_s)
        if new.hang != old.hang:
            self.engine.set_paused(new.hang, now_s)
        if new.crashed and not old.crashed:
            return self.engine.drop_all(now_s)
        return []

    def scrape(self, now_s: float) -> EngineMetrics | None:
        if not self.answers:
            return None
        self.engine.advance_until(now_s)
        stats = self.engine.stats()
        return EngineMetrics(
            engine="vllm",
            scraped_at_s=now_s,
            running=stats.running,
            waiting=stats.waiting,
            kv_usage_frac=stats.kv_usage_frac,
            kv_capacity_tokens=stats.num_blocks * 16,
            prefix_cache_queries_tokens_total=float(stats.prefix_cache_queries_tokens),
            prefix_cache_hits_tokens_total=float(stats.prefix_cache_hits_tokens),
            preemptions_total=float(stats.preemptions_total),
        )
