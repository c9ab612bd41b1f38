"""How fast the virtual-time fleet replays an hour of real traffic, and that it is deterministic.

Replays the Azure LLM inference 2023 conversation trace (19,366 requests over 58 minutes) on the
16-backend fleet ``configs/fleets/hetero-16.yaml`` with Sluice's decision engine in the loop
(``round_robin`` by default, or ``--policy NAME``), twice with the same seed, and reports wall time
on one core, events handled, and whether both runs produced identical records. Target: <= 60 s.

Usage: ``python bench/sim_virtual_speed.py [--policy round_robin] [--limit N]``
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _results import write_result
from _traces import azure_conv

from loadgen.sim.fleet_config import load_fleet, virtual_sluice_config
from loadgen.sim.records import RequestRecord
from loadgen.sim.virtual import VirtualFleet, VirtualOptions

FLEET = "configs/fleets/hetero-16.yaml"


def digest(records: list[RequestRecord]) -> str:
    h = hashlib.sha256()
    for r in sorted(records, key=lambda r: r.request_id):
        h.update(repr((r.request_id, r.backend_id, r.status, r.ttft_s, r.e2e_s, r.output_tokens)).encode())
        h.update(repr(tuple(r.token_times_s)).encode())
    return h.hexdigest()


def run_once(policy: str, limit: int | None, seed: int) -> tuple[float, list[RequestRecord], int, float]:
    fleet = load_fleet(FLEET)
    base = {"routes": [{"name": "default", "policy": {"name": policy}}]}
    vf = VirtualFleet(fleet, virtual_sluice_config(fleet, base), options=VirtualOptions(seed=seed))
    trace = list(azure_conv(limit=limit))  # built before timing: trace parsing is not the simulator
    started = time.process_time()
    wall0 = time.perf_counter()
    records = vf.run(trace)
    cpu_s = time.process_time() - started
    steps = sum(vf.engine(n).steps_total for n in vf.backends)
    return time.perf_counter() - wall0, records, steps, cpu_s


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="round_robin")
    parser.add_argument("--limit", type=int, default=None, help="first N requests only")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    wall_a, records_a, steps, cpu_a = run_once(args.policy, args.limit, args.seed)
    wall_b, records_b, _, _ = run_once(args.policy, args.limit, args.seed)
    span_s = max(r.sent_s + (r.e2e_s or 0) for r in records_a)
    ok = [r for r in records_a if r.ok]
    figures = {
        "requests": len(records_a),
        "completed": len(ok),
        "simulated_span_s": round(span_s, 1),
        "engine_steps": steps,
        "wall_s_run1": round(wall_a, 2),
        "wall_s_run2": round(wall_b, 2),
        "cpu_s_run1": round(cpu_a, 2),
        "sim_seconds_per_wall_second": round(span_s / wall_a, 1),
        "steps_per_wall_second": round(steps / wall_a),
        "deterministic": digest(records_a) == digest(records_b),
        "ttft_p50_ms": round(statistics.median(r.ttft_s or 0 for r in ok) * 1000, 1),
        "e2e_p50_s": round(statistics.median(r.e2e_s or 0 for r in ok), 2),
        "target_wall_s": 60,
    }
    config = {
        "fleet": FLEET,
        "trace": "azure_llm_2023 conversation",
        "policy": args.policy,
        "seed": args.seed,
    }
    path = write_result(f"sim_virtual_speed_{args.policy}", config, figures)
    for key, value in figures.items():
        print(f"{key:32} {value}")
    print(f"wrote {path}")
    return 0 if figures["deterministic"] else 1


if __name__ == "__main__":
    sys.exit(main())
