"""CPU of Sluice's own per-request work on the overhead benchmark's chat load, in process (no sockets).

Why: ``bench/overhead.py`` measures the whole proxy (aiohttp, the kernel, the
upstream client and Sluice's code) against real load, and on a shared 2-core
machine its figure swings by ±25 % between runs, more than a change to
Sluice's own code moves it. This script replays, in one process, what the
proxy does per small non-streaming chat request apart from sockets and
aiohttp, so two revisions can be compared within a few percent:

intake (JSON parse, model, route, identity) -> ``build_features`` ->
``FleetState.snapshot`` -> ``DecisionEngine.admit`` / ``route`` -> queue-time
metric -> upstream request headers and head bytes -> ``on_routed`` and the
in-flight guard -> (the answer) breaker verdict, first byte, the backend's
response head parsed, usage found in the body, client response headers and
the ``aiohttp.web.Response`` object -> guard release -> ``exchange.finish``
(metrics, ``Outcome``, ``DecisionEngine.observe``: admission, online length
learning, latency model, and the background refit's listener, ``LengthRefitter.record``, wired
as the app does when ``predictors.refit`` is on, the default).

The refit's loop side runs too: the event loop is given one turn every ``LOOP_TURN_EVERY``
requests (the proxy's loop turns between requests), so a due refit's hand-over slices are
pickled on this thread and its job runs in the real worker process (its CPU is not this
thread's); a job's result and swap land on this thread as in the proxy. ``--no-refit`` leaves the
listener out (``predictors.refit.enabled: false``); ``--refit-ab`` alternates this checkout with
and without it, so the refit's own per-request cost is read in one session.

The load is ``bench/overhead.py``'s: its ``chat.completion`` body and nginx
backends' response head, two backends, the default config (``--config-extra``
adds YAML, e.g. the data-plane-only settings), 64 requests in flight (each
step starts one request and finishes the oldest). CPU is this thread's
``time.thread_time``; the figure is the median of ``--rounds`` rounds of
``--requests`` requests after a warm-up, with the proxy's GC settings
(``sluice.heap``).

``--baseline DIR`` runs the same script against another checkout (e.g. a
``git worktree`` of main) in a child process, alternating rounds with this
one, and reports the ratio per round pair.

    python bench/request_bookkeeping.py [--requests 10000] [--rounds 7] [--baseline ../main-checkout]
                                        [--refit-ab | --no-refit]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

from _results import hot_path

ROOT = Path(__file__).resolve().parents[1]
# bench/overhead.py's request and canned answer; the head nginx sends with it.
CHAT_BODY = (
    b'{"model":"fake-model","messages":[{"role":"user","content":"Say hello in one word."}],"max_tokens":16}'
)
CANNED = (
    b'{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"fake-model",'
    b'"choices":[{"index":0,"message":{"role":"assistant","content":"Hello"},"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":12,"completion_tokens":1,"total_tokens":13}}'
)
NGINX_HEAD = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 29 Nov 2026 08:29:41 GMT\r\n"
    b"Content-Type: application/json\r\nContent-Length: 233\r\nConnection: keep-alive"
)
BACKENDS = (
    "backends:\n"
    "  - {name: nginx-0, url: 'http://127.0.0.1:1', models: [fake-model]}\n"
    "  - {name: nginx-1, url: 'http://127.0.0.1:2', models: [fake-model]}\n"
)
IN_FLIGHT = 64
# Requests between two turns of the event loop (a turn runs the refit's ready callbacks; its fixed
# cost, ~10 us, is spread thin).
LOOP_TURN_EVERY = 64


def _replayer(config_extra: str, refit: bool = True) -> tuple[Any, Any]:
    """A function running ``n`` requests through this checkout's per-request code (imports here),
    and one that stops the refit's worker process (if any)."""
    import asyncio
    import random

    from aiohttp import web
    from multidict import CIMultiDict, CIMultiDictProxy

    from core import headers
    from core.clock import MonotonicClock
    from core.config import load_config_text
    from core.features import build_features, client_retry_count
    from core.types import Endpoint
    from decision.engine import DecisionEngine
    from predictors import Predictor
    from router.context import build_context
    from router.exchange import Exchange, finish
    from router.hop_headers import client_response_headers, upstream_request_headers
    from router.intake import identity_from, parse_json_object, requested_model, session_key_from
    from router.sse import body_tail, find_usage
    from router.upstream.pool import _request_head
    from router.upstream.response import parse_head
    from state.fleet import FleetState

    loaded = load_config_text(BACKENDS + config_extra)
    config = loaded.config
    clock = MonotonicClock()
    fleet = FleetState(config, clock)
    predictor = None
    refit_config = config.predictors.refit
    if refit and config.predictors.enabled and refit_config.enabled and config.predictors.online_refinement:
        predictor = Predictor.from_config(config.predictors)  # as router.app: the refit's handle on it
    decider = DecisionEngine.from_config(loaded, clock, random.Random(1), predictor=predictor)
    ctx = build_context(config, fleet, decider, clock)
    loop = asyncio.new_event_loop()
    refitter: Any = None
    executor: Any = None
    if predictor is not None:
        from predictors.refit import refit_params
        from router.length_refit import LengthRefitter, process_executor

        executor = process_executor()
        refitter = LengthRefitter(predictor, refit_params(refit_config), executor, loop, random.Random(0))
        refitter.start()

    def turn_loop() -> None:
        loop.call_soon(loop.stop)
        loop.run_forever()

    def stop() -> None:
        if refitter is not None:
            stats = refitter.stats
            print(
                f"refit: {stats.refits} jobs ({stats.swaps} swapped, {stats.rejected} rejected, "
                f"{stats.failed} failed), {len(refitter.reservoir)} outcomes kept; {stats.last_reason}",
                file=sys.stderr,
            )
            refitter.stop()
            turn_loop()
            workers = list((getattr(executor, "_processes", None) or {}).values())
            executor.shutdown(wait=False, cancel_futures=True)
            for proc in workers:
                proc.terminate()  # a job may be running: not worth waiting for at exit
        loop.close()

    for backend in config.backends:
        fleet.record_check(backend.name, True)
    req_headers = CIMultiDictProxy(
        CIMultiDict(
            [
                ("Host", "127.0.0.1:8000"),
                ("Content-Length", str(len(CHAT_BODY))),
                ("Content-Type", "application/json"),
            ]
        )
    )
    known = frozenset(config.models)
    path = "/v1/chat/completions"

    def start() -> tuple[Any, Any]:
        ex = Exchange(ctx.request_ids.next(), clock.now_s())
        parsed = parse_json_object(CHAT_BODY)
        model = requested_model(parsed, known)
        ex.model = model
        route = config.route_for(path, model, req_headers)
        ex.route = route.name
        tenant, priority = identity_from(req_headers, route.priority, config)
        features = build_features(
            request_id=ex.request_id,
            endpoint=Endpoint.CHAT,
            body=parsed,
            route=route.name,
            tenant=tenant,
            priority=priority,
            arrival_s=ex.arrival_s,
            session_key=session_key_from(req_headers.get(headers.SESSION), parsed),
            client_retry_count=client_retry_count(req_headers.get(headers.CLIENT_RETRY_COUNT)),
        )
        ex.features = features
        snapshot = fleet.snapshot()
        decider.admit(features, snapshot)
        decision = decider.route(features, snapshot)
        ex.policy = decision.policy
        ctx.metrics.queue(route.name).observe(clock.now_s() - ex.arrival_s)
        upstream = upstream_request_headers(req_headers, ex.request_id)
        pairs = upstream.items() if hasattr(upstream, "items") else upstream  # a multidict before
        _request_head("POST", path, "127.0.0.1:1", pairs, len(CHAT_BODY))
        ctx.retry_budget.record_request()
        ex.predicted_output_tokens = decision.predicted_output_tokens
        backend_id = decision.ranked[0]
        ex.backend_id = backend_id
        ex.predicted_ttft_ms = decision.predicted_ttft_ms
        ex.dispatched_s = clock.now_s()
        decider.on_routed(features, decision, backend_id)
        guard = fleet.acquire(backend_id, features.prompt_tokens, decision.predicted_output_tokens or 0.0)
        return ex, guard.__enter__()

    def answer_and_end(ex: Any, guard: Any) -> None:
        guard.succeeded()
        ex.first_byte_s = clock.now_s()
        guard.first_byte()
        _, _, head = parse_head(NGINX_HEAD)
        ex.status = 200
        ex.last_byte_s = clock.now_s()
        usage = find_usage(body_tail(CANNED))
        ex.usage = usage
        if usage is not None and usage.completion_tokens is not None:
            ex.output_tokens = usage.completion_tokens
        out = client_response_headers(CIMultiDictProxy(head))
        out.update(ex.response_headers())
        web.Response(body=CANNED, status=200, headers=out)
        guard.__exit__(None, None, None)
        finish(ex, ctx.metrics, ctx.fleet, ctx.decider, ctx.clock)

    def run(n: int) -> float:
        """CPU seconds of this thread for ``n`` requests (64 in flight)."""
        ring: deque[tuple[Any, Any]] = deque()
        started = time.thread_time()
        for i in range(n):
            ring.append(start())
            if len(ring) >= IN_FLIGHT:
                answer_and_end(*ring.popleft())
            if i % LOOP_TURN_EVERY == 0:
                turn_loop()
        while ring:
            answer_and_end(*ring.popleft())
        return time.thread_time() - started

    return run, stop


def _child(args: argparse.Namespace) -> int:
    """One checkout's side: warm up, then time a round per line read from stdin."""
    sys.path.insert(0, str(Path.cwd()))
    run, stop = _replayer(args.config_extra, refit=not args.no_refit)
    run(3_000)
    from sluice.heap import settle_after_startup

    settle_after_startup()
    print("ready", flush=True)
    for _ in sys.stdin:
        print(f"{1e6 * run(args.requests) / args.requests:.3f}", flush=True)
    stop()
    return 0


def _start_child(checkout: Path, args: argparse.Namespace, refit: bool = True) -> subprocess.Popen[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--requests", str(args.requests)]
    cmd += ["--config-extra", args.config_extra] + ([] if refit else ["--no-refit"])
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    proc = subprocess.Popen(
        cmd, cwd=checkout, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        raise RuntimeError(f"the replay in {checkout} did not start")
    return proc


def _round(proc: subprocess.Popen[str]) -> float:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("go\n")
    proc.stdin.flush()
    return float(proc.stdout.readline())


def _git_rev(checkout: Path) -> str:
    rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=checkout, capture_output=True, text=True).stdout
    dirty = subprocess.run(
        ["git", "status", "--porcelain"], cwd=checkout, capture_output=True, text=True
    ).stdout
    return rev.strip() + ("-dirty" if dirty.strip() else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--requests", type=int, default=10_000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--config-extra", default="", help="YAML appended to the two-backend config")
    parser.add_argument(
        "--baseline", type=Path, default=None, help="another checkout, alternated with this one"
    )
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    parser.add_argument(
        "--no-refit", action="store_true", help="without the background refit's listener (refit off)"
    )
    parser.add_argument(
        "--refit-ab", action="store_true", help="also run this checkout with the refit off, alternating"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return _child(args)
    sides = {"this": ROOT} | ({"this_refit_off": ROOT} if args.refit_ab else {})
    sides |= {"baseline": args.baseline.resolve()} if args.baseline else {}
    procs = {
        name: _start_child(path, args, refit=not args.no_refit and name != "this_refit_off")
        for name, path in sides.items()
    }
    rounds: dict[str, list[float]] = {name: [] for name in sides}
    try:
        for _ in range(args.rounds):
            for name, proc in procs.items():
                rounds[name].append(_round(proc))
    finally:
        for proc in procs.values():
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(timeout=30)
    result: dict[str, Any] = {
        "benchmark": "request_bookkeeping",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "when_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load": os.getloadavg()},
        "config": {
            "requests_per_round": args.requests,
            "rounds": args.rounds,
            "in_flight": IN_FLIGHT,
            "config_extra": args.config_extra,
            "refit": "off" if args.no_refit else "on (this_refit_off: off)" if args.refit_ab else "on",
        },
        "cpu_us_per_request": {},
    }
    for name, path in sides.items():
        values = rounds[name]
        result["cpu_us_per_request"][name] = {
            "git_rev": _git_rev(path),
            "hot_path": hot_path(path),
            "median": statistics.median(values),
            "min": min(values),
            "rounds": values,
        }
        print(
            f"{name:<14} {_git_rev(path)[:12]:<18} median {statistics.median(values):7.1f} us/request "
            f"(min {min(values):.1f}; rounds {' '.join(f'{v:.1f}' for v in values)}); {hot_path(path)}"
        )
    if args.baseline:
        ratios = [b / t for b, t in zip(rounds["baseline"], rounds["this"], strict=True)]
        result["baseline_over_this_per_round"] = ratios
        result["baseline_over_this_median"] = statistics.median(ratios)
        print(
            f"baseline / this: median x{statistics.median(ratios):.3f} "
            f"(per round pair {' '.join(f'{r:.3f}' for r in ratios)})"
        )
    if args.refit_ab:
        ratios = [t / o for t, o in zip(rounds["this"], rounds["this_refit_off"], strict=True)]
        diffs = [t - o for t, o in zip(rounds["this"], rounds["this_refit_off"], strict=True)]
        result["refit_on_minus_off_us_per_round"] = diffs
        result["refit_on_minus_off_us_median"] = statistics.median(diffs)
        print(
            f"refit on - off: median {statistics.median(diffs):+.1f} us/request, "
            f"x{statistics.median(ratios):.3f} "
            f"(per round pair {' '.join(f'{d:+.1f}' for d in diffs)})"
        )
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
