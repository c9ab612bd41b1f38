"""A deterministic replay of admission + routing decisions, recorded to guard hot-path optimisations.

Why: the decision path (features, prefix index, predictions, admission, the
pipeline) is optimised for speed; such changes must not change a single
decision. ``replay`` drives a ``DecisionEngine`` (default config: predictors
enabled, admission on) with multi-turn chat requests behind shared system
prompts over a 64-backend fleet whose load evolves as requests are routed and
complete, feeding outcomes back so the latency model and the online length
correction learn. Each step's admission verdict, full ranking (backend numbers as hex bytes), predicted
costs and output length are recorded exactly (floats as ``float.hex``).

``tests/unit/test_decision_replay.py`` compares against the recording in
``tests/unit/data/decision_replay.json``. Regenerate it only for an intended
behaviour change: ``python -m tests.unit.decision_replay --record``.
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

from core.clock import ManualClock
from core.config import load_config_text
from core.features import build_features
from core.types import Admit, BackendView, Endpoint, FleetSnapshot, Health, Outcome
from decision.engine import DecisionEngine

RECORDING = Path(__file__).parent / "data" / "decision_replay.json"
N_BACKENDS = 64
MODEL = "llama-3.1-8b"
# (policy, route TTFT SLO ms): the tight SLO makes admission queue and shed some requests.
RUNS = (
    ("sluice_predictive", 2_000),
    ("sluice_predictive", 250),  # busy: backends at max_concurrency 24, so admission queues and sheds
    ("sglang_cache_aware", 2_000),
    ("dynamo_cost", 2_000),
)
WORDS = [
    "summarise",
    "explain",
    "write",
    "code",
    "python",
    "list",
    "the",
    "steps",
    "translate",
    "story",
    "poem",
    "why",
    "how",
    "table",
    "compare",
    "history",
    "physics",
    "short",
    "long",
    "detailed",
    "essay",
    "email",
    "bug",
    "fix",
    "error",
    "json",
]
SYSTEM_PROMPTS = tuple(f"You are assistant {i}. " + "Follow the rules. " * (20 + 15 * i) for i in range(4))
GPU_CLASSES = ("h100", "a100", "l4")


def _config(policy: str, ttft_slo_ms: int, busy: bool) -> str:
    limit = ", max_concurrency: 24" if busy else ""
    backends = "".join(
        f"  - {{name: gpu-{i:02d}, url: 'http://127.0.0.1:{9000 + i}', models: [{MODEL}]{limit}}}\n"
        for i in range(N_BACKENDS)
    )
    return (
        f"backends:\n{backends}routes:\n  - name: chat\n    policy: {{name: {policy}}}\n"
        f"    slo: {{ttft_ms: {ttft_slo_ms}, tpot_ms: 100}}\n"
    )


def _initial_views(rng: random.Random, busy: bool) -> list[BackendView]:
    views = []
    for i in range(N_BACKENDS):
        in_flight = rng.randrange(24, 27) if busy else rng.randrange(0, 60)
        awaiting = rng.randrange(0, in_flight // 4 + 1)
        views.append(
            BackendView(
                backend_id=f"gpu-{i:02d}",
                models=frozenset({MODEL}),
                gpu_class=GPU_CLASSES[i % 3],
                weight=1.0,
                max_concurrency=256,
                health=Health.READY if i % 29 else Health.DOWN,
                in_flight_requests=in_flight,
                awaiting_first_byte=awaiting,
                in_flight_prompt_tokens=in_flight * rng.randrange(200, 3_000),
                in_flight_predicted_decode_tokens=in_flight * 200.0,
                engine_running=in_flight - awaiting if i % 5 else None,
                engine_waiting=awaiting if i % 5 else None,
                kv_usage_frac=rng.random() if i % 7 else None,
                metrics_stale=i % 11 == 0,
                ewma_tpot_ms=rng.uniform(5.0, 80.0) if i % 3 else None,
                kv_capacity_tokens=400_000 if i % 2 else None,
            )
        )
    return views


def _text(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


def _bodies(rng: random.Random, n: int) -> list[tuple[str, dict[str, Any]]]:
    """Sessions of 1-5 user turns, interleaved, each turn carrying the whole history."""
    out: list[tuple[str, dict[str, Any]]] = []
    session = 0
    while len(out) < n:
        session += 1
        history: list[dict[str, str]] = [{"role": "system", "content": SYSTEM_PROMPTS[session % 4]}]
        for _ in range(rng.randrange(1, 6)):
            history.append({"role": "user", "content": _text(rng, rng.randrange(3, 400))})
            max_tokens = rng.choice((None, 64, 1024))
            body: dict[str, Any] = {"model": MODEL, "messages": list(history), "stream": True}
            if max_tokens is not None:
                body["max_tokens"] = max_tokens
            out.append((f"s{session}", body))
            history.append({"role": "assistant", "content": _text(rng, rng.randrange(5, 200))})
    rng.shuffle(out)  # sessions interleave; a later turn may come first (a cold prefix)
    return out[:n]


def _hex(value: float | None) -> str | None:
    return None if value is None else float(value).hex()


def replay(
    policy: str, ttft_slo_ms: int = 2_000, n_requests: int = 150, seed: int = 7
) -> list[dict[str, Any]]:
    """Every step's verdict and decision, exactly; see the module docstring."""
    busy = ttft_slo_ms < 1_000
    rng = random.Random(seed)
    clock = ManualClock(1_000.0)
    engine = DecisionEngine.from_config(
        load_config_text(_config(policy, ttft_slo_ms, busy)), clock, random.Random(seed)
    )
    views = _initial_views(rng, busy)
    running: list[tuple[int, Any, str]] = []  # (index, features, backend id)
    records: list[dict[str, Any]] = []
    for i, (session, body) in enumerate(_bodies(rng, n_requests)):
        clock.advance(0.05)
        snapshot = FleetSnapshot(tuple(views), taken_at_s=clock.now_s(), version=i)
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
        verdict = engine.admit(features, snapshot)
        record: dict[str, Any] = {"verdict": type(verdict).__name__}
        if isinstance(verdict, Admit):
            decision = engine.route(features, snapshot)
            record.update(
                ranked=bytes(int(b[4:]) for b in decision.ranked).hex(),
                ttft=_hex(decision.predicted_ttft_ms),
                e2e=_hex(decision.predicted_e2e_ms),
                out=_hex(decision.predicted_output_tokens),
                removed=bytes(sorted(int(b[4:]) for b in decision.removed)).hex(),
            )
            if decision.chosen is not None:
                engine.on_routed(features, decision, decision.chosen)
                slot = int(decision.chosen[4:])
                old = views[slot]
                views[slot] = replace(
                    old,
                    in_flight_requests=old.in_flight_requests + 1,
                    awaiting_first_byte=old.awaiting_first_byte + 1,
                    in_flight_prompt_tokens=old.in_flight_prompt_tokens + features.prompt_tokens,
                )
                running.append((i, features, decision.chosen))
        else:
            engine.leave_queue(features.request_id)
        records.append(record)
        if busy:  # other proxies' traffic moves some backend's load by one request
            slot = rng.randrange(N_BACKENDS)
            old = views[slot]
            views[slot] = replace(
                old, in_flight_requests=max(0, old.in_flight_requests + rng.choice((-1, 1, 1)))
            )
        if running and rng.random() < (0.5 if busy else 0.8):
            _, done, backend_id = running.pop(rng.randrange(len(running)))
            slot = int(backend_id[4:])
            old = views[slot]
            views[slot] = replace(
                old,
                in_flight_requests=max(0, old.in_flight_requests - 1),
                awaiting_first_byte=max(0, old.awaiting_first_byte - 1),
                ewma_tpot_ms=rng.uniform(5.0, 80.0),
            )
            ttft_ms = rng.uniform(20.0, 900.0)
            engine.observe(
                Outcome(
                    request_id=done.request_id,
                    backend_id=backend_id,
                    route="chat",
                    model=MODEL,
                    tenant="default",
                    status_code=200,
                    prompt_tokens=done.prompt_tokens,
                    output_tokens=rng.randrange(1, 800),
                    cached_prompt_tokens=rng.choice((None, 0, done.prompt_tokens // 2)),
                    ttft_ms=ttft_ms,
                    e2e_ms=ttft_ms + rng.uniform(100.0, 20_000.0),
                    finished_at_s=clock.now_s(),
                )
            )
    return records


def record_all() -> dict[str, list[dict[str, Any]]]:
    return {f"{policy}@{slo_ms}": replay(policy, slo_ms) for policy, slo_ms in RUNS}


def main() -> None:
    parser = argparse.ArgumentParser(description="Record the decision replay (intended changes only).")
    parser.add_argument("--record", action="store_true", help=f"write {RECORDING}")
    args = parser.parse_args()
    recorded = record_all()
    if args.record:
        RECORDING.parent.mkdir(parents=True, exist_ok=True)
        RECORDING.write_text(json.dumps(recorded, separators=(",", ":")) + "\n")
        print(f"wrote {RECORDING}")
    else:
        print(json.dumps({p: len(r) for p, r in recorded.items()}))


if __name__ == "__main__":
    main()
