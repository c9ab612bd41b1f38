"""Speed of the predictors on the request path: both models for one request over 16 backends.

Measures ``Predictor.predict(request, snapshot)`` (output-length quantiles with
online correction + TTFT/TPOT/E2E for each of 16 selectable backends) one call
at a time with ``perf_counter_ns``, cycling through thousands of distinct real
prompts (ShareGPT and alpaca_eval from ``shared/data`` when present, else
generated text) so the weight tables are not artificially hot in the CPU
cache. The online correction and the latency model are warmed with observed
outcomes first, as in a running proxy. Garbage collection stays enabled.

Also reported: the output-length part alone and the 16-backend latency part
alone (same loop), so a regression can be located.

Targets (issue 5): p50 <= 50 us and p99 <= 100 us for the full call on this
machine. Writes ``bench/results/predictor_speed.json`` with the command,
configuration, git revision and load average. Run:
``python bench/predictor_speed.py [--calls 20000] [--out PATH]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.config import PredictorsConfig  # noqa: E402
from core.features import build_features  # noqa: E402
from core.types import (  # noqa: E402
    BackendView,
    Endpoint,
    FleetSnapshot,
    Health,
    Outcome,
    RequestFeatures,
    RoutingRequest,
)
from predictors import Predictor  # noqa: E402
from predictors.training_data import TrainingDataError, load_samples  # noqa: E402

N_BACKENDS = 16
MODEL = "meta-llama/Meta-Llama-3-8B-Instruct"


def _requests(n: int, rng: random.Random) -> list[RequestFeatures]:
    try:
        samples = load_samples(["sharegpt", "alpaca_eval"])
        picked = rng.sample(samples, k=min(n, len(samples)))
        source = [s.features for s in picked]
    except TrainingDataError:
        words = "write explain list the a of code python story why how summarize translate".split()
        source = [
            build_features(
                request_id=str(i),
                endpoint=Endpoint.CHAT,
                body={
                    "messages": [
                        {"role": "user", "content": " ".join(rng.choices(words, k=rng.randint(3, 400)))}
                    ]
                },
                route="default",
                tenant="t",
                priority="standard",
                arrival_s=0.0,
            )
            for i in range(n)
        ]
    tenants = [f"tenant-{i}" for i in range(20)]
    out = []
    for i, f in enumerate(source):
        out.append(
            build_features(
                request_id=f"r{i}",
                endpoint=Endpoint.CHAT,
                body={"model": MODEL, "messages": [{"role": "user", "content": f.last_user_text}]},
                route="default",
                tenant=rng.choice(tenants),
                priority="standard",
                arrival_s=0.0,
            )
        )
    return out


def _snapshot(rng: random.Random) -> FleetSnapshot:
    views = []
    for i in range(N_BACKENDS):
        in_flight = rng.randint(0, 64)
        awaiting = rng.randint(0, min(in_flight, 8))
        views.append(
            BackendView(
                backend_id=f"b{i:02d}",
                models=frozenset({MODEL}),
                gpu_class=("h100", "a100", "l4")[i % 3],
                weight=1.0,
                max_concurrency=None,
                health=Health.READY,
                in_flight_requests=in_flight,
                awaiting_first_byte=awaiting,
                in_flight_prompt_tokens=in_flight * 900,
                in_flight_predicted_decode_tokens=in_flight * 250.0,
                engine_running=in_flight - awaiting,
                engine_waiting=awaiting,
                kv_usage_frac=rng.uniform(0.1, 0.95),
                prefix_hit_rate=rng.uniform(0.0, 0.6),
                kv_capacity_tokens=450_000,
                metrics_age_s=0.5,
                metrics_stale=i % 4 == 0,
                awaiting_prompt_tokens=awaiting * 900,
            )
        )
    return FleetSnapshot(backends=tuple(views), taken_at_s=0.0)


def _warm(
    predictor: Predictor, requests: list[RequestFeatures], snapshot: FleetSnapshot, rng: random.Random
) -> None:
    views = snapshot.backends
    for i, f in enumerate(requests[:3000]):
        view = views[i % len(views)]
        out_tokens = rng.randint(5, 900)
        ttft = 20.0 + f.prompt_tokens * 0.03
        outcome = Outcome(
            request_id=f.request_id,
            backend_id=view.backend_id,
            route=f.route,
            model=f.model,
            tenant=f.tenant,
            status_code=200,
            prompt_tokens=f.prompt_tokens,
            output_tokens=out_tokens,
            cached_prompt_tokens=0,
            ttft_ms=ttft,
            e2e_ms=ttft + out_tokens * 12.0,
        )
        predictor.observe(outcome, f, view)


def _time(fn: Callable[[int], object], calls: int) -> list[float]:
    samples_us = []
    clock = time.perf_counter_ns
    for i in range(calls):
        t0 = clock()
        fn(i)
        samples_us.append((clock() - t0) / 1000.0)
    return samples_us


def _summary(samples_us: list[float]) -> dict[str, float]:
    ordered = sorted(samples_us)

    def pct(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {
        "p50_us": pct(0.5),
        "p90_us": pct(0.9),
        "p99_us": pct(0.99),
        "p999_us": pct(0.999),
        "mean_us": round(statistics.fmean(samples_us), 2),
    }


def _git_rev() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--requests", type=int, default=4_000, help="distinct prompts cycled through")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench/results/predictor_speed.json")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    predictor = Predictor.from_config(PredictorsConfig())
    requests = _requests(args.requests, rng)
    snapshot = _snapshot(rng)
    _warm(predictor, requests, snapshot, rng)
    routing = [
        RoutingRequest(
            features=f, prefix_matched_tokens={f"b{j:02d}": f.prompt_tokens // 2 for j in range(0, 16, 5)}
        )
        for f in requests
    ]
    n = len(routing)
    latency = predictor.latency
    views = snapshot.backends

    def full(i: int) -> object:
        return predictor.predict(routing[i % n], snapshot)

    def length_only(i: int) -> object:
        return predictor.predict_length(requests[i % n])

    def latency_only(i: int) -> object:
        f = requests[i % n]
        return latency.estimate_all(views, MODEL, f.prompt_tokens, {}, 200.0)

    _time(full, min(2_000, args.calls))  # warm-up: first-touch page faults, lazy imports
    load_before = os.getloadavg()
    results = {
        name: _summary(_time(fn, args.calls))
        for name, fn in (
            ("full_predict_16_backends", full),
            ("output_length_only", length_only),
            ("latency_only_16_backends", latency_only),
        )
    }
    load_after = os.getloadavg()
    full_res = results["full_predict_16_backends"]
    report = {
        "command": "python " + " ".join(sys.argv),
        "git_rev": _git_rev(),
        "config": {
            "calls": args.calls,
            "distinct_requests": n,
            "backends": N_BACKENDS,
            "seed": args.seed,
            "gc_enabled": True,
            "online_refinement": True,
        },
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "loadavg_1m_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        },
        "results": results,
        "targets": {"p50_us": 50.0, "p99_us": 100.0},
        "meets_targets": full_res["p50_us"] <= 50.0 and full_res["p99_us"] <= 100.0,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    for name, res in results.items():
        print(
            f"{name:28s} p50 {res['p50_us']:7.2f} us  p99 {res['p99_us']:7.2f} us  mean {res['mean_us']:7.2f} us"
        )
    print(
        f"targets p50<=50 p99<=100: {'met' if report['meets_targets'] else 'NOT met'}; "
        f"load {report['machine']['loadavg_1m_before_after']}; wrote {out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
