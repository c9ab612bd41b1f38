"""Run a whole matrix: capacities, then every point, in parallel processes when asked; then aggregate.

Order: (1) each workload's native shape (its request count and span at scale 1); (2) each fleet's
capacity for each workload (``capacity_rps`` from the matrix, else from a previous results file,
else the per-profile search of ``loadgen.bench.capacity``, one task per profile); (3) the points,
seed by seed (so an interrupted run has complete comparisons for its first seeds); (4) the
aggregate (``loadgen.bench.aggregate``). With ``jobs > 1`` tasks run in a ``multiprocessing`` pool
(spawned processes, each holding the matrix); every task is deterministic for its seed, so the
results do not depend on ``jobs``. Ctrl-C stops the pool and the points finished so far are
aggregated and marked partial.
"""

from __future__ import annotations

import multiprocessing
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import orjson

from loadgen.bench.aggregate import aggregate
from loadgen.bench.capacity import CapacityTask, alone, profile_groups
from loadgen.bench.capacity import search_capacity as _search
from loadgen.bench.errors import BenchError
from loadgen.bench.point import PointTask, run_point
from loadgen.bench.scaling import native_shape, scaling_for
from loadgen.bench.spec import Matrix
from loadgen.results import SCHEMA_VERSION, git_revision

_MATRIX: Matrix | None = None  # the matrix of this (worker) process


@dataclass(frozen=True, slots=True)
class RunOptions:
    out_dir: Path | None = None
    jobs: int = 1
    keep_records: bool = False
    progress: bool | None = None  # None: only when stderr is a terminal
    capacity_from: Path | None = None
    command: Sequence[str] = field(default_factory=lambda: list(sys.argv))


class Progress:
    """``[######....] 12/40 points  1m02s  ~3m10s left  <what>`` redrawn in place on stderr."""

    def __init__(self, total: int, what: str, enabled: bool | None, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr
        self.enabled = self._stream.isatty() if enabled is None else enabled
        self._total, self._what, self._done = total, what, 0
        self._start = time.monotonic()

    def step(self, label: str) -> None:
        self._done += 1
        if not self.enabled:
            return
        elapsed = time.monotonic() - self._start
        left = elapsed / self._done * (self._total - self._done)
        filled = int(24 * self._done / max(1, self._total))
        line = (
            f"[{'#' * filled}{'.' * (24 - filled)}] {self._done}/{self._total} {self._what}  "
            f"{_clock(elapsed)}  ~{_clock(left)} left  {label}"
        )
        self._stream.write("\r" + line[:160] + "\033[K")
        if self._done == self._total:
            self._stream.write("\n")
        self._stream.flush()


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s"


def _set_matrix(matrix: Matrix) -> None:
    global _MATRIX
    _MATRIX = matrix


def _init_worker(matrix: Matrix) -> None:
    _set_matrix(matrix)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops the pool


def _task(job: tuple[str, Any, Path | None, bool]) -> tuple[str, Any, dict[str, Any]]:
    kind, task, out_dir, keep_records = job
    assert _MATRIX is not None
    if kind == "point":
        return kind, task, run_point(_MATRIX, task, out_dir, keep_records)
    return kind, task, _search_task(_MATRIX, task)


def _search_task(matrix: Matrix, task: CapacityTask) -> dict[str, Any]:
    spec, cap = matrix.spec, matrix.spec.capacity
    entry = next(w for w in spec.workloads if w.name == task.workload)
    workload = matrix.workloads[task.workload]
    seed = cap.seed if cap.seed is not None else spec.seeds[0]
    window = cap.duration_s if entry.scale_by == "rate" else None
    result = _search(
        alone(matrix.fleets[task.fleet], task.backends[0]),
        workload,
        native_shape(workload, seed, window),
        entry.scale_by,
        slo=spec.slo.to_slo(),
        seed=seed,
        duration_s=cap.duration_s,
        warmup_s=cap.warmup_s,
        target_frac=cap.target_frac,
        rel_tol=cap.rel_tol,
        max_runs=cap.max_runs,
        sluice=spec.sluice,
    )
    return {**result, "backends": list(task.backends)}


def _pool_map(
    matrix: Matrix, jobs: Sequence[tuple[str, Any, Path | None, bool]], processes: int
) -> Iterator[tuple[str, Any, dict[str, Any]]]:
    if processes <= 1 or len(jobs) <= 1:
        _set_matrix(matrix)
        yield from map(_task, jobs)
        return
    ctx = multiprocessing.get_context("spawn")
    pool = ctx.Pool(min(processes, len(jobs)), initializer=_init_worker, initargs=(matrix,))
    try:
        yield from pool.imap_unordered(_task, jobs)
        pool.close()
    finally:
        pool.terminate()
        pool.join()


def _previous_capacities(path: Path | None) -> dict[str, dict[str, Any]]:
    if path is None:
        return {}
    try:
        doc = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise BenchError(f"--capacity-from {path}: cannot read a results file ({exc})") from None
    capacity = doc.get("capacity") if isinstance(doc, dict) else None
    if not isinstance(capacity, dict):
        raise BenchError(f"--capacity-from {path}: no 'capacity' block (not a sluice bench results.json)")
    return capacity


class MatrixRun:
    """State of one ``sluice bench`` run; ``run()`` returns the results document."""

    def __init__(self, matrix: Matrix, options: RunOptions) -> None:
        self.matrix = matrix
        self.options = options
        self.capacity: dict[str, dict[str, Any]] = {}
        self.points: list[dict[str, Any]] = []
        self.partial_reason: str | None = None
        self._started = time.monotonic()
        self._started_at = datetime.now(UTC).isoformat(timespec="seconds")
        self._git_rev = git_revision()  # the code that runs the points, not what is checked out at the end

    def run(self) -> dict[str, Any]:
        try:
            self._capacities()
            self._points()
        except KeyboardInterrupt:
            self.partial_reason = "interrupted"
        return self.document()

    def _capacities(self) -> None:
        spec = self.matrix.spec
        previous = _previous_capacities(self.options.capacity_from)
        searches: list[tuple[str, Any, Path | None, bool]] = []
        for fleet in self.matrix.fleets:
            for entry in spec.workloads:
                fixed = entry.capacity_rps.get(fleet)
                before = previous.get(fleet, {}).get(entry.name)
                if fixed is not None:
                    self.capacity.setdefault(fleet, {})[entry.name] = {
                        "capacity_rps": fixed,
                        "source": "matrix file",
                    }
                elif before is not None:
                    source = f"{self.options.capacity_from} ({before.get('source')})"
                    self.capacity.setdefault(fleet, {})[entry.name] = {**before, "source": source}
                else:
                    for profile, backends in profile_groups(self.matrix.fleets[fleet]).items():
                        searches.append(
                            ("capacity", CapacityTask(fleet, entry.name, profile, backends), None, False)
                        )
        if not searches:
            return
        bar = Progress(len(searches), "capacity searches", self.options.progress)
        found: dict[tuple[str, str], dict[str, Any]] = {}
        for _, task, result in _pool_map(self.matrix, searches, self.options.jobs):
            found.setdefault((task.fleet, task.workload), {})[task.profile] = result
            bar.step(f"{task.fleet}/{task.workload}/{task.profile}")
        for (fleet, workload), by_profile in sorted(found.items()):
            total = sum((r["rate_rps"] or 0.0) * len(r["backends"]) for r in by_profile.values())
            if total <= 0:
                raise BenchError(f"no backend of fleet {fleet!r} meets the SLO on {workload!r} at any rate")
            self.capacity.setdefault(fleet, {})[workload] = {
                "capacity_rps": total,
                "source": "search",
                "by_profile": dict(sorted(by_profile.items())),
            }

    def point_tasks(self) -> list[PointTask]:
        spec = self.matrix.spec
        tasks = []
        for entry in spec.workloads:
            workload = self.matrix.workloads[entry.name]
            window = spec.duration_s if entry.scale_by == "rate" else None
            shapes = {
                seed: native_shape(workload, seed, window) for seed in spec.seeds
            }  # seeds draw arrivals
            for fleet in self.matrix.fleets:
                capacity = self.capacity[fleet][entry.name]["capacity_rps"]
                for load in spec.load_levels:
                    for seed in spec.seeds:
                        scaling = scaling_for(
                            workload, shapes[seed], entry.scale_by, load * capacity, spec.duration_s, seed,
                            spec.warmup_s,
                        )  # fmt: skip
                        for policy in spec.policies:
                            tasks.append(PointTask(fleet, entry.name, load, policy.key, seed, scaling))
        return sorted(tasks, key=lambda t: (t.seed, t.fleet, t.workload, t.load_level, t.policy))

    def _points(self) -> None:
        tasks = self.point_tasks()
        jobs = [("point", t, self.options.out_dir, self.options.keep_records) for t in tasks]
        bar = Progress(len(jobs), "points", self.options.progress)
        for _, task, result in _pool_map(self.matrix, jobs, self.options.jobs):
            self.points.append(result)
            bar.step(f"{task.workload} {task.load_level:g}x {task.policy} seed {task.seed}")

    def document(self) -> dict[str, Any]:
        spec = self.matrix.spec
        roles = {p.key: p.role for p in spec.policies}
        return {
            "schema_version": SCHEMA_VERSION,
            "kind": "bench_matrix",
            "name": spec.name,
            "description": spec.description,
            "matrix_file": self.matrix.path,
            "command": list(self.options.command),
            "git_rev": self._git_rev,
            "started_at": self._started_at,
            "partial": self.partial_reason is not None,
            "partial_reason": self.partial_reason,
            "slo": spec.slo.model_dump(),
            "seeds": list(spec.seeds),
            "duration_s": spec.duration_s,
            "warmup_s": spec.warmup_s,
            "load_levels": list(spec.load_levels),
            "reference": spec.reference,
            "spec": spec.model_dump(mode="json"),
            "capacity": self.capacity,
            "results": aggregate(self.points, roles, spec.reference),
            "timing": {
                "wall_s": time.monotonic() - self._started,
                "jobs": self.options.jobs,
                "points_done": len(self.points),
                "point_cpu_s": sum(p["timing"]["cpu_s"] for p in self.points),
            },
        }


def run_matrix(matrix: Matrix, options: RunOptions) -> dict[str, Any]:
    """Run ``matrix`` and return its results document (see ``docs/benchmarks.md``)."""
    return MatrixRun(matrix, options).run()
