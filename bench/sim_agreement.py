"""Real-time and virtual-time simulation agree: TTFT and E2E p50/p90 within 10% on the same workload.

One workload (Poisson arrivals, prompts of 100-3,000 tokens, outputs of 10-200 tokens, seeded) is
run twice against ``configs/fleets/agreement.yaml`` (one H100 + one A100 profile):

- real time: ``sluice sim`` in a subprocess, this process as an open-loop streaming client
  (``bench/_sse_client.py``) sending request ``i`` to the same backend round robin would pick;
- virtual time: ``VirtualFleet`` with Sluice's ``round_robin`` decision engine in the loop.

Both see identical bodies and ``x-sim-output-tokens``. Reported per metric: both values and the ratio
real / virtual. Real time includes HTTP, SSE and event-loop delays that virtual time does not.

Usage: ``python bench/sim_agreement.py [--requests 150] [--rate 5]``
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _fleet_process import sim_fleet
from _results import write_result
from _sse_client import replay
from _traces import chat_body

from core.types import Endpoint
from loadgen.sim.fleet_config import load_fleet, virtual_sluice_config
from loadgen.sim.virtual import VirtualFleet
from loadgen.workload import WorkloadRequest

FLEET = "configs/fleets/agreement.yaml"


def make_workload(n: int, rate: float, seed: int) -> list[WorkloadRequest]:
    rng = random.Random(seed)
    t = 0.5
    out = []
    for i in range(n):
        t += rng.expovariate(rate)
        prompt = int(rng.uniform(100, 3000))
        out.append(
            WorkloadRequest(
                request_id=f"ag-{i}",
                arrival_s=t,
                endpoint=Endpoint.CHAT,
                body=chat_body("llama-3.1-8b", prompt, f"ag{seed}-{i}"),
                true_output_tokens=int(rng.uniform(10, 200)),
            )
        )
    return out


def quantile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=150)
    parser.add_argument("--rate", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    workload = make_workload(args.requests, args.rate, args.seed)

    fleet = load_fleet(FLEET)
    names = sorted(b.name for b in fleet.backends)  # round_robin ranks candidates by id, in turn
    route = [names[i % len(names)] for i in range(len(workload))]
    virtual = VirtualFleet(fleet, virtual_sluice_config(fleet)).run(workload)
    assert all(r.ok for r in virtual) and [r.backend_id for r in sorted(virtual, key=_order)] == route

    with sim_fleet(FLEET) as urls:
        real = uvloop.run(replay(workload, urls, route))
    assert all(r.status == 200 for r in real)

    figures: dict[str, object] = {}
    worst = 0.0
    for metric in ("ttft_s", "e2e_s"):
        for q in (0.5, 0.9):
            v = quantile([getattr(r, metric) for r in virtual], q)
            r = quantile([getattr(x, metric) for x in real], q)
            ratio = r / v
            worst = max(worst, abs(ratio - 1))
            key = f"{metric[:-2]}_p{int(q * 100)}"
            figures[key] = {
                "real_ms": round(r * 1000, 1),
                "virtual_ms": round(v * 1000, 1),
                "ratio": round(ratio, 3),
            }
            print(f"{key:10} real {r * 1000:9.1f} ms   virtual {v * 1000:9.1f} ms   ratio {ratio:.3f}")
    figures["worst_relative_difference"] = round(worst, 3)
    figures["within_10_percent"] = worst <= 0.10
    figures["chunks_equal_tokens"] = all(
        x.chunks == w.true_output_tokens for x, w in zip(real, workload, strict=True)
    )
    config = {"fleet": FLEET, "requests": args.requests, "rate_rps": args.rate, "seed": args.seed}
    path = write_result("sim_agreement", config, figures)
    print(f"worst relative difference {worst:.3f}; wrote {path}")
    return 0 if worst <= 0.10 else 1


def _order(record: object) -> int:
    return int(str(record.request_id).split("-")[1])


if __name__ == "__main__":
    sys.exit(main())
