"""How fast can the load client send before it, not the server, limits the measurement?

Runs ``loadgen.fake_server`` in a separate process (it answers instantly, so
the server is never the bottleneck) and sends Poisson load from
``LoadClient`` in this process on uvloop, at increasing offered rates, for two
stream shapes:

* ``short``: 32 output tokens written at once (request-rate bound);
* ``streaming``: 64 tokens, one SSE chunk every 10 ms (one network read per
  chunk: chunk-rate bound, as against a real engine).

A rate *passes* when every request completed, the achieved send rate is
>= 97% of offered and the p99 send lag (scheduled -> actually sent) is
<= 10 ms. The client's capacity is the highest passing rate. Prints a table and
writes ``bench/results/client_capacity.json`` with the command, config and git
rev. Each point also records the client's and the fake server's CPU use and
the 1-minute load average: when neither process is near 1.0 CPU yet the lag
grows, other work on the machine is taking the cores. The machine is shared:
expect run-to-run noise; compare within one run.

    python bench/client_capacity.py [--seconds 6] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import uvloop

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from loadgen.client import ClientOptions, LoadClient  # noqa: E402
from loadgen.records import Outcome  # noqa: E402
from loadgen.results import SLO, git_revision, summarise  # noqa: E402
from loadgen.workloads import build_workload  # noqa: E402


@dataclass(frozen=True)
class Shape:
    tokens: int
    itl_ms: float
    rates: tuple[float, ...]


SHAPES = {
    "short": Shape(32, 0.0, (100, 200, 400, 700, 1000, 1400, 2000, 2800, 4000)),
    "streaming": Shape(64, 10.0, (25, 50, 100, 200, 300, 450, 600, 800, 1100)),
}
MAX_LAG_P99_MS = 10.0
MIN_ACHIEVED_FRAC = 0.97


def start_server(itl_ms: float) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "loadgen.fake_server", "--port", "0", "--itl-ms", str(itl_ms)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    port = json.loads(proc.stdout.readline())["port"]
    return proc, f"http://127.0.0.1:{port}"


def process_cpu_s(pid: int) -> float:
    """utime + stime of a process from /proc (Linux), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop_server(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    proc.communicate(timeout=10)


async def one_point(
    url: str, server_pid: int, rate: float, seconds: float, tokens: int, seed: int
) -> dict[str, Any]:
    params = {
        "rate_rps": str(rate),
        "span_s": str(seconds),
        "input_tokens": "512",
        "output_tokens": str(tokens),
    }
    workload = build_workload("poisson", {"seed": seed}, params)
    requests = list(workload.requests())  # generated up front: measure sending, not text generation
    client = LoadClient(ClientOptions(url, read_timeout_s=60.0))
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    server_cpu0 = process_cpu_s(server_pid)
    wall0 = time.monotonic()
    records = await client.run(requests)
    wall_s = time.monotonic() - wall0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    server_cpu_s = process_cpu_s(server_pid) - server_cpu0
    cpu_s = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    summary = summarise(records, SLO())
    sends = sorted(r.sent_s for r in records if r.sent_s is not None)
    achieved = (len(sends) - 1) / (sends[-1] - sends[0]) if len(sends) > 1 else 0.0
    offered = (len(requests) - 1) / (requests[-1].arrival_s - requests[0].arrival_s)
    lag = summary["send_lag_ms"] or {}
    ok = sum(r.outcome is Outcome.OK for r in records)
    chunks = sum(len(r.itl_ms) + 1 for r in records if r.outcome is Outcome.OK)
    passed = (
        ok == len(records)
        and achieved >= MIN_ACHIEVED_FRAC * offered
        and lag.get("p99", 1e9) <= MAX_LAG_P99_MS
    )
    return {
        "offered_rps": round(offered, 2),
        "achieved_send_rps": round(achieved, 2),
        "requests": len(records),
        "completed": ok,
        "send_lag_p50_ms": round(lag.get("p50", float("nan")), 3),
        "send_lag_p99_ms": round(lag.get("p99", float("nan")), 3),
        "ttft_p50_ms": round((summary["ttft_ms"] or {}).get("p50", float("nan")), 3),
        "chunks_per_s": round(chunks / wall_s, 1),
        "client_cpu_frac": round(cpu_s / wall_s, 3),
        "client_cpu_us_per_request": round(1e6 * cpu_s / max(1, len(records)), 1),
        "server_cpu_frac": round(server_cpu_s / wall_s, 3),
        "load_avg_1m": os.getloadavg()[0],
        "passed": passed,
    }


def run_shape(name: str, seconds: float, quick: bool) -> dict[str, Any]:
    shape = SHAPES[name]
    proc, url = start_server(shape.itl_ms)
    points = []
    failures = 0
    try:
        rates = shape.rates[::2] if quick else shape.rates
        for i, rate in enumerate(rates):
            point = uvloop.run(one_point(url, proc.pid, rate, seconds, shape.tokens, seed=i))
            points.append(point)
            print(f"  {name:9s} {json.dumps(point)}", flush=True)
            failures = failures + 1 if not point["passed"] else 0
            if failures >= 2:
                break
    finally:
        stop_server(proc)
    passing = [p for p in points if p["passed"]]
    best = max(passing, key=lambda p: p["offered_rps"], default=None)
    chunks_per_request = shape.tokens + 1
    return {
        "shape": {k: v for k, v in asdict(shape).items() if k != "rates"},
        "points": points,
        "max_passing_rps": best["offered_rps"] if best else None,
        "max_passing_chunks_per_s": best["chunks_per_s"] if best else None,
        # What one otherwise idle core would sustain at the CPU cost measured at that point.
        "client_cpu_us_per_request_at_max": best["client_cpu_us_per_request"] if best else None,
        "implied_one_core_rps": round(1e6 / best["client_cpu_us_per_request"], 1) if best else None,
        "implied_one_core_chunks_per_s": (
            round(1e6 * chunks_per_request / best["client_cpu_us_per_request"]) if best else None
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=6.0, help="length of each rate point")
    parser.add_argument("--quick", action="store_true", help="every other rate only")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "client_capacity.json")
    args = parser.parse_args()
    results = {name: run_shape(name, args.seconds, args.quick) for name in SHAPES}
    doc = {
        "benchmark": "client_capacity",
        "command": [Path(sys.executable).name, *sys.argv],
        "git_rev": git_revision(REPO),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0], "loop": "uvloop"},
        "config": {
            "seconds_per_point": args.seconds,
            "pass_rule": f"all completed, achieved >= {MIN_ACHIEVED_FRAC:.0%} of offered, "
            f"p99 send lag <= {MAX_LAG_P99_MS} ms",
            "server": "loadgen.fake_server in a separate process",
        },
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print("\nshape      max passing req/s   chunks/s   client CPU us/req   implied one-core req/s   chunks/s")
    for name, res in results.items():
        print(
            f"{name:9s}  {res['max_passing_rps']!s:>17}   {res['max_passing_chunks_per_s']!s:>8}"
            f"   {res['client_cpu_us_per_request_at_max']!s:>17}   {res['implied_one_core_rps']!s:>22}"
            f"   {res['implied_one_core_chunks_per_s']!s:>8}"
        )
    print(f"\nwritten {args.out}")


if __name__ == "__main__":
    main()
