"""Results and goodput arithmetic on hand-made records."""

from __future__ import annotations

import math

import pytest

from loadgen.goodput import attainment_frac, goodput_capacity, request_goodput_rps
from loadgen.records import Outcome, RequestRecord
from loadgen.results import SLO, results_document, summarise


def rec(
    i: int,
    *,
    ttft: float = 100.0,
    e2e: float = 1000.0,
    tokens: int = 10,
    outcome: Outcome = Outcome.OK,
    sched: float | None = None,
    backend: str | None = "b0",
    priority: str = "standard",
    tenant: str = "t",
) -> RequestRecord:
    start = float(i) if sched is None else sched
    r = RequestRecord(
        f"r{i}", start, tokens, priority=priority, tenant=tenant, outcome=outcome, backend=backend
    )
    r.sent_s = start
    if outcome is Outcome.OK:
        r.ttft_ms, r.e2e_ms, r.output_tokens = ttft, e2e, tokens
        r.itl_ms = [(e2e - ttft) / (tokens - 1)] * (tokens - 1)
        r.end_s = start + e2e / 1000.0
    elif outcome is not Outcome.NOT_SENT:
        r.end_s = start + 0.001
    else:
        r.sent_s = None
    return r


def test_counts_latency_and_throughput() -> None:
    records = [rec(i, ttft=100.0 * (i + 1), e2e=1000.0 + 100.0 * i) for i in range(10)]
    records += [
        rec(10, outcome=Outcome.SHED),
        rec(11, outcome=Outcome.ERROR),
        rec(12, outcome=Outcome.NOT_SENT),
    ]
    s = summarise(records, SLO(ttft_ms=500.0, tpot_ms=100.0))
    assert (s["requests"], s["completed"], s["shed"], s["errors"], s["not_sent"]) == (12, 10, 1, 1, 1)
    assert s["ttft_ms"]["p50"] == pytest.approx(550.0)  # numpy linear interpolation over 100..1000
    assert s["ttft_ms"]["p99"] == pytest.approx(991.0)
    assert s["ttft_ms"]["mean"] == pytest.approx(550.0)
    # duration: first send at 0 s, last end at 9 + 1.9 = 10.9 s (the shed/error ends are earlier).
    assert s["duration_s"] == pytest.approx(11.001)
    assert s["throughput_rps"] == pytest.approx(10 / 11.001)
    assert s["output_tokens_per_s"] == pytest.approx(100 / 11.001)
    # TPOT_i = (e2e - ttft) / 9 = (900 - 0 * i) / 9 = 100 ms for all -> met; TTFT <= 500 for i < 5.
    assert s["good"] == 5
    assert s["goodput_rps"] == pytest.approx(5 / 11.001)
    assert s["slo_attainment_frac"] == pytest.approx(5 / 12)
    assert s["admitted_slo_attainment_frac"] == pytest.approx(5 / 10)
    assert s["shed_frac"] == pytest.approx(1 / 12)
    assert s["itl_ms"]["count"] == 90


def test_warmup_excludes_early_requests() -> None:
    records = [rec(i, ttft=5000.0 if i < 3 else 50.0) for i in range(10)]
    s = summarise(records, SLO(ttft_ms=100.0), warmup_s=3.0)
    assert s["requests"] == 7 and s["good"] == 7
    assert s["ttft_ms"]["max"] == pytest.approx(50.0)


def test_slo_semantics_match_vllm_goodput() -> None:
    slo = SLO(ttft_ms=200.0, tpot_ms=50.0)
    one_token = rec(0, ttft=150.0, e2e=150.0, tokens=2)
    one_token.output_tokens = 1
    assert one_token.tpot_ms is None and slo.met_by(one_token)
    assert not slo.met_by(rec(1, ttft=150.0, e2e=150.0 + 9 * 51.0))
    assert not slo.met_by(rec(2, outcome=Outcome.SHED))
    assert SLO(e2e_ms=999.0).met_by(rec(3, e2e=999.0))
    good, slow_start = rec(0, ttft=100.0, e2e=460.0), rec(1, ttft=300.0, e2e=660.0)
    assert request_goodput_rps([good, slow_start], slo, duration_s=4.0) == pytest.approx(0.25)


def test_breakdowns_and_document() -> None:
    records = [rec(i, backend=f"b{i % 2}", priority="critical" if i < 3 else "standard") for i in range(6)]
    records.append(rec(6, outcome=Outcome.SHED, backend=None))
    doc = results_document(records, slo=SLO(ttft_ms=150.0), warmup_s=0.0, meta={"kind": "test", "seed": 1})
    assert set(doc["by_backend"]) == {"b0", "b1", "(none)"}
    assert doc["by_backend"]["b0"]["requests"] == 3
    assert doc["by_backend"]["(none)"]["shed"] == 1
    assert doc["by_priority"]["critical"]["share_frac"] == pytest.approx(3 / 7)
    assert doc["partial"] is False and doc["seed"] == 1 and doc["schema_version"] == 1
    empty = results_document([], slo=SLO(), warmup_s=0.0, meta={})
    assert empty["summary"]["ttft_ms"] is None and empty["summary"]["throughput_rps"] is None


class QueueModel:
    """A deterministic stand-in for the simulator: one FIFO server, fixed service time, even arrivals.

    Request i arrives at i/rate and waits max(0, i·(S − 1/rate)) for the server, so TTFT_i = wait_i + S and
    the attainment of TTFT ≤ T is (floor((T − S)/(S − 1/rate)) + 1)/N above capacity, 1 below it.
    """

    def __init__(self, service_s: float, n: int) -> None:
        self.service_s, self.n, self.calls = service_s, n, 0

    def __call__(self, rate_rps: float) -> list[RequestRecord]:
        self.calls += 1
        free_at = 0.0
        out = []
        for i in range(self.n):
            arrival = i / rate_rps
            start = max(arrival, free_at)
            free_at = start + self.service_s
            out.append(
                rec(
                    i, sched=arrival, ttft=(free_at - arrival) * 1000.0, e2e=(free_at - arrival) * 1000.0 + 90
                )
            )
        return out


def analytic_max_rate(service_s: float, ttft_s: float, n: int, target: float) -> float:
    """Largest rate with ceil(target·N) requests within TTFT: k·(S − 1/r) ≤ T − S, k = that count − 1."""
    k = math.ceil(target * n) - 1
    if k == 0:
        return math.inf
    return 1.0 / (service_s - (ttft_s - service_s) / k)


def test_goodput_capacity_finds_the_analytic_rate() -> None:
    model = QueueModel(service_s=0.1, n=200)
    slo = SLO(ttft_ms=500.0, tpot_ms=50.0)
    results = goodput_capacity(model, slo, (0.9, 0.99), start_rps=1.0, rel_tol=0.01)
    runs = model.calls
    for target in (0.9, 0.99):
        expected = analytic_max_rate(0.1, 0.5, 200, target)
        found = results[target]
        assert found.converged
        assert found.rate_rps is not None and found.failing_rate_rps is not None
        assert found.rate_rps <= expected <= found.failing_rate_rps
        assert found.rate_rps == pytest.approx(expected, rel=0.01)
        assert attainment_frac(model(found.rate_rps), slo) >= target
    assert results[0.99].rate_rps is not None and results[0.9].rate_rps is not None
    assert results[0.99].rate_rps < results[0.9].rate_rps
    assert runs == len({p.rate_rps for p in results[0.9].points} | {p.rate_rps for p in results[0.99].points})


def test_goodput_capacity_reports_when_even_the_floor_fails() -> None:
    model = QueueModel(service_s=1.0, n=50)
    result = goodput_capacity(model, SLO(ttft_ms=100.0), (0.9,), start_rps=1.0, min_rps=0.25)[0.9]
    assert result.rate_rps is None and result.converged
    with pytest.raises(ValueError, match="at least one SLO"):
        goodput_capacity(model, SLO())
