"""The real-time part of ``bench/overload.py``: the same step workload through real processes.

Per system, a fresh ``sluice sim`` fleet (``configs/fleets/overload.yaml``, SSE coalesced every
``COALESCE_MS``; the first token is never delayed) and one router in front of it:

* ``sluice round_robin +admission`` and ``sluice round_robin no admission`` (``sluice serve``), and
  ``sluice sluice_predictive +admission`` (the default policy, with admission);
* ``sglang-router round_robin`` 0.3.2 with ``--max-concurrent-requests B
  --rate-limit-tokens-per-second R --queue-size Q --queue-timeout-secs T``: its limit is a token
  bucket (SMG docs; tools.md §1 saw ~20 in flight at a limit of 8), so R = the measured capacity
  (16 req/s), B = 2 s of it, a queue of ``SGLANG_QUEUE`` requests and a timeout of the TTFT SLO
  (sglang answers 429 when its queue is full, 408 after the timeout, without Retry-After). A first
  run with B = 429 (the fleet's batch) and R unset never limited anything at 49 req/s.
  sglang-router drops custom headers, so the fleet gets true output lengths by request id
  (``--output-lengths``) and every request is one class to it.

Two open-loop clients run at once: the step workload (never retries) and the retrying clients
(``RETRY_LOAD_FRAC`` x capacity, Poisson, same class mix, honour Retry-After as the openai client
does: ``retry-after-ms`` first, at most 2 retries). A sampler reads every second the engines'
queues (``vllm:num_requests_waiting``) and, for Sluice, its waiting room by class
(``sluice_queue_depth``). Clients stop waiting ``DRAIN_S`` after the last
arrival; what is still running then is cancelled and counted lost.

With ``--control`` each system is run without the burst instead (its 3x steps at 0.7x;
``overload_realtime_control.json``): the after-burst steady state that a burst run's recovery is
judged against. A burst run reads the control of the same system and seed from that file; without
one its recovery is not judged (the old 0.5x-baseline criterion is still reported).

Then, with Sluice's admission only (not in a control run), the hammer: ``HAMMER_REQUESTS``
requests of a tenant whose budget is zero, ``HAMMER_CONCURRENCY`` at a time, ignoring Retry-After,
against the idle fleet; Sluice's CPU (utime + stime from ``/proc/PID/stat``, as ``bench/overhead.py``)
per refused request, against its CPU per admitted request for ``ADMITTED_REQUESTS`` streamed
requests of the workload's shape.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import _overload_setup as setup
import aiohttp
import uvloop
from _overload_analysis import after_burst, phases, score, steady_reference
from _peer_routers import free_port
from _results import RESULTS
from prometheus_client.parser import text_string_to_metric_families

from loadgen.client import ClientOptions, LoadClient
from loadgen.processes import ChildGroup, wait_http
from loadgen.records import Outcome, RequestRecord
from loadgen.stack import FleetProcess, start_fleet, start_sluice, write_proxy_config
from loadgen.workloads import build_workload

COALESCE_MS = 100.0
DRAIN_S = 10.0
SGLANG_QUEUE = 256
HAMMER_REQUESTS = 3000
HAMMER_CONCURRENCY = 32
ADMITTED_REQUESTS = 64
START_TIMEOUT_S = 60.0

Starter = Callable[[ChildGroup, FleetProcess, Path], Awaitable[tuple[str, int | None]]]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / 100.0


def sluice_starter(admission: bool, policy: str = setup.POLICY) -> Starter:
    async def start(group: ChildGroup, fleet: FleetProcess, run_dir: Path) -> tuple[str, int | None]:
        from loadgen.sim.fleet_config import sluice_config

        config = sluice_config(setup.fleet(), fleet.urls, setup.sluice_base(admission, policy))
        path = write_proxy_config(run_dir / "sluice.yaml", config)
        child, url = await start_sluice(group, path)
        return url, child.pid

    return start


def sglang_starter(venv: Path, max_concurrent: int, rate_rps: int) -> Starter:
    async def start(group: ChildGroup, fleet: FleetProcess, run_dir: Path) -> tuple[str, int | None]:
        port, metrics_port = free_port(), free_port()
        argv = [
            str(venv / "bin" / "python"), "-m", "sglang_router.launch_router",
            "--host", "127.0.0.1", "--port", str(port),
            "--worker-urls", *fleet.urls.values(),
            "--policy", "round_robin",
            "--log-level", "warn",
            "--prometheus-host", "127.0.0.1", "--prometheus-port", str(metrics_port),
            "--disable-retries", "--disable-circuit-breaker",
            "--max-concurrent-requests", str(max_concurrent),
            "--rate-limit-tokens-per-second", str(rate_rps),
            "--queue-size", str(SGLANG_QUEUE),
            "--queue-timeout-secs", str(max(1, round(setup.TTFT_SLO_MS / 1000.0))),
        ]  # fmt: skip
        child = await group.spawn("sglang-router", argv)
        url = f"http://127.0.0.1:{port}"
        await wait_http(f"{url}/readiness", START_TIMEOUT_S, child)
        return url, child.pid

    return start


async def _metrics(session: aiohttp.ClientSession, url: str) -> dict[str, float]:
    out: dict[str, float] = {}
    async with session.get(url) as resp:
        text = await resp.text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "vllm:num_requests_waiting":
                out["engine_waiting"] = out.get("engine_waiting", 0.0) + sample.value
            elif sample.name == "sluice_queue_depth":
                out[sample.labels.get("class", "?")] = sample.value
    return out


async def sample_queues(
    fleet: FleetProcess, router_url: str, is_sluice: bool, start_s: float, out: dict[str, list[Any]]
) -> None:
    """Every second until cancelled: engines' waiting requests, Sluice's waiting room by class."""
    timeout = aiohttp.ClientTimeout(total=2.0)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while True:
            t_s = time.monotonic() - start_s
            waiting = 0.0
            for url in fleet.urls.values():
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    waiting += (await _metrics(session, f"{url}/metrics")).get("engine_waiting", 0.0)
            out["engine_waiting"].append({"t_s": t_s, "engine_waiting": waiting})
            if is_sluice:
                try:
                    room = await _metrics(session, f"{router_url}/metrics")
                    queued = {k: v for k, v in room.items() if k != "engine_waiting"}
                    out["waiting_room"].append({"t_s": t_s, "queued": queued})
                except (aiohttp.ClientError, TimeoutError):
                    pass
            await asyncio.sleep(1.0)


async def hammer(url: str, pid: int) -> dict[str, Any]:
    """CPU per refused request (zero-budget tenant, no waiting) vs per admitted streamed request."""
    body = json.dumps({"model": "llama-3.1-8b", "messages": [{"role": "user", "content": "hi"}]})
    hdrs = {"Content-Type": "application/json", "x-sluice-tenant": setup.HAMMER_TENANT}
    statuses: dict[int, int] = {}
    todo = iter(range(HAMMER_REQUESTS))

    async def worker(session: aiohttp.ClientSession) -> None:
        for _ in todo:
            async with session.post(url + "/v1/chat/completions", data=body, headers=hdrs) as resp:
                await resp.read()
                statuses[resp.status] = statuses.get(resp.status, 0) + 1

    async with aiohttp.ClientSession() as session:
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        await asyncio.gather(*(worker(session) for _ in range(HAMMER_CONCURRENCY)))
        cpu1, t1 = cpu_seconds(pid), time.monotonic()
    params = {**setup.SHAPE, "rate_rps": 1000.0, "span_s": 10.0}
    workload = build_workload("poisson", {"seed": 99, "max_requests": ADMITTED_REQUESTS}, params)
    client = LoadClient(ClientOptions(url, max_concurrency=16))
    cpu2, t2 = cpu_seconds(pid), time.monotonic()
    records = await client.run(workload.requests())
    cpu3, t3 = cpu_seconds(pid), time.monotonic()
    ok = sum(r.status == 200 for r in records)
    shed_us = 1e6 * (cpu1 - cpu0) / HAMMER_REQUESTS
    admitted_us = 1e6 * (cpu3 - cpu2) / max(1, ok)
    return {
        "hammer_statuses": statuses,
        "hammer_rps": HAMMER_REQUESTS / (t1 - t0),
        "sluice_cpu_us_per_refused": shed_us,
        "admitted_requests_ok": ok,
        "admitted_wall_s": t3 - t2,
        "sluice_cpu_us_per_admitted": admitted_us,
        "refused_over_admitted_cpu": shed_us / admitted_us if admitted_us else None,
        "note": "CPU clock ticks are 10 ms; totals over whole batches, not per request",
    }


async def run_system(
    name: str,
    start: Starter,
    capacity_rps: float,
    seed: int,
    run_dir: Path,
    lengths: Path,
    control: bool = False,
    reference: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One system's run: the step workload (``control``: without the burst) and the retrying clients;
    recovery judged against ``reference`` (a control run's steady state), or its own when ``control``."""
    main_requests = setup.main_requests(capacity_rps, seed, control)
    retry_wl = setup.retry_workload(capacity_rps, seed)
    extra = ["--output-lengths", str(lengths), "--coalesce-ms", str(COALESCE_MS)]
    samples: dict[str, list[Any]] = {"engine_waiting": [], "waiting_room": []}
    async with ChildGroup(run_dir / "logs") as group:
        fleet = await start_fleet(group, setup.FLEET_FILE, extra_args=extra)
        url, pid = await start(group, fleet, run_dir)
        is_sluice = name.startswith("sluice")
        main = LoadClient(ClientOptions(url, drain_timeout_s=DRAIN_S))
        retrying = LoadClient(
            ClientOptions(url, honour_retry_after=True, max_retries=setup.RETRY_MAX, drain_timeout_s=DRAIN_S)
        )
        cpu0 = cpu_seconds(pid) if pid else None
        start_s = time.monotonic()
        sampler = asyncio.create_task(sample_queues(fleet, url, is_sluice, start_s, samples))
        main_records, retry_records = await asyncio.gather(
            main.run(iter(main_requests)), retrying.run(retry_wl.requests())
        )
        sampler.cancel()
        cpu_s = cpu_seconds(pid) - cpu0 if pid and cpu0 is not None else None
        extra_figures: dict[str, Any] = {"router_cpu_s": cpu_s, "wall_s": time.monotonic() - start_s}
        if name == setup.system_name(setup.POLICY, True) and pid and not control:
            extra_figures["hammer"] = await hammer(url, pid)
    if control:
        window = after_burst(phases(setup.STEP_S, setup.LEVELS))
        reference = steady_reference(main_records, window.start_s, window.end_s)
    return _figures(main_records, retry_records, samples, extra_figures, reference)


def control_references(seed: int) -> dict[str, dict[str, Any]]:
    """System name -> its steady reference, from ``overload_realtime_control.json`` if run at ``seed``."""
    path = RESULTS / "overload_realtime_control.json"
    if not path.exists():
        return {}
    stored = json.loads(path.read_text())
    if stored["config"]["seeds"] != [seed] or stored["config"]["step_s"] != setup.STEP_S:
        return {}
    return {
        name: system["runs"][0]["recovery_reference"]
        for name, system in stored["figures"]["systems"].items()
        if system["runs"][0].get("recovery_reference") is not None
    }


def _figures(
    main: list[RequestRecord],
    retry: list[RequestRecord],
    samples: dict[str, list[Any]],
    extra: dict[str, Any],
    reference: dict[str, Any] | None,
) -> dict[str, Any]:
    from _overload_analysis import retry_after_accuracy

    figures = score(main, phases(setup.STEP_S, setup.LEVELS), setup.TTFT_SLO_MS, reference)
    figures["retrying_clients"] = retry_after_accuracy(retry)
    figures["retrying_clients"]["served_frac"] = (
        sum(r.outcome is Outcome.OK for r in retry) / len(retry) if retry else None
    )
    figures.update(samples)
    figures.update(extra)
    return figures


def run_realtime_part(
    args: argparse.Namespace, capacity: dict[str, Any], save: Callable[[dict[str, Any]], Path]
) -> dict[str, Any]:
    cap = capacity["capacity_rps"]
    rate = max(1, round(cap))  # sglang's limit is a token bucket: refill at the fleet's capacity ...
    burst = 2 * rate  # ... holding 2 s of it (its --max-concurrent-requests)
    systems_to_run: list[tuple[str, Starter]] = [
        (setup.system_name(setup.POLICY, True), sluice_starter(True)),
        (setup.system_name(setup.POLICY, False), sluice_starter(False)),
        (setup.system_name("sluice_predictive", True), sluice_starter(True, "sluice_predictive")),
        (
            f"sglang-router round_robin --max-concurrent-requests {burst} "
            f"--rate-limit-tokens-per-second {rate}",
            sglang_starter(args.peers_venv, burst, rate),
        ),
    ]
    if args.only:
        systems_to_run = [s for s in systems_to_run if any(o in s[0] for o in args.only)]
    base = args.runs_dir
    base.mkdir(parents=True, exist_ok=True)
    lengths = base / "output_lengths.json"
    references = {} if args.control else control_references(args.seed)
    every = [
        *setup.main_requests(cap, args.seed, args.control),
        *setup.retry_workload(cap, args.seed).requests(),
    ]
    lengths.write_text(json.dumps({r.request_id: r.true_output_tokens for r in every}))
    out: dict[str, Any] = {}
    for name, start in systems_to_run:
        slug = name.split(" --")[0].replace(" ", "_").replace("+", "")
        figures = uvloop.run(
            run_system(name, start, cap, args.seed, base / slug, lengths, args.control, references.get(name))
        )
        figures["seed"] = args.seed
        from overload import compact, verdict_line

        out[name] = {"runs": [compact(figures, keep_series=True)]}
        save(out)

        print(f"  {name}: " + verdict_line(figures), flush=True)
    return out
