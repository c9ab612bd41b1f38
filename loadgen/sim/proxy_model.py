"""The simulated proxy's view of the fleet: its own accounting plus polled, possibly stale, engine metrics.

In virtual time there is no HTTP, but decisions must see what the real proxy would see, no more:

- Sluice's own accounting is exact and current: requests in flight per backend, those still waiting
  for their first byte, their prompt tokens, EWMAs of observed TTFT and TPOT (alpha 0.2).
- Engine state (running, waiting, KV usage, prefix-cache hit rate, KV capacity) is only known from
  the last metrics poll, every ``metrics_poll.interval_s``; ``metrics_age_s`` and ``metrics_stale``
  (older than ``stale_after_s``) say how old it is. The hit rate is computed from the deltas of
  vLLM's prefix-cache token counters between two polls (``None`` when no token was queried), as
  the real collector does from ``vllm:prefix_cache_{hits,queries}_total``.
- Health follows active checks (``health.interval_s``; DOWN after ``unhealthy_after`` failures,
  READY after ``healthy_after`` passes); a crashed, refusing or hung backend fails them.

This mirrors ``state/`` of the real proxy; when that lands the virtual fleet should use it directly.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.config import SluiceConfig
from core.types import BackendView, EngineMetrics, FleetSnapshot, Health

EWMA_ALPHA = 0.2


@dataclass(slots=True)
class BackendAccount:
    backend_id: str
    models: frozenset[str]
    gpu_class: str
    weight: float
    max_concurrency: int | None
    health: Health = Health.READY
    in_flight: int = 0
    awaiting_first_byte: int = 0
    in_flight_prompt_tokens: int = 0
    in_flight_predicted_decode_tokens: float = 0.0
    ewma_ttft_ms: float | None = None
    ewma_tpot_ms: float | None = None
    metrics: EngineMetrics | None = None
    prefix_hit_rate: float | None = None
    failed_checks: int = 0
    passed_checks: int = 0


def _delta(new: float | None, old: float | None) -> float:
    return (new or 0.0) - (old or 0.0)


def _ewma(old: float | None, sample: float) -> float:
    return sample if old is None else old + EWMA_ALPHA * (sample - old)


class ProxyModel:
    def __init__(self, config: SluiceConfig) -> None:
        self.stale_after_s = config.metrics_poll.stale_after_s
        self.unhealthy_after = config.health.unhealthy_after
        self.healthy_after = config.health.healthy_after
        self.accounts = {
            b.name: BackendAccount(
                backend_id=b.name,
                models=frozenset(b.models),
                gpu_class=b.gpu,
                weight=b.weight,
                max_concurrency=b.max_concurrency,
            )
            for b in config.backends
        }
        self._version = 0

    def snapshot(self, now_s: float) -> FleetSnapshot:
        self._version += 1
        return FleetSnapshot(
            backends=tuple(self._view(a, now_s) for a in self.accounts.values()),
            taken_at_s=now_s,
            version=self._version,
        )

    def _view(self, a: BackendAccount, now_s: float) -> BackendView:
        m = a.metrics
        age = None if m is None else now_s - m.scraped_at_s
        return BackendView(
            backend_id=a.backend_id,
            models=a.models,
            gpu_class=a.gpu_class,
            weight=a.weight,
            max_concurrency=a.max_concurrency,
            health=a.health,
            in_flight_requests=a.in_flight,
            awaiting_first_byte=a.awaiting_first_byte,
            in_flight_prompt_tokens=a.in_flight_prompt_tokens,
            in_flight_predicted_decode_tokens=a.in_flight_predicted_decode_tokens,
            engine_running=None if m is None else m.running,
            engine_waiting=None if m is None else m.waiting,
            kv_usage_frac=None if m is None else m.kv_usage_frac,
            prefix_hit_rate=a.prefix_hit_rate,
            kv_capacity_tokens=None if m is None else m.kv_capacity_tokens,
            metrics_age_s=age,
            metrics_stale=age is None or age > self.stale_after_s,
            ewma_ttft_ms=a.ewma_ttft_ms,
            ewma_tpot_ms=a.ewma_tpot_ms,
        )

    # --- request accounting ----------------------------------------------------------------------

    def on_sent(self, backend_id: str, prompt_tokens: int, predicted_decode_tokens: float) -> None:
        a = self.accounts[backend_id]
        a.in_flight += 1
        a.awaiting_first_byte += 1
        a.in_flight_prompt_tokens += prompt_tokens
        a.in_flight_predicted_decode_tokens += predicted_decode_tokens

    def on_first_byte(self, backend_id: str, ttft_ms: float) -> None:
        a = self.accounts[backend_id]
        a.awaiting_first_byte -= 1
        a.ewma_ttft_ms = _ewma(a.ewma_ttft_ms, ttft_ms)

    def on_done(
        self,
        backend_id: str,
        prompt_tokens: int,
        predicted_decode_tokens: float,
        got_first_byte: bool,
        tpot_ms: float | None,
    ) -> None:
        a = self.accounts[backend_id]
        a.in_flight -= 1
        if not got_first_byte:
            a.awaiting_first_byte -= 1
        a.in_flight_prompt_tokens -= prompt_tokens
        a.in_flight_predicted_decode_tokens -= predicted_decode_tokens
        if tpot_ms is not None:
            a.ewma_tpot_ms = _ewma(a.ewma_tpot_ms, tpot_ms)

    # --- polling ---------------------------------------------------------------------------------

    def on_metrics(self, backend_id: str, metrics: EngineMetrics | None) -> None:
        """A scrape result (None: the scrape failed, the last one ages on)."""
        if metrics is None:
            return
        a = self.accounts[backend_id]
        prev = a.metrics
        if prev is not None:
            queries = (metrics.prefix_cache_queries_tokens_total or 0) - (
                prev.prefix_cache_queries_tokens_total or 0
            )
            hits = (metrics.prefix_cache_hits_tokens_total or 0) - (prev.prefix_cache_hits_tokens_total or 0)
            if queries > 0:
                a.prefix_hit_rate = hits / queries
        a.metrics = metrics

    def on_health_check(self, backend_id: str, passed: bool) -> None:
        a = self.accounts[backend_id]
        if passed:
            a.failed_checks = 0
            a.passed_checks += 1
            if a.health is not Health.READY and a.passed_checks >= self.healthy_after:
                a.health = Health.READY
        else:
            a.passed_checks = 0
            a.failed_checks += 1
            if a.failed_checks >= self.unhealthy_after:
                a.health = Health.DOWN
