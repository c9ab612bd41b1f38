"""Real-time capacity of the simulator on this machine: streams and SSE chunks per second it can carry.

Runs ``sluice sim`` (one process, one core) with B backends of the H100 profile, and a closed-loop
load of S concurrent streams per backend from this process (a raw asyncio client that only counts
``data:`` events, so it stays cheaper than the server). Every stream asks for 2,000 output tokens
of a 100-token prompt, so the engines run steady decode batches of S: the H100 profile then
produces S / (5.75 ms + S x 6 us) tokens per second per backend, ~10.4k tok/s at S = 64 (163 tok/s
per stream), the fastest realistic token rate of the bundled profiles.

Measured over a window after warm-up, from the server's own counters (``/metrics``) and the client:
tokens produced, SSE writes, chunks received, and how late the engine timers fired (mean and max).
The simulator is not the bottleneck while the timers fire within a fraction of a step (mean lag
< 20% of the step time) and the client receives the chunks as fast as they are produced.

Usage: ``python bench/sim_capacity.py [--profile P] [--backends 4] [--streams 64] [--coalesce-ms 0 50]
[--sweep]``
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _fleet_process import sim_fleet
from _results import write_result

from loadgen.sim.profile import load_profile

DEFAULT_PROFILE = "h100-llama3.1-8b"
OUTPUT_TOKENS = 2000
_SAMPLE = re.compile(rb"^(sluice_sim_\w+|vllm:generation_tokens_total)\{[^}]*\} (\S+)$", re.M)


class Counts:
    def __init__(self) -> None:
        self.events = 0
        self.bytes = 0
        self.finished = 0


class LoadStream(asyncio.Protocol):
    """One keep-alive connection sending one streaming request after another."""

    def __init__(self, request: bytes, counts: Counts) -> None:
        self.request = request
        self.counts = counts
        self.tail = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        counts = self.counts
        counts.bytes += len(data)
        window = self.tail + data
        counts.events += window.count(b"data: ") - self.tail.count(b"data: ")
        if b"data: [DONE]" in window:
            counts.finished += 1
            assert self.transport is not None
            self.transport.write(self.request)
        self.tail = window[-16:]


def scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url + "/metrics", timeout=30) as resp:
        text = resp.read()
    return {m.group(1).decode(): float(m.group(2)) for m in _SAMPLE.finditer(text)}


async def load(urls: dict[str, str], streams: int, warmup_s: float, window_s: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    counts = Counts()
    body = b'{"model":"llama-3.1-8b","prompt":"' + b"x" * 400 + b'","stream":true}'
    conns = []
    for url in urls.values():
        host, port = urlsplit(url).hostname, urlsplit(url).port
        request = (
            f"POST /v1/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"x-sim-output-tokens: {OUTPUT_TOKENS}\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        for _ in range(streams):
            conns.append(await loop.create_connection(lambda r=request: LoadStream(r, counts), host, port))
    await asyncio.sleep(warmup_s)
    before = {name: await asyncio.to_thread(scrape, url) for name, url in urls.items()}
    events0, cpu0, t0 = counts.events, time.process_time(), time.perf_counter()
    await asyncio.sleep(window_s)
    elapsed = time.perf_counter() - t0
    events, client_cpu = counts.events - events0, time.process_time() - cpu0
    after = {name: await asyncio.to_thread(scrape, url) for name, url in urls.items()}
    for transport, _ in conns:
        transport.close()

    def delta(key: str) -> float:
        return sum(after[n].get(key, 0.0) - before[n].get(key, 0.0) for n in urls)

    ticks = delta("sluice_sim_ticks_total")
    return {
        "elapsed_s": elapsed,
        "tokens_per_s": delta("vllm:generation_tokens_total") / elapsed,
        "sse_writes_per_s": delta("sluice_sim_sse_writes_total") / elapsed,
        "client_events_per_s": events / elapsed,
        "mean_tick_lag_ms": 1000 * delta("sluice_sim_tick_lag_seconds_total") / max(ticks, 1),
        "max_tick_lag_ms": 1000 * max(after[n].get("sluice_sim_tick_lag_max_seconds", 0.0) for n in urls),
        "client_cpu_frac": client_cpu / elapsed,
    }


def run_point(
    profile: str, backends: int, streams: int, coalesce_ms: float, warmup_s: float, window_s: float
) -> dict[str, Any]:
    model = load_profile(profile).step_time
    step_s = (model.base_us + model.decode_us_per_token * streams) * 1e-6
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as fh:
        fh.write(f"backends:\n  - {{name: gpu, profile: {profile}, count: {backends}}}\n")
    with sim_fleet(fh.name, "--coalesce-ms", str(coalesce_ms)) as urls:
        result = uvloop.run(load(urls, streams, warmup_s, window_s))
    Path(fh.name).unlink()
    expected = backends * streams / step_s
    result.update(
        profile=profile,
        backends=backends,
        streams_per_backend=streams,
        coalesce_ms=coalesce_ms,
        step_ms=round(step_s * 1000, 3),
        expected_tokens_per_s=round(expected),
        token_rate_frac=round(result["tokens_per_s"] / expected, 3),
        delivered_frac=round(result["client_events_per_s"] / max(result["sse_writes_per_s"], 1), 3),
    )
    result["not_bottleneck"] = (
        result["mean_tick_lag_ms"] < 0.2 * step_s * 1000 and result["delivered_frac"] > 0.95
    )
    for key in (
        "tokens_per_s",
        "sse_writes_per_s",
        "client_events_per_s",
        "mean_tick_lag_ms",
        "max_tick_lag_ms",
    ):
        result[key] = round(result[key], 2)
    result["client_cpu_frac"] = round(result["client_cpu_frac"], 3)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=DEFAULT_PROFILE)
    parser.add_argument("--backends", type=int, default=4)
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--coalesce-ms", type=float, nargs="+", default=[0.0, 50.0])
    parser.add_argument("--sweep", action="store_true", help="also try 8 and 12 backends to find the limit")
    parser.add_argument("--warmup-s", type=float, default=3.0)
    parser.add_argument("--window-s", type=float, default=10.0)
    args = parser.parse_args()
    counts = [args.backends, *([8, 12] if args.sweep else [])]
    points = []
    for coalesce in args.coalesce_ms:
        for n in counts:
            point = run_point(args.profile, n, args.streams, coalesce, args.warmup_s, args.window_s)
            points.append(point)
            print(
                f"backends {n:3} x {args.streams} streams, coalesce {coalesce:4.0f} ms: "
                f"{point['tokens_per_s']:9.0f} tok/s ({point['token_rate_frac']:.3f} of nominal), "
                f"{point['sse_writes_per_s']:8.0f} SSE writes/s, "
                f"client {point['client_events_per_s']:8.0f} events/s, "
                f"lag mean {point['mean_tick_lag_ms']:.2f} ms max {point['max_tick_lag_ms']:.1f} ms "
                f"-> {'OK' if point['not_bottleneck'] else 'SIMULATOR IS THE BOTTLENECK'}"
            )
    config = {"profile": args.profile, "output_tokens": OUTPUT_TOKENS, "window_s": args.window_s}
    name = "sim_capacity" if args.profile == DEFAULT_PROFILE else f"sim_capacity_{args.profile}"
    path = write_result(name, config, {"points": points})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
