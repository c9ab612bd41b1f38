"""The overload scenario of ``bench/overload.py``: fleet, SLO, class mix, load steps, configs, capacity.

One place defines what every run of the benchmark (virtual or real time, Sluice or a peer) is given,
so the systems compared see the same requests at the same times.

* Fleet ``configs/fleets/overload.yaml``: two simulated L4s serving llama-3.1-8b (small enough that
  a 3x burst of streams stays cheap to simulate in real time on a 2-core machine).
* Requests: synthetic chat, prompt 512 +/- 50 % and output 128 +/- 50 % tokens (uniform), classes
  20 % critical / 50 % standard / 30 % sheddable (``x-sluice-priority``).
* Load: ``LEVELS`` x capacity, ``STEP_S`` each: 0.5x 15 s, 1x 15 s, 3x 60 s, 0.7x 15 s (Poisson).
* SLO: TTFT 2 s for every class (one route); queue deadlines 1.4 s for critical and standard (the
  rest of the SLO is left for the backend's own TTFT), 1 s for sheddable.
* Capacity (``calibrate``): the fleet's goodput capacity (``loadgen.goodput``, DistServe/MLPerf
  style) for this request shape: the highest Poisson rate at which >= 90 % of requests meet the TTFT
  SLO, measured in virtual time with admission off and round robin (so it does not depend on the
  admission being benchmarked).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from core.config import LoadedConfig
from decision.engine import DecisionEngine
from loadgen.client import OPENAI_DEFAULT_MAX_RETRIES
from loadgen.goodput import goodput_capacity
from loadgen.records import RequestRecord
from loadgen.results import SLO
from loadgen.sim.fleet_config import Fleet, load_fleet, virtual_sluice_config
from loadgen.sim.virtual import VirtualFleet, VirtualOptions
from loadgen.workload import WorkloadRequest
from loadgen.workloads import Workload, build_workload

ROOT = Path(__file__).resolve().parents[1]
FLEET_FILE = ROOT / "configs" / "fleets" / "overload.yaml"
TTFT_SLO_MS = 2000.0
SLO_TTFT = SLO(ttft_ms=TTFT_SLO_MS)
MIX = {"critical": 0.2, "standard": 0.5, "sheddable": 0.3}
LEVELS = (0.5, 1.0, 3.0, 3.0, 3.0, 3.0, 0.7)
STEP_S = 15.0
SHAPE = {"input_tokens": 2048, "output_tokens": 256, "range_ratio": 0.5}
QUEUE_DEADLINE_MS = {"critical": 1400.0, "standard": 1400.0, "sheddable": 1000.0}
HAMMER_TENANT = "hammer"
RETRY_TENANT = "retrying"
RETRY_LOAD_FRAC = 0.1  # retrying clients' own arrivals, as a fraction of capacity
RETRY_MAX = OPENAI_DEFAULT_MAX_RETRIES  # retries per request of a retrying client, as the openai client
# Routing under every admission setting: round robin, so the comparison is about admission (and
# like-for-like with sglang-router's round_robin). sluice_predictive, the default policy, is run
# with admission too, in virtual and in real time.
POLICY = "round_robin"
VIRTUAL_SYSTEMS = (("round_robin", True), ("sluice_predictive", True), ("round_robin", False))
# The admission setting of every Sluice run (``--setting``): "default", or "gate", the defaults before
# branch recovery4 (docs/admission.md): the per-backend prefill gate (``prefill_budget: backend``, whose
# stream limit then steers to the TTFT target itself) and FIFO in every class.
SETTING = "default"
SETTINGS = ("default", "gate")


def fleet() -> Fleet:
    return load_fleet(FLEET_FILE)


def system_name(policy: str, admission: bool) -> str:
    return f"sluice {policy} " + ("+admission" if admission else "no admission")


def sluice_base(admission: bool, policy: str = POLICY) -> dict[str, Any]:
    """Everything of the Sluice config but the backends (``sluice_config`` adds them); with
    ``SETTING == "gate"`` the earlier defaults (per-backend prefill gate, FIFO)."""
    base = _sluice_base(admission, policy)
    if SETTING == "gate":
        base["admission"]["waiting_room"] = {"lifo_below_top_class": False}
        base["routes"][0]["admission"]["prefill_budget"] = "backend"
    return base


def _sluice_base(admission: bool, policy: str) -> dict[str, Any]:
    return {
        "listen": {"host": "127.0.0.1", "port": 0, "shutdown_grace_s": 5.0},
        "health": {"interval_s": 1.0},
        "routes": [
            {
                "name": "default",
                "policy": {"name": policy},
                "slo": {"ttft_ms": TTFT_SLO_MS},
                "admission": {"queue_deadline_ms": dict(QUEUE_DEADLINE_MS)},
            }
        ],
        "admission": {"enabled": admission},
        # The hammering client's tenant has a zero budget: every request it sends is refused at once.
        "tenants": {"budgets": {HAMMER_TENANT: {"tokens_per_s": 0}}},
    }


def virtual_config(the_fleet: Fleet, admission: bool, policy: str = POLICY) -> LoadedConfig:
    return virtual_sluice_config(the_fleet, sluice_base(admission, policy))


def control_levels() -> tuple[float, ...]:
    """``LEVELS`` with the burst replaced by the after-burst level: the control run of ``--control``."""
    after = LEVELS[-1]
    return tuple(after if level > 1.0 else level for level in LEVELS)


def step_workload(capacity_rps: float, seed: int, levels: tuple[float, ...] | None = None) -> Workload:
    params = {
        **SHAPE,
        "capacity_rps": capacity_rps,
        "levels": ",".join(f"{x:g}" for x in (LEVELS if levels is None else levels)),
        "step_s": STEP_S,
    }
    return build_workload("step", {"seed": seed, "priority_mix": MIX}, params)


def burst_window_s() -> tuple[float, float]:
    """[start, end) of the steps above capacity."""
    over = [i for i, level in enumerate(LEVELS) if level > 1.0]
    return over[0] * STEP_S, (over[-1] + 1) * STEP_S


def main_requests(capacity_rps: float, seed: int, control: bool = False) -> list[WorkloadRequest]:
    """The step workload's requests; ``control``: the same requests before and after the burst, and in
    the burst's place the after-burst level's own arrivals (``control_levels``).

    Why not simply the step workload at ``control_levels``: its arrivals are one random stream, so after
    a different burst segment the after-burst arrivals differ too (measured: 0.81-1.24 x as many in the
    after-burst phase, seeds 0-14), and a recovery judged against that control would compare different
    loads. Request ids stay unique: the filler's serials continue where the shared 0.5x and 1x steps end,
    far below the burst run's after-burst serials."""
    burst = list(step_workload(capacity_rps, seed).requests())
    if not control:
        return burst
    start_s, end_s = burst_window_s()
    filler = [
        r
        for r in step_workload(capacity_rps, seed, control_levels()).requests()
        if start_s <= r.arrival_s < end_s
    ]
    kept = [r for r in burst if not start_s <= r.arrival_s < end_s]
    out = sorted(kept + filler, key=lambda r: r.arrival_s)
    if len({r.request_id for r in out}) != len(out):
        raise ValueError("control workload: request ids collide")
    return out


def retry_workload(capacity_rps: float, seed: int) -> Workload:
    """The retrying clients' own requests: Poisson at ``RETRY_LOAD_FRAC`` x capacity, whole run."""
    params = {**SHAPE, "rate_rps": RETRY_LOAD_FRAC * capacity_rps, "span_s": STEP_S * len(LEVELS)}
    options = {"seed": seed + 1000, "priority_mix": MIX, "tenant_mix": {RETRY_TENANT: 1.0}}
    return build_workload("poisson", options, params)


def virtual_fleet(the_fleet: Fleet, loaded: LoadedConfig, seed: int) -> VirtualFleet:
    """The fleet with Sluice's own ``DecisionEngine`` deciding, as ``sluice serve`` would."""
    return VirtualFleet(
        the_fleet,
        loaded,
        decider_factory=lambda f: DecisionEngine.from_config(loaded, f.clock, random.Random(seed)),
        options=VirtualOptions(seed=seed, record_samples=True),
    )


def run_virtual(vf: VirtualFleet, workload: Workload) -> list[RequestRecord]:
    return [r.to_load_record(with_itl=False) for r in vf.run(workload.requests())]


def calibrate(the_fleet: Fleet, seed: int = 0, duration_s: float = 60.0) -> dict[str, Any]:
    """Goodput capacity (90 % within the TTFT SLO) of the fleet, admission off, round robin."""
    base = sluice_base(admission=False)
    base["routes"] = [{"name": "default", "policy": {"name": "round_robin"}}]
    loaded = virtual_sluice_config(the_fleet, base)

    def at_rate(rate_rps: float) -> list[RequestRecord]:
        params = {**SHAPE, "rate_rps": rate_rps, "span_s": duration_s}
        workload = build_workload("poisson", {"seed": seed}, params)
        return run_virtual(virtual_fleet(the_fleet, loaded, seed), workload)

    found = goodput_capacity(at_rate, SLO_TTFT, (0.9,), start_rps=8.0, rel_tol=0.03, warmup_s=10.0)[0.9]
    return {
        "capacity_rps": found.rate_rps,
        "failing_rate_rps": found.failing_rate_rps,
        "definition": "highest Poisson rate with >= 90% of requests within TTFT 2 s; virtual time, "
        "admission off, round_robin, 60 s after 10 s warm-up",
        "points": [{"rate_rps": p.rate_rps, "attainment_frac": p.attainment_frac} for p in found.points],
    }
