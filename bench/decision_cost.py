"""Decision cost: features + predictions + route for one request over a 64-backend fleet.

What is timed, per request, with ``time.perf_counter_ns`` around the two calls
the data plane makes before forwarding:

1. ``core.features.build_features`` on the parsed body (prompt rendering,
   token estimate, prefix-chunk hashing);
2. ``DecisionEngine.route`` (prefix-index match, per-backend cost predictions -
   the fallback estimator until the learned predictor is wired in -, the
   policy pipeline, the decision-log append).

``on_routed`` (recording the prompt in the prefix index) happens after the
backend is chosen and is reported separately. Requests are ShareGPT
conversations (shared/data), one request per user turn carrying the whole
history, each behind one of 4 shared system prompts, replayed in order, so
multi-turn prefix reuse exercises the index. The fleet has 64 backends
(H100/A100/L4 mix) with varied load; 16 snapshot variants rotate.

Usage: ``python bench/decision_cost.py [--requests N] [--rounds R] [--policy NAME ...]``
Writes ``bench/results/decision_cost.json``. Target (issue 6): p99 <= 100 µs for
sluice_predictive. Timings are noisy on a shared 2-core machine: compare
ratios within one run.
"""

from __future__ import annotations

import argparse
import gc
import gzip
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.clock import ManualClock  # noqa: E402
from core.config import load_config_text  # noqa: E402
from core.features import build_features  # noqa: E402
from core.types import BackendView, Endpoint, FleetSnapshot, Health  # noqa: E402
from decision.engine import DecisionEngine  # noqa: E402
from state.prefix_index import PrefixIndex  # noqa: E402

SHAREGPT = Path("/work/shared/data/sharegpt/sharegpt_v3_first17671.jsonl.gz")
RESULTS = ROOT / "bench" / "results" / "decision_cost.json"
N_BACKENDS = 64
MODEL = "llama-3.1-8b"
SYSTEM_PROMPTS = [
    f"You are assistant #{i} of ACME Corp. Follow the policies below carefully. " + "Policy text. " * 80
    for i in range(4)
]


def load_bodies(limit: int) -> list[tuple[str, dict[str, Any]]]:
    """(session id, chat body) per user turn, in conversation order, until ``limit`` bodies."""
    out: list[tuple[str, dict[str, Any]]] = []
    with gzip.open(SHAREGPT, "rt", encoding="utf-8") as handle:
        for n, line in enumerate(handle):
            record = json.loads(line)
            history: list[dict[str, str]] = [{"role": "system", "content": SYSTEM_PROMPTS[n % 4]}]
            for message in record["messages"]:
                role = message["role"] if message["role"] in ("user", "assistant") else "user"
                history.append({"role": role, "content": message["text"]})
                if role == "user":
                    body = {"model": MODEL, "messages": list(history), "stream": True, "max_tokens": 1024}
                    out.append((record["id"], body))
                    if len(out) >= limit:
                        return out
    return out


def fleet_snapshots(rng: random.Random, variants: int) -> list[FleetSnapshot]:
    classes = ["h100"] * 24 + ["a100"] * 24 + ["l4"] * 16
    snaps = []
    for v in range(variants):
        views = []
        for i in range(N_BACKENDS):
            in_flight = rng.randrange(0, 160)
            awaiting = rng.randrange(0, in_flight + 1)
            views.append(
                BackendView(
                    backend_id=f"gpu-{i:02d}",
                    models=frozenset({MODEL}),
                    gpu_class=classes[i],
                    weight=1.0,
                    max_concurrency=256,
                    health=Health.READY,
                    in_flight_requests=in_flight,
                    awaiting_first_byte=awaiting,
                    in_flight_prompt_tokens=in_flight * rng.randrange(200, 3_000),
                    in_flight_predicted_decode_tokens=in_flight * 200.0,
                    engine_running=in_flight - awaiting,
                    engine_waiting=awaiting,
                    kv_usage_frac=rng.random(),
                    metrics_stale=rng.random() < 0.1,
                    ewma_tpot_ms=rng.uniform(5.0, 80.0),
                )
            )
        snaps.append(FleetSnapshot(tuple(views), taken_at_s=float(v)))
    return snaps


def engine_for(policy: str) -> DecisionEngine:
    backends = "".join(
        f"  - {{name: gpu-{i:02d}, url: 'http://127.0.0.1:{9000 + i}', models: [{MODEL}]}}\n"
        for i in range(N_BACKENDS)
    )
    text = (
        f"backends:\n{backends}"
        f"routes:\n  - name: chat\n    policy: {{name: {policy}}}\n    slo: {{ttft_ms: 2000, tpot_ms: 100}}\n"
    )
    return DecisionEngine.from_config(load_config_text(text), ManualClock(), random.Random(1))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_policy(
    policy: str, bodies: list[tuple[str, dict[str, Any]]], snaps: list[FleetSnapshot]
) -> dict[str, Any]:
    engine = engine_for(policy)
    clock = engine._clock
    assert isinstance(clock, ManualClock)
    samples: dict[str, list[int]] = {k: [] for k in ("features", "route", "total", "on_routed", "total_cpu")}
    wall = time.perf_counter_ns
    cpu = time.thread_time_ns  # excludes time this thread spent descheduled (the machine is shared)
    for i, (session, body) in enumerate(bodies):
        clock.advance(0.01)
        snap = snaps[i % len(snaps)]
        c0 = cpu()
        t0 = wall()
        features = build_features(
            request_id=f"r{i}",
            endpoint=Endpoint.CHAT,
            body=body,
            route="chat",
            tenant="default",
            priority="standard",
            arrival_s=clock.now_s(),
            session_key=session,
        )
        t1 = wall()
        decision = engine.route(features, snap)
        t2 = wall()
        c2 = cpu()
        assert decision.chosen is not None
        engine.on_routed(features, decision, decision.chosen)
        t3 = wall()
        samples["features"].append(t1 - t0)
        samples["route"].append(t2 - t1)
        samples["total"].append(t2 - t0)
        samples["total_cpu"].append(c2 - c0)
        samples["on_routed"].append(t3 - t2)
    warm = len(bodies) // 10  # the first 10% warm the prefix index and caches
    index = engine.prefix_index
    return {
        "policy": policy,
        "requests_timed": len(bodies) - warm,
        "features_us": summary(samples["features"][warm:]),
        "route_us": summary(samples["route"][warm:]),
        "features_plus_route_us": summary(samples["total"][warm:]),
        "features_plus_route_cpu_us": summary(samples["total_cpu"][warm:]),
        "on_routed_us": summary(samples["on_routed"][warm:]),
        "prefix_index_entries": len(index) if index is not None else 0,
    }


def summary(values_ns: list[int]) -> dict[str, float]:
    us = [v / 1_000 for v in values_ns]
    return {
        "p50": round(percentile(us, 0.50), 1),
        "p90": round(percentile(us, 0.90), 1),
        "p99": round(percentile(us, 0.99), 1),
        "mean": round(statistics.fmean(us), 1),
    }


def index_bytes_per_entry(entries: int) -> float:
    """Heap bytes per (backend, chunk) entry of a full index, measured with tracemalloc."""
    rng = random.Random(3)
    index = PrefixIndex(max_entries=entries, ttl_s=1e9)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    session = 0
    while len(index) < entries:
        session += 1
        hashes = tuple(rng.getrandbits(64) for _ in range(16))
        index.record_routed(MODEL, f"gpu-{session % N_BACKENDS:02d}", hashes, now_s=session * 1e-3)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return (after - before) / len(index)


def git_rev() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


METRICS = (
    "features_us",
    "route_us",
    "features_plus_route_us",
    "features_plus_route_cpu_us",
    "on_routed_us",
)


def aggregate(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Per metric and statistic: the median over rounds and the best (lowest) round.

    The machine is shared with other jobs, so single runs swing by 2x and more;
    the best round estimates the code's own cost, the median what a busy host gives.
    """
    out: dict[str, Any] = {"policy": rounds[0]["policy"], "rounds": len(rounds)}
    for metric in METRICS:
        out[metric] = {
            stat: {
                "median": round(statistics.median(r[metric][stat] for r in rounds), 1),
                "best": round(min(r[metric][stat] for r in rounds), 1),
            }
            for stat in ("p50", "p90", "p99", "mean")
        }
    out["prefix_index_entries"] = rounds[-1]["prefix_index_entries"]
    out["requests_timed_per_round"] = rounds[0]["requests_timed"]
    return out


def print_table(results: list[dict[str, Any]], which: str) -> None:
    header = ("policy", "features", "route", "feat+route wall", "feat+route CPU", "on_routed")
    print(f"p50/p99 in µs, {which} of the rounds")
    print(f"{header[0]:<21}{header[1]:>14}{header[2]:>14}{header[3]:>18}{header[4]:>17}{header[5]:>14}")
    for r in results:
        line = "".join(f"{r[m]['p50'][which]:>8.1f}/{r[m]['p99'][which]:<7.1f}" for m in METRICS)
        print(f"{r['policy']:<21}{line}")


def results_document(
    args: argparse.Namespace,
    results: list[dict[str, Any]],
    n_bodies: int,
    n_snaps: int,
    load_at_start: tuple[float, float, float],
    bytes_per_entry: float,
) -> dict[str, Any]:
    """The JSON written to bench/results: command, configuration, git rev, figures, target verdict."""
    predictive = next((r for r in results if r["policy"] == "sluice_predictive"), None)
    cpu_p99 = predictive["features_plus_route_cpu_us"]["p99"] if predictive else None
    return {
        "benchmark": "decision_cost",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "git_rev": git_rev(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": len(os.sched_getaffinity(0)),
        "load_average_at_start": load_at_start,
        "load_average_at_end": os.getloadavg(),
        "config": {
            "backends": N_BACKENDS,
            "requests_per_round": n_bodies,
            "rounds": args.rounds,
            "warmup_frac": 0.1,
            "workload": "ShareGPT first conversations, one request per user turn with full history, "
            "4 shared system prompts",
            "predictions": "fallback estimator (policies/estimate.py); no learned predictor wired",
            "snapshot_variants": n_snaps,
            "gc": "enabled; start-up objects (bodies, snapshots) frozen with gc.freeze()",
        },
        "target": {
            "policy": "sluice_predictive",
            "features_plus_route_p99_us": 100.0,
            "judged_on": "CPU time of the deciding thread (time.thread_time_ns), best and median round",
        },
        "target_met_best_round": cpu_p99 is not None and cpu_p99["best"] <= 100.0,
        "target_met_median_round": cpu_p99 is not None and cpu_p99["median"] <= 100.0,
        "results": results,
        "prefix_index_bytes_per_entry": round(bytes_per_entry, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--policy", action="append", default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    policies = args.policy or [
        "sluice_predictive",
        "round_robin",
        "least_outstanding",
        "power_of_two",
        "consistent_hash",
        "sglang_cache_aware",
        "dynamo_cost",
        "prodstack_loadaware",
    ]
    load_at_start = os.getloadavg()
    bodies = load_bodies(args.requests)
    snaps = fleet_snapshots(random.Random(2), 16)
    gc.collect()
    # The benchmark's own 4,000 parsed bodies would otherwise be rescanned by every full collection;
    # a proxy holds no such heap (and should gc.freeze() its start-up objects the same way).
    gc.freeze()
    per_policy: dict[str, list[dict[str, Any]]] = {p: [] for p in policies}
    for _ in range(args.rounds):  # interleaved, so every policy sees the same mix of quiet and busy moments
        for p in policies:
            per_policy[p].append(run_policy(p, bodies, snaps))
    results = [aggregate(per_policy[p]) for p in policies]
    print_table(results, "best")
    print_table(results, "median")
    bytes_per_entry = index_bytes_per_entry(200_000)
    print(f"prefix index: {bytes_per_entry:.0f} bytes per entry (tracemalloc, 200k entries, 64 backends)")
    output = results_document(args, results, len(bodies), len(snaps), load_at_start, bytes_per_entry)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(output, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
