"""The peer comparison's table: the right baseline, ratios in the stated direction, honest columns."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.bench_modules import load_bench_module

table = load_bench_module("_peers_table", "_peers_table")
routers = load_bench_module("_peer_routers", "_peer_routers")


def doc(goodput: float, ttft_p99: float, completed: int = 90) -> dict[str, Any]:
    lat = {"p50": ttft_p99 / 4, "p99": ttft_p99}
    return {
        "summary": {
            "requests": 100, "completed": completed, "shed": 0, "errors": 1, "unavailable": 2, "cancelled": 7,
            "goodput_rps": goodput, "throughput_rps": goodput * 1.1, "output_tokens_per_s": 1000.0,
            "slo_attainment_frac": 0.8, "ttft_ms": lat, "tpot_ms": lat, "e2e_ms": lat, "send_lag_ms": lat,
        }
    }  # fmt: skip


def counters(finished: float, queried: float = 100.0, hit: float = 25.0) -> dict[str, float]:
    return {
        "finished": finished,
        "cache_queried_tokens": queried,
        "cache_hit_tokens": hit,
        "preemptions": 1.0,
    }


def row(name: str, goodput: float, ttft_p99: float) -> dict[str, Any]:
    router = SimpleNamespace(name=name, family=name.split()[0], policy=name.split()[1])
    return table.row_from(router, doc(goodput, ttft_p99), {"a": counters(30), "b": counters(10)})  # type: ignore[no-any-return]


def test_row_keeps_client_figures_and_backend_counters() -> None:
    r = row("nginx round_robin", 10.0, 400.0)
    assert r["summary"]["errors"] == 3 and r["summary"]["cancelled"] == 7
    assert r["backend_share"] == {"a": 0.75, "b": 0.25}
    assert r["prefix_hit_frac"] == pytest.approx(0.25) and r["preemptions"] == 2.0


def test_ratios_are_against_nginx_round_robin_when_it_ran() -> None:
    rows = [
        row("sluice round_robin", 8.0, 100.0),
        row("nginx round_robin", 10.0, 400.0),
        row("x y", 12.0, 200.0),
    ]
    assert table.baseline_of(rows)["router"] == "nginx round_robin"
    r = table.ratios(rows[2], table.baseline_of(rows))
    assert r["goodput_rps"] == pytest.approx(1.2) and r["ttft_p99_ms"] == pytest.approx(0.5)
    text = table.ratio_table(rows)
    assert "1.20x" in text and "0.50x" in text and "baseline nginx round_robin" in text
    assert table.ratio_table(rows, markdown=True).startswith("| router | goodput")


def test_sluice_round_robin_is_the_fallback_baseline_and_none_is_said_so() -> None:
    assert table.baseline_of([row("sluice round_robin", 8.0, 100.0)])["router"] == "sluice round_robin"
    assert table.ratio_table([row("x y", 1.0, 1.0)]) == "(no round-robin baseline ran)"


def test_nginx_config_round_robins_every_backend_on_loopback(tmp_path: Path) -> None:
    text = routers.nginx_config(tmp_path, 18080, ["http://127.0.0.1:1001", "http://127.0.0.1:1002"])
    assert "listen 127.0.0.1:18080" in text and "worker_processes 1;" in text
    assert "server 127.0.0.1:1001;" in text and "server 127.0.0.1:1002;" in text
    assert "proxy_buffering off;" in text and f"pid {tmp_path}/nginx.pid;" in text


def test_absolute_table_shows_each_routers_own_figures() -> None:
    text = table.absolute_table([row("sglang-router cache_aware", 12.5, 1500.0)])
    header, _rule, line = text.splitlines()
    assert header.startswith("| router | goodput req/s | TTFT p50 ms | TTFT p99 ms | TPOT p99 ms")
    assert line == "| sglang-router cache_aware | 12.50 | 375 | 1,500 | 1500.0 | 80% | 90% of 100 | 25% |"
