"""Decision cost: features + admission + predictions + route for one request over a 64-backend fleet.

What is timed, per request, around the three calls the data plane makes
before forwarding (``router.handlers``), with ``time.thread_time_ns`` (CPU
time of this thread, so a descheduled moment on the shared machine does not
count) and ``time.perf_counter_ns`` (wall):

1. ``core.features.build_features`` on the parsed body (prompt rendering,
   token estimate, prefix-chunk hashing);
2. ``DecisionEngine.admit`` (prefix-index match, the predictor's output
   length and per-backend costs, the admission rule) - with the default
   config: predictors enabled, admission on;
3. ``DecisionEngine.route`` (the policy pipeline on the same predictions,
   the decision-log append).

``on_routed`` (recording the prompt in the prefix index) happens after the
backend is chosen and is reported separately. Requests are ShareGPT
conversations (shared/data), one request per user turn carrying the whole
history, each behind one of 4 shared system prompts, replayed in order, so
multi-turn prefix reuse exercises the index.

The fleet evolves as the proxy's does (``state.fleet`` rebuilds only the
views that changed and takes a new snapshot): per request the chosen backend
gains the request, a random running request completes (its outcome goes to
``DecisionEngine.observe``, so the latency model re-learns that backend), and
with probability 0.64 one backend's engine metrics are re-scraped (64
backends scraped once a second at 100 requests/s). 64 backends
(H100/A100/L4 mix). GC as in ``sluice serve`` (``sluice.heap``): start-up
objects frozen (``gc.freeze``), the collector enabled with the proxy's
thresholds.

``observe`` (the outcome fed back: admission bookkeeping, prefix-index
correction, latency and length learning) runs between requests and is
reported separately too, per observed outcome. ``--backends 2`` times the
same path on the 2-backend fleet of ``bench/overhead.py``.

Usage: ``python bench/decision_cost.py [--requests N] [--rounds R] [--policy NAME ...] [--backends N]``
``--target-scope`` turns admission off: ``admit`` then answers at once and ``route`` makes the same
prefix match and predictions, so the total is issue 6's target scope (features + predictions +
route) without the admission rule; the default total includes it.
``--digest`` times nothing and prints a SHA-256 of every decision per policy (verdicts, rankings,
scores, removed maps, predicted values and every backend's predicted cost): run it with
``DECISION_COST_TREE=<older checkout>`` too, and a pure speed-up leaves the digests equal.
Writes ``bench/results/decision_cost.json``. Target (issue 6): p99 <= 100 µs for
sluice_predictive. Timings are noisy on a shared 2-core machine: compare
ratios within one run.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import hashlib
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from dataclasses import replace
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve()
# The code under test: this checkout, or another one (``--baseline`` runs an older revision's packages).
ROOT = Path(os.environ.get("DECISION_COST_TREE") or SCRIPT.parents[1]).resolve()
sys.path.insert(0, str(ROOT))

from _results import hot_path  # noqa: E402

from core.clock import ManualClock  # noqa: E402
from core.config import load_config_text  # noqa: E402
from core.features import build_features  # noqa: E402
from core.types import (  # noqa: E402
    Admit,
    BackendView,
    Endpoint,
    FleetSnapshot,
    Health,
    Outcome,
    RequestFeatures,
    Shed,
)
from decision.engine import DecisionEngine  # noqa: E402
from sluice.heap import GEN0_THRESHOLD, GEN1_THRESHOLD, GEN2_THRESHOLD, restore, settle_after_startup  # noqa: E402
from state.prefix_index import PrefixIndex  # noqa: E402

SHAREGPT = Path("/work/shared/data/sharegpt/sharegpt_v3_first17671.jsonl.gz")
RESULTS = SCRIPT.parents[1] / "bench" / "results" / "decision_cost.json"
N_BACKENDS = 64  # --backends sets it (at most 64) before anything is built
# --target-scope: admission off, so the total is issue 6's scope (features + predictions + route) alone
ADMISSION_OFF = False
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


CLASSES = ["h100"] * 24 + ["a100"] * 24 + ["l4"] * 16


def initial_views(rng: random.Random) -> list[BackendView]:
    views = []
    for i in range(N_BACKENDS):
        in_flight = rng.randrange(0, 160)
        awaiting = rng.randrange(0, in_flight // 3 + 1)
        views.append(
            BackendView(
                backend_id=f"gpu-{i:02d}",
                models=frozenset({MODEL}),
                gpu_class=CLASSES[i],
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
                kv_capacity_tokens=1_000_000,
            )
        )
    return views


# Whether the tree under test's snapshots carry the fleet's ids (``FleetSnapshot.backend_ids``, which
# ``state.fleet`` passes as one tuple shared by every snapshot); an older tree (``--baseline``) has none.
SNAPSHOT_IDS = "backend_ids" in {f.name for f in dataclasses.fields(FleetSnapshot)}


class Fleet:
    """The fleet between requests, changed as the proxy's state changes (module docstring); untimed."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.views = initial_views(rng)
        self.ids = tuple(view.backend_id for view in self.views)  # fixed membership, as state.fleet's
        self.version = 0
        self.running: list[tuple[RequestFeatures, str]] = []

    def snapshot(self, now_s: float) -> FleetSnapshot:
        self.version += 1
        if SNAPSHOT_IDS:  # as state.fleet builds them
            return FleetSnapshot(
                tuple(self.views), taken_at_s=now_s, version=self.version, backend_ids=self.ids
            )
        return FleetSnapshot(tuple(self.views), taken_at_s=now_s, version=self.version)

    def _change(self, backend_id: str, **fields: Any) -> None:
        slot = int(backend_id[4:])
        self.views[slot] = replace(self.views[slot], **fields)

    def dispatched(self, features: RequestFeatures, backend_id: str) -> None:
        view = self.views[int(backend_id[4:])]
        self._change(
            backend_id,
            in_flight_requests=view.in_flight_requests + 1,
            awaiting_first_byte=view.awaiting_first_byte + 1,
            in_flight_prompt_tokens=view.in_flight_prompt_tokens + features.prompt_tokens,
        )
        self.running.append((features, backend_id))

    def step(self, engine: DecisionEngine, now_s: float) -> int | None:
        """One completion (fed back to the engine) and, sometimes, one engine-metrics scrape.

        Returns the wall ns ``engine.observe`` took, or None when nothing completed."""
        rng = self.rng
        observe_ns: int | None = None
        if len(self.running) > 200 or (self.running and rng.random() < 0.9):
            features, backend_id = self.running.pop(rng.randrange(len(self.running)))
            view = self.views[int(backend_id[4:])]
            self._change(
                backend_id,
                in_flight_requests=max(0, view.in_flight_requests - 1),
                awaiting_first_byte=max(0, view.awaiting_first_byte - 1),
                in_flight_prompt_tokens=max(0, view.in_flight_prompt_tokens - features.prompt_tokens),
                ewma_tpot_ms=rng.uniform(5.0, 80.0),
            )
            ttft_ms = rng.uniform(30.0, 1_500.0)
            output_tokens = rng.randrange(1, 800)
            outcome = Outcome(
                request_id=features.request_id,
                backend_id=backend_id,
                route="chat",
                model=MODEL,
                tenant="default",
                status_code=200,
                prompt_tokens=features.prompt_tokens,
                output_tokens=output_tokens,
                cached_prompt_tokens=features.prompt_tokens // 2,
                ttft_ms=ttft_ms,
                e2e_ms=ttft_ms + output_tokens * rng.uniform(5.0, 60.0),
                finished_at_s=now_s,
            )
            t0 = time.perf_counter_ns()
            engine.observe(outcome)
            observe_ns = time.perf_counter_ns() - t0
        if rng.random() < 0.64:
            slot = rng.randrange(N_BACKENDS)
            view = self.views[slot]
            self._change(
                view.backend_id,
                engine_running=view.in_flight_requests - view.awaiting_first_byte,
                engine_waiting=view.awaiting_first_byte,
                kv_usage_frac=rng.random(),
                metrics_stale=False,
            )
        return observe_ns


def engine_for(policy: str) -> DecisionEngine:
    backends = "".join(
        f"  - {{name: gpu-{i:02d}, url: 'http://127.0.0.1:{9000 + i}', models: [{MODEL}]}}\n"
        for i in range(N_BACKENDS)
    )
    text = (
        f"backends:\n{backends}"
        f"routes:\n  - name: chat\n    policy: {{name: {policy}}}\n    slo: {{ttft_ms: 2000, tpot_ms: 100}}\n"
    )
    if ADMISSION_OFF:
        # The engine then skips admission's rule: ``admit`` answers Admit at once and ``route`` makes the
        # prefix match and the predictions itself (the same ones), so features + admit + route is the
        # target's scope. Routing decisions are the same as with admission on (it never changes them).
        text += "admission: {enabled: false}\n"
    return DecisionEngine.from_config(load_config_text(text), ManualClock(), random.Random(1))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


STAGES = ("features", "admit", "route", "total", "total_cpu", "on_routed", "observe")


def decision_digest(verdict: object, decision: Any, predictions: Any) -> bytes:
    """What a request's decisions were, as bytes for ``--digest``: a speed-up must leave them unchanged.

    The verdict, the ranking, every scorer's scores, the removed map, the predicted TTFT/E2E/output
    tokens and every backend's predicted cost (floats by ``repr``: every bit)."""
    costs = (
        None
        if predictions is None
        else (predictions.output_length, [(b, predictions.per_backend[b]) for b in predictions.per_backend])
    )
    scores = {name: dict(values) for name, values in decision.scores.items()}
    parts = (
        verdict,
        decision.ranked,
        scores,
        dict(decision.removed),
        decision.predicted_ttft_ms,
        decision.predicted_e2e_ms,
        decision.predicted_output_tokens,
        costs,
    )
    return repr(parts).encode()


def run_policy(
    policy: str, bodies: list[tuple[str, dict[str, Any]]], digest: Any | None = None
) -> dict[str, Any]:
    """Time every request of ``bodies`` (module docstring); with ``digest`` (a hashlib object), also feed
    it every request's decisions (``decision_digest``; reading them is outside the timed calls)."""
    engine = engine_for(policy)
    # As ``sluice serve`` does after start-up; the bodies are frozen too, as a proxy holds no such heap.
    previous_gc = settle_after_startup()
    clock = engine._clock
    assert isinstance(clock, ManualClock)
    fleet = Fleet(random.Random(2))
    samples: dict[str, list[int]] = {k: [] for k in STAGES}
    queued = 0
    wall = time.perf_counter_ns
    cpu = time.thread_time_ns  # excludes time this thread spent descheduled (the machine is shared)
    for i, (session, body) in enumerate(bodies):
        clock.advance(0.01)
        snap = fleet.snapshot(clock.now_s())
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
        verdict = engine.admit(features, snap)
        t2 = wall()
        if digest is not None:  # untimed in effect: --digest runs are not timing runs
            pending = engine._pending.get(features.request_id)
            request = pending.request if pending is not None else None
            predictions = request.predictions if request is not None else None
        decision = engine.route(features, snap)
        t3 = wall()
        c3 = cpu()
        if not isinstance(verdict, Admit):
            # A Queue verdict (e.g. the prefill cap on a backend with many requests awaiting their first
            # byte) is a real decision too: it is timed, counted, and the request is routed as the waiting
            # room would once it is dispatched. Sheds are not expected on this fleet.
            assert not isinstance(verdict, Shed), verdict
            queued += 1
        assert decision.chosen is not None
        engine.on_routed(features, decision, decision.chosen)
        t4 = wall()
        if digest is not None:
            digest.update(decision_digest(verdict, decision, predictions))
        per_request = (t1 - t0, t2 - t1, t3 - t2, t3 - t0, c3 - c0, t4 - t3)
        for stage, value in zip(STAGES[:-1], per_request, strict=True):  # observe: per outcome, below
            samples[stage].append(value)
        fleet.dispatched(features, decision.chosen)
        observe_ns = fleet.step(engine, clock.now_s())
        if observe_ns is not None:
            samples["observe"].append(observe_ns)
    restore(previous_gc)
    warm = len(bodies) // 10  # the first 10% warm the prefix index, the latency model and caches
    index = engine.prefix_index
    out: dict[str, Any] = {"policy": policy, "requests_timed": len(bodies) - warm, "queue_verdicts": queued}
    for stage in STAGES:
        out[f"{stage}_us"] = summary(samples[stage][warm:])
    out["prefix_index_entries"] = len(index) if index is not None else 0
    return out


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


def git_rev(tree: Path = ROOT) -> str:
    """The tree's commit (a ``REVISION`` file stands in for an exported checkout without ``.git``)."""
    if (tree / "REVISION").is_file():
        return (tree / "REVISION").read_text().strip()
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=tree, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


METRICS = tuple(f"{stage}_us" for stage in STAGES)


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


def print_table(results: list[dict[str, Any]], which: str, title: str = "") -> None:
    header = ("features", "admit", "route", "total wall", "total CPU", "on_routed", "observe")
    print(f"{title} p50/p99 in µs, {which} of the rounds (total = features + admit + route)".strip())
    print(f"{'policy':<21}" + "".join(f"{h:>16}" for h in header))
    for r in results:
        line = "".join(f"{r[m]['p50'][which]:>8.1f}/{r[m]['p99'][which]:<7.1f}" for m in METRICS)
        print(f"{r['policy']:<21}{line}")


def results_document(
    args: argparse.Namespace,
    results: list[dict[str, Any]],
    n_bodies: int,
    load_at_start: tuple[float, float, float],
    bytes_per_entry: float,
) -> dict[str, Any]:
    """The JSON written to bench/results: command, configuration, git rev, figures, target verdict."""
    predictive = next((r for r in results if r["policy"] == "sluice_predictive"), None)
    cpu_p99 = predictive["total_cpu_us"]["p99"] if predictive else None
    return {
        "benchmark": "decision_cost",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "git_rev": git_rev(),
        "hot_path": hot_path(ROOT),
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
            "engine": "default config: predictors enabled (bundled length model, online latency model), "
            "admission enabled, route SLO ttft 2000 ms / tpot 100 ms",
            "fleet": "evolving: per request the chosen backend +1 in flight, one completion observed, "
            "one engine-metrics scrape with probability 0.64; a new snapshot per request",
            "gc": "as sluice serve (sluice.heap): start-up objects (engine, bodies) frozen with gc.freeze(), "
            f"thresholds {GEN0_THRESHOLD}/{GEN1_THRESHOLD}/{GEN2_THRESHOLD}",
        },
        "scope": "features + predictions + route (admission off: --target-scope)"
        if args.target_scope
        else "features + admit (prefix match, predictions, admission rule) + route",
        "target": {
            "policy": "sluice_predictive",
            "features_admit_route_p99_us": 100.0,
            "judged_on": "CPU time of the deciding thread (time.thread_time_ns), best and median round",
        },
        "target_met_best_round": cpu_p99 is not None and cpu_p99["best"] <= 100.0,
        "target_met_median_round": cpu_p99 is not None and cpu_p99["median"] <= 100.0,
        "results": results,
        "prefix_index_bytes_per_entry": round(bytes_per_entry, 1),
    }


def run_rounds(args: argparse.Namespace, policies: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Every round of every policy, in this process (policies interleaved within each round)."""
    bodies = load_bodies(args.requests)
    per_policy: dict[str, list[dict[str, Any]]] = {p: [] for p in policies}
    for _ in range(args.rounds):  # interleaved, so every policy sees the same mix of quiet and busy moments
        for p in policies:
            per_policy[p].append(run_policy(p, bodies))
    return per_policy


def run_tree_round(tree: Path, args: argparse.Namespace, policies: list[str]) -> dict[str, dict[str, Any]]:
    """One round of every policy on ``tree``'s packages, in a fresh process (same script, same workload)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rounds.json"
        command = [sys.executable, str(SCRIPT), "--requests", str(args.requests), "--rounds", "1"]
        command += ["--backends", str(args.backends)] + (["--target-scope"] if args.target_scope else [])
        command += [f"--policy={p}" for p in policies] + ["--raw-rounds-out", str(out)]
        env = {**os.environ, "DECISION_COST_TREE": str(tree)}
        subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
        rounds: dict[str, list[dict[str, Any]]] = json.loads(out.read_text())
    return {p: r[0] for p, r in rounds.items()}


Rounds = dict[str, list[dict[str, Any]]]  # policy -> one result per round


def compare_trees(args: argparse.Namespace, policies: list[str]) -> dict[str, Rounds]:
    """Rounds alternating between this checkout and ``--baseline``, so both see the same host load."""
    trees = {"after": ROOT, "before": args.baseline.resolve()}
    per_tree: dict[str, Rounds] = {k: {p: [] for p in policies} for k in trees}
    for _ in range(args.rounds):
        for label, tree in trees.items():
            for policy, result in run_tree_round(tree, args, policies).items():
                per_tree[label][policy].append(result)
    return per_tree


def ratios(after: list[dict[str, Any]], before: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per policy, before / after of the total CPU p50 and p99 (median and best round)."""
    out: dict[str, dict[str, float]] = {}
    for a, b in zip(after, before, strict=True):
        out[a["policy"]] = {
            f"total_cpu_{stat}_{which}": round(
                b["total_cpu_us"][stat][which] / max(a["total_cpu_us"][stat][which], 1e-9), 2
            )
            for stat in ("p50", "p99")
            for which in ("median", "best")
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--policy", action="append", default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--backends", type=int, default=64, choices=range(1, 65), metavar="1..64")
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="a checkout of an older revision: alternate rounds between it and this one (subprocesses)",
    )
    parser.add_argument("--raw-rounds-out", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--target-scope",
        action="store_true",
        help="admission off: the total is then issue 6's scope, features + predictions + route",
    )
    parser.add_argument(
        "--digest",
        action="store_true",
        help="no timing: print a SHA-256 of every decision per policy (compare two trees with "
        "DECISION_COST_TREE=<tree>: a pure speed-up keeps them equal)",
    )
    args = parser.parse_args()
    global N_BACKENDS, ADMISSION_OFF
    N_BACKENDS = args.backends
    ADMISSION_OFF = args.target_scope
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
    if args.digest:
        bodies = load_bodies(args.requests)
        for policy in policies:
            digest = hashlib.sha256()
            run_policy(policy, bodies, digest)
            print(f"digest {N_BACKENDS} backends {policy:<21} {digest.hexdigest()}")
        return 0
    if args.raw_rounds_out is not None:  # a child of --baseline: raw rounds only
        args.raw_rounds_out.write_text(json.dumps(run_rounds(args, policies)))
        return 0
    baseline: dict[str, Any] | None = None
    if args.baseline is not None:
        per_tree = compare_trees(args, policies)
        per_policy = per_tree["after"]
        before = [aggregate(per_tree["before"][p]) for p in policies]
        print_table(before, "median", f"BEFORE ({args.baseline})")
        baseline = {
            "tree": str(args.baseline),
            "git_rev": git_rev(args.baseline),
            "hot_path": hot_path(args.baseline),
            "results": before,
        }
    else:
        per_policy = run_rounds(args, policies)
    results = [aggregate(per_policy[p]) for p in policies]
    if baseline is not None:
        baseline["ratios"] = ratios(results, baseline["results"])
        for policy, figures in baseline["ratios"].items():
            print(f"before/after {policy:<21}", figures)
    print_table(results, "best")
    print_table(results, "median")
    bytes_per_entry = index_bytes_per_entry(200_000)
    print(f"prefix index: {bytes_per_entry:.0f} bytes per entry (tracemalloc, 200k entries, 64 backends)")
    output = results_document(args, results, args.requests, load_at_start, bytes_per_entry)
    output["baseline"] = baseline
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(output, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
