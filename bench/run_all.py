"""``make bench``: run the self-contained benchmarks in sequence, then summarise every result file.

Each step is one ``bench/*.py`` script run as its own process (``sys.executable``, repository root
as working directory) with its documented default flags, so a step here measures exactly what
running the script by hand measures and writes the same ``bench/results/*.json``. Default steps are
the cheap ones (about 10-15 minutes in total on a 2-core machine): the simulator's speed and
agreement, the load client's capacity, the predictor and decision costs, the proxy overhead, the
metrics parser, the llama.cpp prefix-cache checks and the L4 profile derivation. ``--all`` adds the
long ones: the peer-router comparison (``bench/peers.py``, ~1 hour; it creates ``.peers-venv`` from
PyPI when missing), the aiperf cross-check (creates ``.aiperf-venv``) and the predictor evaluation
(``sluice predict eval``, training on ``/work/shared/data``).

A step whose system tools are missing (``nginx``/``wrk`` for the overhead benchmark) is skipped with
the reason; a failing step is reported and the others still run; the exit status is 1 if any step
failed. Steps that measure wall-clock latency can hold an exclusive ``flock`` on ``--lock FILE``
while they run, so benchmarks of several users of one machine do not overlap (CPU-only steps do not
take it). After the runs, the summary prints each result file's headline figures against the
issue's target (``bench/_headlines.py``), with the git revision the file was produced at and whether
this invocation refreshed it.

Usage: ``python bench/run_all.py [--all] [--only NAME ...] [--list] [--summary-only]
[--lock /tmp/sluice-realtime.lock] [--peers-venv DIR] [--aiperf-venv DIR]``
"""

from __future__ import annotations

import argparse
import fcntl
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _headlines import git_rev_of, headlines

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


@dataclass(frozen=True, slots=True)
class Step:
    name: str
    argv: tuple[str, ...]  # after the interpreter: a script path or ``-m module``, then its flags
    results: tuple[str, ...]  # result file stems it (re)writes
    realtime: bool = False  # measures wall-clock latency: takes --lock
    needs: tuple[str, ...] = ()  # executables that must be on PATH
    long: bool = False  # only with --all


STEPS = (
    Step("engine_metrics_parse", ("bench/engine_metrics_parse.py",), ("engine_metrics_parse",)),
    Step("derive_l4_profile", ("bench/derive_l4_profile.py",), ("l4_derivation",)),
    Step("predictor_speed", ("bench/predictor_speed.py",), ("predictor_speed",)),
    Step("decision_cost", ("bench/decision_cost.py",), ("decision_cost",)),
    Step("sim_virtual_speed", ("bench/sim_virtual_speed.py",), ("sim_virtual_speed_round_robin",)),
    Step("latency_sim_eval", ("bench/latency_sim_eval.py",), ("latency_sim_eval",)),
    Step("sim_agreement", ("bench/sim_agreement.py",), ("sim_agreement",), realtime=True),
    Step("sim_capacity", ("bench/sim_capacity.py",), ("sim_capacity",), realtime=True),
    Step("client_capacity", ("bench/client_capacity.py", "--quick"), ("client_capacity",), realtime=True),
    Step("overhead", ("bench/overhead.py",), ("overhead",), realtime=True, needs=("nginx", "wrk")),
    Step("llamacpp_prefix", ("bench/llamacpp_prefix.py",), ("llamacpp_prefix",), realtime=True),
    Step(
        "llamacpp_through_sluice",
        ("bench/llamacpp_through_sluice.py",),
        ("llamacpp_through_sluice",),
        realtime=True,
    ),
    Step(
        "predictor_eval",
        ("-m", "sluice", "predict", "eval", "--out", "bench/results/predictor_eval.json"),
        ("predictor_eval",),
        long=True,
    ),
    Step(
        "aiperf_crosscheck", ("bench/aiperf_crosscheck.py",), ("aiperf_crosscheck",), realtime=True, long=True
    ),
    Step(
        "peers",
        ("bench/peers.py", "--scenario", "all"),
        ("peers_prefix", "peers_hetero", "peers_issue6"),
        realtime=True,
        needs=("nginx",),
        long=True,
    ),
)


@dataclass(slots=True)
class Outcome:
    step: Step
    status: str  # "ok", "failed (exit N)", "skipped: ..."
    wall_s: float = 0.0


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold ``flock(LOCK_EX)`` on ``path`` (the same lock ``flock(1) path cmd`` takes)."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def step_argv(step: Step, args: argparse.Namespace) -> list[str]:
    argv = [sys.executable, *step.argv]
    if step.name == "peers" and args.peers_venv is not None:
        argv += ["--peers-venv", str(args.peers_venv)]
    if step.name == "aiperf_crosscheck" and args.aiperf_venv is not None:
        argv += ["--aiperf-venv", str(args.aiperf_venv)]
    return argv


def run_step(step: Step, args: argparse.Namespace) -> Outcome:
    missing = [tool for tool in step.needs if shutil.which(tool) is None]
    if missing:
        return Outcome(step, f"skipped: needs {', '.join(missing)} on PATH")
    argv = step_argv(step, args)
    lock = exclusive_lock(args.lock) if step.realtime and args.lock is not None else nullcontext()
    print(f"\n=== {step.name}: {' '.join(argv[1:])}", flush=True)
    with lock:
        started = time.monotonic()
        done = subprocess.run(argv, cwd=ROOT, check=False)
        wall_s = time.monotonic() - started
    status = "ok" if done.returncode == 0 else f"failed (exit {done.returncode})"
    return Outcome(step, status, wall_s)


def selected(args: argparse.Namespace) -> list[Step]:
    if args.only:
        known = {s.name for s in STEPS}
        unknown = sorted(set(args.only) - known)
        if unknown:
            raise SystemExit(f"unknown step(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return [s for s in STEPS if s.name in args.only]
    return [s for s in STEPS if args.all or not s.long]


def summary_lines(refreshed: set[str]) -> list[str]:
    """One block per result file: its headline figures, target and verdict."""
    lines = ["", "=== summary of bench/results (MISS = target not met; * = refreshed by this run)"]
    unread = []
    for path in sorted(RESULTS.glob("*.json")):
        try:
            heads = headlines(path)
            rev = git_rev_of(path)
        except (KeyError, TypeError, ValueError) as exc:
            lines.append(f"{path.name}: unreadable ({type(exc).__name__}: {exc})")
            continue
        if not heads:
            unread.append(path.stem)
            continue
        mark = "*" if path.stem in refreshed else " "
        lines.append(f"{mark}{path.stem}  (git {rev})")
        for h in heads:
            verdict = "" if h.ok is None else ("ok" if h.ok else "MISS")
            target = f"target {h.target}" if h.target else ""
            lines.append(f"    {h.figure:<58} {h.value:>20}  {target:<18} {verdict}")
    if unread:
        lines.append(f"other result files (no headline reader): {', '.join(unread)}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--all", action="store_true", help="also the long steps (peers, aiperf, predictor eval)"
    )
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these steps")
    parser.add_argument("--list", action="store_true", help="list the steps and exit")
    parser.add_argument("--summary-only", action="store_true", help="run nothing; summarise the result files")
    parser.add_argument("--lock", type=Path, help="flock this file around wall-clock benchmarks")
    parser.add_argument("--peers-venv", type=Path, help="passed to bench/peers.py (default .peers-venv)")
    parser.add_argument("--aiperf-venv", type=Path, help="passed to bench/aiperf_crosscheck.py")
    args = parser.parse_args(argv)
    if args.list:
        for s in STEPS:
            kind = ("long, --all; " if s.long else "") + ("wall-clock" if s.realtime else "CPU")
            print(f"{s.name:<26} {kind:<22} {' '.join(s.argv)}")
        return 0
    outcomes = [] if args.summary_only else [run_step(s, args) for s in selected(args)]
    refreshed = {stem for o in outcomes if o.status == "ok" for stem in o.step.results}
    print("\n".join(summary_lines(refreshed)))
    if outcomes:
        print("\n=== steps")
        for o in outcomes:
            print(f"    {o.step.name:<26} {o.status:<40} {o.wall_s:7.0f} s")
    return 1 if any(o.status.startswith("failed") for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
