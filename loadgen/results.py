"""Summarise per-request records into the results document (schema: ``docs/results-schema.md``).

Everything here is a pure function of the records, so a real replay and a
virtual-time simulation are summarised by the same code. Rules:

* Warm-up: requests scheduled before ``warmup_s`` are left out of every
  statistic (they still appear in ``requests.jsonl.gz``).
* ``requests`` counts included requests that were sent; ``not_sent`` (run
  interrupted first) are reported apart and count nowhere else.
* Latency statistics (``mean``, ``p50``, ``p90``, ``p99``, ``max``; linear
  interpolation as ``numpy.percentile``, like vLLM) are over completed (``ok``)
  requests; ``itl_ms`` pools every chunk gap of every completed request, as
  vLLM does.
* ``duration_s`` = last end − first send over included sent requests;
  throughput, output tokens/s and goodput divide by it.
* A request is *good* when it completed and meets every given SLO bound
  (vLLM ``--goodput`` semantics; TPOT of a 1-token answer counts as met).
  ``slo_attainment_frac`` = good / requests (shed and failed requests count as
  misses); ``admitted_slo_attainment_frac`` = good / completed.
"""

from __future__ import annotations

import math
import subprocess
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from loadgen.records import Outcome, RequestRecord

SCHEMA_VERSION = 1
Stats = dict[str, float | int] | None


@dataclass(frozen=True, slots=True)
class SLO:
    """Per-request latency bounds in milliseconds; ``None`` = no bound on that metric."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2e_ms: float | None = None

    def met_by(self, record: RequestRecord) -> bool:
        if record.outcome is not Outcome.OK:
            return False
        if self.ttft_ms is not None and (record.ttft_ms is None or record.ttft_ms > self.ttft_ms):
            return False
        tpot = record.tpot_ms
        if self.tpot_ms is not None and tpot is not None and tpot > self.tpot_ms:
            return False
        return not (self.e2e_ms is not None and (record.e2e_ms is None or record.e2e_ms > self.e2e_ms))

    @property
    def empty(self) -> bool:
        return self.ttft_ms is None and self.tpot_ms is None and self.e2e_ms is None

    def to_json(self) -> dict[str, float | None]:
        return asdict(self)


def stats(values: Sequence[float]) -> Stats:
    """mean/p50/p90/p99/max/count of ``values``; ``None`` when empty."""
    if not values:
        return None
    arr = np.asarray(values, dtype=float)
    p50, p90, p99 = np.percentile(arr, [50, 90, 99])
    return {
        "count": len(values),
        "mean": float(arr.mean()),
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "max": float(arr.max()),
    }


def included(records: Iterable[RequestRecord], warmup_s: float = 0.0) -> list[RequestRecord]:
    return [r for r in records if r.scheduled_s >= warmup_s]


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


def summarise(records: Sequence[RequestRecord], slo: SLO, warmup_s: float = 0.0) -> dict[str, Any]:
    """The headline block for one set of records (also used per class, tenant and backend)."""
    rows = included(records, warmup_s)
    sent = [r for r in rows if r.outcome is not Outcome.NOT_SENT]
    by_outcome = {o.value: 0 for o in Outcome}
    for r in rows:
        by_outcome[r.outcome.value] += 1
    ok = [r for r in sent if r.outcome is Outcome.OK]
    good = sum(1 for r in ok if slo.met_by(r))
    starts = [r.sent_s for r in sent if r.sent_s is not None]
    ends = [r.end_s for r in sent if r.end_s is not None]
    duration_s = max(ends) - min(starts) if starts and ends else 0.0
    output_tokens = sum(r.output_tokens for r in ok)
    tpots = [t for r in ok if (t := r.tpot_ms) is not None]
    cached = [r for r in ok if r.cached_prompt_tokens is not None and r.prompt_tokens]
    return {
        "requests": len(sent),
        "completed": len(ok),
        "shed": by_outcome[Outcome.SHED.value],
        "unavailable": by_outcome[Outcome.UNAVAILABLE.value],
        "errors": by_outcome[Outcome.ERROR.value],
        "cancelled": by_outcome[Outcome.CANCELLED.value],
        "not_sent": by_outcome[Outcome.NOT_SENT.value],
        "retried": sum(1 for r in sent if r.attempts > 1),
        "shed_frac": _ratio(by_outcome[Outcome.SHED.value], len(sent)),
        "duration_s": duration_s,
        "throughput_rps": _ratio(len(ok), duration_s),
        "output_tokens": output_tokens,
        "output_tokens_per_s": _ratio(output_tokens, duration_s),
        "good": good,
        "goodput_rps": _ratio(good, duration_s) if not slo.empty else None,
        "slo_attainment_frac": _ratio(good, len(sent)) if not slo.empty else None,
        "admitted_slo_attainment_frac": _ratio(good, len(ok)) if not slo.empty else None,
        "ttft_ms": stats([r.ttft_ms for r in ok if r.ttft_ms is not None]),
        "tpot_ms": stats(tpots),
        "itl_ms": stats([gap for r in ok for gap in r.itl_ms]),
        "e2e_ms": stats([r.e2e_ms for r in ok if r.e2e_ms is not None]),
        "send_lag_ms": stats([lag for r in sent if (lag := r.send_lag_ms) is not None]),
        "cached_prompt_frac": _ratio(
            sum(r.cached_prompt_tokens or 0 for r in cached), sum(r.prompt_tokens or 0 for r in cached)
        ),
    }


def breakdown(
    records: Sequence[RequestRecord], key: Callable[[RequestRecord], str | None], slo: SLO, warmup_s: float
) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[RequestRecord]] = defaultdict(list)
    for r in included(records, warmup_s):
        groups[key(r) or "(none)"].append(r)
    total = sum(len(g) for g in groups.values())
    out = {}
    for name in sorted(groups):
        block = summarise(groups[name], slo)
        block["share_frac"] = _ratio(len(groups[name]), total)
        out[name] = block
    return out


def git_revision(repo: Path | None = None) -> str | None:
    """``HEAD`` of the repository holding this package, with ``-dirty`` if it has local changes."""
    where = repo or Path(__file__).resolve().parents[1]
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, check=True, timeout=5
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where, capture_output=True, text=True, check=True, timeout=5,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return rev + ("-dirty" if dirty else "")


def results_document(
    records: Sequence[RequestRecord],
    *,
    slo: SLO,
    warmup_s: float,
    meta: Mapping[str, Any],
    partial: bool = False,
    partial_reason: str | None = None,
) -> dict[str, Any]:
    """The whole results JSON: ``meta`` (command, config, target, workload, seed …) plus the summaries."""
    doc: dict[str, Any] = {"schema_version": SCHEMA_VERSION, **meta}
    doc.update(
        partial=partial,
        partial_reason=partial_reason,
        slo=slo.to_json(),
        warmup_s=warmup_s,
        summary=summarise(records, slo, warmup_s),
        by_priority=breakdown(records, lambda r: r.priority, slo, warmup_s),
        by_tenant=breakdown(records, lambda r: r.tenant, slo, warmup_s),
        by_backend=breakdown(records, lambda r: r.backend, slo, warmup_s),
    )
    cleaned: dict[str, Any] = _finite(doc)
    return cleaned


def _finite(value: Any) -> Any:
    """NaN/inf are not JSON; they become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
