"""Where the decision cost's p99 goes: a per-stage breakdown of the slowest requests only.

``bench/decision_cost.py`` times three calls per request; its p99 is set by the slowest 1 % of
requests, and cutting the average need not cut them. This script replays the same workload, fleet
and engine (imported from ``decision_cost``) but makes the engine's calls one by one, each timed on
its own (wall clock, ``perf_counter_ns``), in the order and with the arguments the engine uses:

- ``render``: the chat messages rendered to the prompt text (``core.features``' one pass);
- ``hash``: ``prefix_chunk_hashes`` of that text (UTF-8 encode, the pass over its words, the tuple of
  Python ints: compiled a native loop and one ``struct`` unpack, pure Python numpy);
- ``features_rest``: the rest of ``build_features`` (``core.features.request_features``, the step
  ``build_features`` ends with: ``RequestFeatures``, the last user text's clip; called positionally, so
  it runs as compiled as in the data plane rather than as a keyword call from this interpreted loop);
- ``match``: ``PrefixIndex.match`` and the lazy ``indexed_tokens`` view;
- ``length``: the predictor's output length (``Predictor.predict_length``: the length features,
  the online feature table's lookups, the online correction);
- ``costs``: the per-backend cost table (``LatencyModel.cost_table``) and the ``Predictions``;
- ``admission``: the admission rule on those inputs (0 with ``--target-scope``);
- ``route``: ``DecisionEngine.route`` (the pipeline on the same request, the decision log).

With ``--split-length``, the output length's two parts are also timed on their own just before
``length``: ``length_features`` (the tokenizer and the categorical keys) and ``length_lookups`` (the
online feature table's ``location_scale_score`` on that row); both are then cold, and ``length``,
which recomputes them, is warm. With ``--split-hash``, ``hash_encode`` is the hash's UTF-8 encode
(``hash`` still covers encode, words and ints); with ``--split-costs``, ``costs_sync`` and
``costs_table`` are ``LatencyModel.cost_table``'s two steps (``FleetColumns.sync``: the rows of the
views that changed; ``table``: the lazy ``CostTable``); ``costs`` still covers them and the
``Predictions``. Requests are grouped by
the deciding thread's CPU time around all of it (as ``decision_cost.py`` judges the target): the
middle band (p45-p55), bands around the p99 (p97-p98, p98.5-p99.5) and the slowest 1-2 %; each group
prints the mean of every stage and of the request's size: prompt characters, hashed chunks,
messages, the deepest prefix match (chunks), the clipped last user message's characters, whether it
is ASCII, and the collector passes during the request. Then the same stages by the last user
message's length. The engine's private parts are read here on purpose: this is a profiler.

Usage: ``python bench/decision_tail.py [--requests N] [--rounds R] [--target-scope] [--split-length]
[--split-hash] [--split-costs] [--backends N] [--out FILE]``
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import decision_cost as dc

from core.features import PREFIX_MAX_CHUNKS, _chat_prompt_and_stats, request_features
from core.tokens import PREFIX_CHUNK_CHARS, prefix_chunk_hashes, prefix_chunk_hashes_utf8
from core.types import Endpoint, Predictions, RoutingRequest, Shed
from predictors.facade import _new, _set_output_length, _set_per_backend
from predictors.features import length_features
from sluice.heap import restore, settle_after_startup

PARTS = ("render", "hash", "features_rest", "match", "length", "costs", "admission", "route")
SIZES = ("prompt_chars", "chunks", "messages", "matched_chunks", "last_user_chars", "ascii", "gc_passes")
_GC_PASSES = [0]


def _count_gc(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _GC_PASSES[0] += 1


def run(
    policy_name: str,
    bodies: list[tuple[str, dict[str, Any]]],
    split_length: bool,
    split_hash: bool = False,
    split_costs: bool = False,
) -> list[dict[str, float]]:
    """One pass over ``bodies``: per request, every part's wall µs, the CPU total and the sizes."""
    engine = dc.engine_for(policy_name)
    previous_gc = settle_after_startup()
    clock = engine._clock
    assert isinstance(clock, dc.ManualClock)
    fleet = dc.Fleet(dc.random.Random(2))
    index = engine.prefix_index
    native = engine._native_predictor
    assert index is not None and native is not None
    admission_on = engine.admission.enabled
    route_config = engine.route_config("chat")
    slo = engine._slo_by_route["chat"]
    wall = time.perf_counter_ns
    cpu = time.thread_time_ns
    weights = native._feature_weights
    assert weights is not None
    rows: list[dict[str, float]] = []
    for i, (session, body) in enumerate(bodies):
        clock.advance(0.01)
        snap = fleet.snapshot(clock.now_s())
        gc_before = _GC_PASSES[0]
        c0 = cpu()
        t0 = wall()
        messages = body["messages"]
        text, last_user, n_user_turns = _chat_prompt_and_stats(messages)
        t1 = wall()
        t1e = t1
        if split_hash:
            data = text.encode("utf-8", "surrogatepass")
            t1e = wall()
            hashes = prefix_chunk_hashes_utf8(data, PREFIX_CHUNK_CHARS, PREFIX_MAX_CHUNKS)
        else:
            hashes = prefix_chunk_hashes(text, PREFIX_CHUNK_CHARS, PREFIX_MAX_CHUNKS)
        t2 = wall()
        features = request_features(  # build_features' own last step, compiled as there
            f"r{i}",
            Endpoint.CHAT,
            body,
            "chat",
            "default",
            "standard",
            clock.now_s(),
            session,
            None,
            text,
            hashes,
            last_user,
            len(messages),
            n_user_turns,
        )
        t3 = wall()
        matched = index.match(features.model, hashes, clock.now_s())
        indexed = index.indexed_tokens(features.model)
        t4 = wall()
        t4l = t4
        if split_length:
            length_row = length_features(features)
            t4l = wall()
            weights.location_scale_score(length_row)
        t4a = wall()
        length = native.predict_length(features)
        t4b = wall()
        t4c = t4d = t4b
        if split_costs:
            columns = native._latency._columns  # ``LatencyModel.cost_table``'s two steps, timed apart
            columns.sync(snap.backends)
            t4c = wall()
            per_backend = columns.table(features.model, features.prompt_tokens, matched, length.p50_tokens)
            t4d = wall()
        else:
            per_backend = native._latency.cost_table(
                snap.backends, features.model, features.prompt_tokens, matched, length.p50_tokens
            )
        predictions = _new(Predictions)
        _set_output_length(predictions, length)
        _set_per_backend(predictions, per_backend)
        request = RoutingRequest(features, matched, predictions, indexed, slo)
        t5 = wall()
        pending = engine._remember(features)  # as ``admit`` does, so ``route`` reuses this request
        pending.request, pending.request_snapshot = request, snap
        if admission_on:
            verdict = engine.admission.decide(features, route_config, snap, predictions, matched)
            assert not isinstance(verdict, Shed), verdict
        t6 = wall()
        decision = engine.route(features, snap)
        t7 = wall()
        c7 = cpu()
        assert decision.chosen is not None
        engine.on_routed(features, decision, decision.chosen)
        fleet.dispatched(features, decision.chosen)
        fleet.step(engine, clock.now_s())
        times = (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4b - t4a, t5 - t4b, t6 - t5, t7 - t6)
        row = {part: ns / 1_000 for part, ns in zip(PARTS, times, strict=True)}
        row["total_cpu"] = (c7 - c0) / 1_000
        row["length_features"] = (t4l - t4) / 1_000
        row["length_lookups"] = (t4a - t4l) / 1_000
        row["hash_encode"] = (t1e - t1) / 1_000
        row["costs_sync"] = (t4c - t4b) / 1_000
        row["costs_table"] = (t4d - t4c) / 1_000
        row["prompt_chars"] = len(text)
        row["chunks"] = len(hashes)
        row["messages"] = len(messages)
        row["matched_chunks"] = max(matched.values(), default=0) / 16
        row["last_user_chars"] = len(features.last_user_text)
        row["ascii"] = float(features.last_user_text.isascii())
        row["gc_passes"] = _GC_PASSES[0] - gc_before
        rows.append(row)
    restore(previous_gc)
    return rows[len(bodies) // 10 :]


SPLITS = ("length_features", "length_lookups", "hash_encode", "costs_sync", "costs_table")
KEYS = ("total_cpu", *PARTS, *SPLITS, *SIZES)


def means(rows: list[dict[str, float]]) -> dict[str, float]:
    out = {k: round(statistics.fmean(r[k] for r in rows), 1) for k in KEYS}
    out["n"] = len(rows)
    return out


def band(rows: list[dict[str, float]], low_q: float, high_q: float) -> dict[str, float]:
    """Mean of the requests between the ``low_q`` and ``high_q`` quantiles of the total CPU time."""
    ordered = sorted(rows, key=lambda r: r["total_cpu"])
    low = int(low_q * len(ordered))
    return means(ordered[low : max(int(high_q * len(ordered)), low + 1)])


def print_groups(groups: dict[str, dict[str, float]]) -> None:
    columns = ("n", *KEYS)
    print(f"{'group':<18}" + "".join(f"{c[:12]:>13}" for c in columns))
    for name, g in groups.items():
        print(f"{name:<18}" + "".join(f"{g[c]:>13}" for c in columns))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--policy", default="sluice_predictive")
    parser.add_argument("--backends", type=int, default=64, choices=range(1, 65), metavar="1..64")
    parser.add_argument("--target-scope", action="store_true", help="admission off (issue 6's scope)")
    parser.add_argument("--split-length", action="store_true", help="time length_features on its own too")
    parser.add_argument("--split-hash", action="store_true", help="time the hash's UTF-8 encode on its own")
    parser.add_argument("--split-costs", action="store_true", help="time cost_table's two steps apart")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    dc.N_BACKENDS = args.backends
    dc.ADMISSION_OFF = args.target_scope
    gc.callbacks.append(_count_gc)
    bodies = dc.load_bodies(args.requests)
    load_at_start = os.getloadavg()
    rows: list[dict[str, float]] = []
    for _ in range(args.rounds):
        rows += run(args.policy, bodies, args.split_length, args.split_hash, args.split_costs)
    totals = sorted(r["total_cpu"] for r in rows)
    groups = {
        "p45-p55": band(rows, 0.45, 0.55),
        "p90-p97": band(rows, 0.90, 0.97),
        "p97-p98": band(rows, 0.97, 0.98),
        "p98.5-p99.5": band(rows, 0.985, 0.995),
        "slowest 2%": band(rows, 0.98, 1.0),
        "slowest 1%": band(rows, 0.99, 1.0),
    }
    print(f"total CPU µs p50 {dc.percentile(totals, 0.5):.1f}, p99 {dc.percentile(totals, 0.99):.1f}")
    print("mean µs (wall) per stage and mean request size, by band of the total CPU time")
    print_groups(groups)
    by_message: dict[str, dict[str, float]] = {}
    for low, high in ((0, 200), (200, 600), (600, 1_500), (1_500, 10**9)):
        chosen = [r for r in rows if low <= r["last_user_chars"] < high]
        if chosen:
            by_message[f"user {low}-{high if high < 10**9 else 'max'}"] = means(chosen)
    print("the same by the last user message's characters (clipped to 2,000)")
    print_groups(by_message)
    if args.out is not None:
        document = {
            "benchmark": "decision_tail",
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "git_rev": dc.git_rev(),
            "hot_path": dc.hot_path(dc.ROOT),
            "load_average_at_start": load_at_start,
            "load_average_at_end": os.getloadavg(),
            "config": {
                "backends": args.backends,
                "requests_per_round": args.requests,
                "rounds": args.rounds,
                "policy": args.policy,
                "target_scope": args.target_scope,
                "split_length": args.split_length,
                "split_hash": args.split_hash,
                "split_costs": args.split_costs,
                "total_cpu_p50_us": dc.percentile(totals, 0.5),
                "total_cpu_p99_us": dc.percentile(totals, 0.99),
            },
            "bands": groups,
            "by_last_user_chars": by_message,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(document, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
