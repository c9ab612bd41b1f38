"""One benchmark point: a policy, a workload at a load level, a fleet and a seed, in virtual time.

The point's Sluice config is the matrix's ``sluice`` block with this policy on every route
(``spec.point_config``); its decider is what ``sluice serve`` would build (or the bench-only oracle,
``loadgen.bench.policies``). The workload is the matrix's, with this seed, ``duration_s`` and its
rate scaled to ``load_level x capacity`` (``scaling.scaling_for``). The same seed gives every
policy the same requests at the same times (common random numbers), and the same records on every
run.

Records are summarised by ``loadgen.results`` (warm-up excluded) exactly as a real replay would be;
per-chunk gaps are not kept (TPOT is per request), so ``itl_ms`` is null. The point's results
document goes to ``points/<fleet>/<workload>/<load>/<policy>/seed-<n>.json`` (plus
``requests.jsonl.gz`` and backend samples with ``--keep-records``).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from loadgen.bench.aggregate import CDF_POINTS
from loadgen.bench.policies import decider_factory
from loadgen.bench.scaling import Scaling, scaled
from loadgen.bench.spec import Matrix, point_config
from loadgen.records import Outcome, RequestRecord, write_records
from loadgen.results import results_document
from loadgen.sim.virtual import VirtualFleet, VirtualOptions


@dataclass(frozen=True, slots=True)
class PointTask:
    fleet: str
    workload: str
    load_level: float
    policy: str  # the policy entry's label
    seed: int
    scaling: Scaling

    def path(self) -> Path:
        return Path(self.fleet, self.workload, f"load-{self.load_level:g}", self.policy, f"seed-{self.seed}")


def _quantiles(values: list[float]) -> list[float] | None:
    if not values:
        return None
    return [float(v) for v in np.percentile(np.asarray(values, dtype=float), CDF_POINTS)]


def _write(
    out_dir: Path, task: PointTask, doc: dict[str, Any], records: list[RequestRecord], fleet: VirtualFleet
) -> None:
    base = out_dir / "points" / task.path()
    base.parent.mkdir(parents=True, exist_ok=True)
    base.with_suffix(".json").write_bytes(
        orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
    )
    if fleet.options.record_samples:
        write_records(base.with_suffix(".requests.jsonl.gz"), records)
        samples = [asdict(s) for s in fleet.samples]
        base.with_suffix(".samples.json").write_bytes(orjson.dumps(samples))


def run_point(
    matrix: Matrix, task: PointTask, out_dir: Path | None = None, keep_records: bool = False
) -> dict[str, Any]:
    """Run one point; returns its summary, per-backend breakdown and latency quantiles (JSON-ready)."""
    spec = matrix.spec
    policy = next(p for p in spec.policies if p.key == task.policy)
    slo = spec.slo.to_slo()
    loaded = point_config(matrix, task.fleet, policy)
    fleet = VirtualFleet(
        matrix.fleets[task.fleet],
        loaded,
        decider_factory=decider_factory(policy.name, policy.params, loaded, task.seed, slo),
        options=VirtualOptions(seed=task.seed, record_samples=keep_records),
    )
    workload = scaled(matrix.workloads[task.workload], task.seed, task.scaling, spec.duration_s)
    started = time.process_time()
    records = [r.to_load_record(with_itl=False) for r in fleet.run(workload.requests())]
    cpu_s = time.process_time() - started
    meta = {
        "kind": "bench_point",
        "matrix": spec.name,
        "point": asdict(task),
        "policy": policy.model_dump(),
        "workload": workload.describe(),
    }
    doc = results_document(records, slo=slo, warmup_s=spec.warmup_s, meta=meta)
    if out_dir is not None:
        _write(out_dir, task, doc, records, fleet)
    kept = [r for r in records if r.scheduled_s >= spec.warmup_s and r.outcome is Outcome.OK]
    summary = dict(doc["summary"])
    window_s = spec.duration_s - spec.warmup_s
    summary["window_s"] = window_s
    summary["window_goodput_rps"] = summary["good"] / window_s
    summary["window_offered_rps"] = summary["requests"] / window_s
    return {
        "point": asdict(task),
        "summary": summary,
        "by_backend": doc["by_backend"],
        "quantiles": {
            "ttft_ms": _quantiles([r.ttft_ms for r in kept if r.ttft_ms is not None]),
            "tpot_ms": _quantiles([t for r in kept if (t := r.tpot_ms) is not None]),
        },
        "timing": {"cpu_s": cpu_s, "records": len(records)},
    }
