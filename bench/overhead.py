"""Sluice's overhead: direct vs through Sluice, in one run, on this machine.

Two workloads (issue 2, item 7; method of shared/reference/tools.md §2-3):

(a) small non-streaming chat requests at concurrency ``--connections`` (64)
    against nginx ``return 200`` backends with a canned ``chat.completion``;
(b) streams of ``--chunks`` (100) SSE events from a raw-asyncio streamer
    (``bench/sse_streamer.py``), same concurrency.

Each is measured directly against one backend, then through Sluice in front
of two backends (round robin), in two configurations of the same binary:
``sluice`` is the default config (predictors, online learning and admission
on for every request: what a user gets without a config of their own) and
``dataplane`` the same with ``predictors.enabled: false`` and
``admission.enabled: false``, i.e. the proxy of issue 2 alone (parse, route
round robin, forward, relay, metrics, health, retries). The difference is
what the decision engine costs per request on this load. Load comes from ``wrk -t1 -c64 --latency``
with a Lua POST body; wrk's latency is time to the last byte. Sluice's CPU is
utime + stime of its process from ``/proc/PID/stat`` over the measured window,
divided by the responses completed: µs per request and per stream.
Targets: <= 250 µs per request, <= 1,000 µs per 100-chunk stream.

(c) TTFT added by Sluice: ``--ttft-samples`` sequential streams (concurrency 1)
    timed from sending the request to the first body byte, direct vs through
    Sluice, with an aiohttp client in this process (same client both ways).

Prints a table with Sluice/direct ratios and writes ``--out`` (JSON with the
command, configuration, git revision and figures). Needs ``nginx`` and
``wrk`` on PATH. Everything binds 127.0.0.1; every process is stopped by PID.

    python bench/overhead.py --duration 10 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from _results import hot_path

ROOT = Path(__file__).resolve().parents[1]
TARGET_US_PER_REQUEST = 250.0
TARGET_US_PER_STREAM = 1000.0
CANNED = (
    '{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"fake-model",'
    '"choices":[{"index":0,"message":{"role":"assistant","content":"Hello"},"finish_reason":"stop"}],'
    '"usage":{"prompt_tokens":12,"completion_tokens":1,"total_tokens":13}}'
)
CHAT_BODY = (
    '{"model":"fake-model","messages":[{"role":"user","content":"Say hello in one word."}],"max_tokens":16}'
)
STREAM_BODY = (
    '{"model":"fake-stream","messages":[{"role":"user","content":"Count."}],"max_tokens":100,"stream":true}'
)
CLK_TCK = os.sysconf("SC_CLK_TCK")
# The second Sluice process: the proxy without the decision engine's per-request work.
DATAPLANE_ONLY = "predictors: {enabled: false}\nadmission: {enabled: false}\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)


def nginx_conf(prefix: Path, ports: list[int]) -> Path:
    servers = "".join(
        f"""
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location = /health {{ return 200 '{{}}'; }}
    location / {{ return 200 '{CANNED}'; }}
  }}"""
        for port in ports
    )
    conf = prefix / "nginx.conf"
    temp = "".join(
        f"  {k}_temp_path {prefix}/{k}_temp;\n" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf.write_text(
        f"""worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
{temp}  keepalive_requests 1000000;
  default_type application/json;{servers}
}}
"""
    )
    return conf


def wait_http(url: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} not ready after {timeout_s}s")
        time.sleep(0.1)


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def parse_wrk(text: str) -> dict[str, Any]:
    def latency_ms(pct: str) -> float:
        match = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
        if match is None:
            raise RuntimeError(f"no {pct}% latency in wrk output:\n{text}")
        return float(match.group(1)) * _UNITS[match.group(2)]

    completed = re.search(r"(\d+) requests in", text)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if completed is None or rps is None:
        raise RuntimeError(f"cannot parse wrk output:\n{text}")
    return {
        "requests": int(completed.group(1)),
        "rps": float(rps.group(1)),
        "p50_ms": latency_ms("50"),
        "p99_ms": latency_ms("99"),
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": sum(int(x) for x in errors.groups()) if errors else 0,
    }


def run_wrk(url: str, lua: Path, duration_s: int, connections: int, pid: int | None) -> dict[str, Any]:
    cmd = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{duration_s}s",
        "--latency",
        "--timeout",
        "10s",
        "-s",
        str(lua),
        url,
    ]
    cpu_before = cpu_seconds(pid) if pid else 0.0
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    cpu_after = cpu_seconds(pid) if pid else 0.0
    result = parse_wrk(out)
    if pid:
        result["sluice_cpu_s"] = cpu_after - cpu_before
        result["sluice_cpu_us_per_request"] = 1e6 * (cpu_after - cpu_before) / max(1, result["requests"])
    return result


async def _ttft_ms(url: str, samples: int) -> list[float]:
    import aiohttp  # only this probe needs it

    out = []
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession() as session:
        for _ in range(samples):
            start = time.perf_counter()
            async with session.post(url, data=STREAM_BODY.encode(), headers=headers) as resp:
                await resp.content.readany()
                out.append((time.perf_counter() - start) * 1e3)
                await resp.read()
    return out


def ttft_probe(direct_url: str, sluice_url: str, samples: int) -> dict[str, float]:
    direct = asyncio.run(_ttft_ms(direct_url, samples))
    via = asyncio.run(_ttft_ms(sluice_url, samples))
    p50_direct, p50_via = statistics.median(direct), statistics.median(via)
    return {
        "samples": samples,
        "direct_p50_ms": p50_direct,
        "sluice_p50_ms": p50_via,
        "added_p50_ms": p50_via - p50_direct,
        "direct_p90_ms": statistics.quantiles(direct, n=10)[-1],
        "sluice_p90_ms": statistics.quantiles(via, n=10)[-1],
    }


def lua_file(directory: Path, name: str, body: str) -> Path:
    path = directory / name
    path.write_text(
        f'wrk.method = "POST"\nwrk.body = \'{body}\'\nwrk.headers["Content-Type"] = "application/json"\n'
    )
    return path


def git_rev() -> str:
    rev = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout
    return rev + ("-dirty" if dirty.strip() else "")


class Processes:
    """Every process this benchmark starts, stopped by PID at the end."""

    def __init__(self) -> None:
        self.procs: list[tuple[subprocess.Popen[str], int]] = []

    def start(self, cmd: list[str], stop_signal: int = signal.SIGTERM, **kw: Any) -> subprocess.Popen[str]:
        proc = subprocess.Popen(cmd, text=True, **kw)
        self.procs.append((proc, stop_signal))
        return proc

    def stop_all(self) -> None:
        for proc, sig in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(sig)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def start_fleet(
    procs: Processes, tmp: Path, chunks: int
) -> tuple[list[int], list[int], dict[str, tuple[int, str]], str]:
    """The backends and two Sluice processes (default config, data plane only): their PIDs and URLs."""
    nginx_ports = [free_port(), free_port()]
    procs.start(
        ["nginx", "-p", str(tmp), "-c", str(nginx_conf(tmp, nginx_ports)), "-g", "daemon off;"],
        stop_signal=signal.SIGQUIT,
    )
    streamer = procs.start(
        [
            sys.executable,
            str(ROOT / "bench" / "sse_streamer.py"),
            "--ports",
            "0",
            "0",
            "--chunks",
            str(chunks),
        ],
        stdout=subprocess.PIPE,
    )
    assert streamer.stdout is not None
    stream_ports = [int(streamer.stdout.readline().split()[1]) for _ in range(2)]
    backends = [
        f"  - {{name: nginx-{i}, url: 'http://127.0.0.1:{p}', models: [fake-model]}}"
        for i, p in enumerate(nginx_ports)
    ] + [
        f"  - {{name: stream-{i}, url: 'http://127.0.0.1:{p}', models: [fake-stream]}}"
        for i, p in enumerate(stream_ports)
    ]
    config_text = "backends:\n" + "\n".join(backends) + "\n"
    sluices: dict[str, tuple[int, str]] = {}
    for variant, extra in (("sluice", ""), ("dataplane", DATAPLANE_ONLY)):
        config = tmp / f"{variant}.yaml"
        config.write_text(config_text + extra)
        port = free_port()
        proc = procs.start(
            [
                sys.executable,
                "-m",
                "sluice",
                "serve",
                "--config",
                str(config),
                "--port",
                str(port),
                "--log-level",
                "WARNING",
            ],
            cwd=ROOT,
        )
        sluices[variant] = (proc.pid, f"http://127.0.0.1:{port}")
    for port in nginx_ports + stream_ports:
        wait_http(f"http://127.0.0.1:{port}/health")
    for _, url in sluices.values():
        wait_http(url + "/ready")
    return nginx_ports, stream_ports, sluices, config_text


def measure(args: argparse.Namespace, tmp: Path, procs: Processes) -> dict[str, Any]:
    nginx_ports, stream_ports, sluices, config_text = start_fleet(procs, tmp, args.chunks)
    chat_lua = lua_file(tmp, "chat.lua", CHAT_BODY)
    stream_lua = lua_file(tmp, "stream.lua", STREAM_BODY)
    direct_chat = f"http://127.0.0.1:{nginx_ports[0]}/v1/chat/completions"
    direct_stream = f"http://127.0.0.1:{stream_ports[0]}/v1/chat/completions"
    sluice_pid, sluice = sluices["sluice"]
    dataplane_pid, dataplane = sluices["dataplane"]
    cases = {
        "chat_direct": (direct_chat, chat_lua, None),
        "chat_sluice": (sluice + "/v1/chat/completions", chat_lua, sluice_pid),
        "chat_dataplane": (dataplane + "/v1/chat/completions", chat_lua, dataplane_pid),
        "stream_direct": (direct_stream, stream_lua, None),
        "stream_sluice": (sluice + "/v1/chat/completions", stream_lua, sluice_pid),
        "stream_dataplane": (dataplane + "/v1/chat/completions", stream_lua, dataplane_pid),
    }
    for url, lua, _ in cases.values():  # warm-up: connections, caches, code paths
        run_wrk(url, lua, args.warmup, args.connections, None)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in cases}
    for _ in range(args.runs):
        for name, (url, lua, pid) in cases.items():
            runs[name].append(run_wrk(url, lua, args.duration, args.connections, pid))
    ttft = ttft_probe(direct_stream, sluice + "/v1/chat/completions", args.ttft_samples)
    return {"runs": runs, "ttft": ttft, "sluice_config": config_text}


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    med = {name: {key: statistics.median(r[key] for r in rs) for key in rs[0]} for name, rs in runs.items()}
    summary: dict[str, Any] = {"median": med}
    for kind, target in (("chat", TARGET_US_PER_REQUEST), ("stream", TARGET_US_PER_STREAM)):
        direct, via = med[f"{kind}_direct"], med[f"{kind}_sluice"]
        summary[kind] = {
            "sluice_cpu_us": via["sluice_cpu_us_per_request"],
            "target_us": target,
            "meets_target": via["sluice_cpu_us_per_request"] <= target,
            "rps_ratio_sluice_over_direct": via["rps"] / direct["rps"],
            "p50_ratio": via["p50_ms"] / direct["p50_ms"],
            "p99_ratio": via["p99_ms"] / direct["p99_ms"],
            "errors": sum(r["non_2xx"] + r["socket_errors"] for r in runs[f"{kind}_sluice"]),
            "dataplane_cpu_us": med[f"{kind}_dataplane"]["sluice_cpu_us_per_request"],
            "dataplane_meets_target": med[f"{kind}_dataplane"]["sluice_cpu_us_per_request"] <= target,
            "decision_engine_cpu_us": via["sluice_cpu_us_per_request"]
            - med[f"{kind}_dataplane"]["sluice_cpu_us_per_request"],
        }
    return summary


def print_table(summary: dict[str, Any]) -> None:
    med = summary["median"]
    print(f"{'case':<16}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'Sluice CPU us/resp':>20}")
    for name, m in med.items():
        cpu = f"{m['sluice_cpu_us_per_request']:.0f}" if "sluice_cpu_us_per_request" in m else "-"
        print(f"{name:<16}{m['rps']:>10.0f}{m['p50_ms']:>10.2f}{m['p99_ms']:>10.2f}{cpu:>20}")
    for kind in ("chat", "stream"):
        s = summary[kind]
        verdict = "meets" if s["meets_target"] else "MISSES"
        print(
            f"{kind}: Sluice/direct req/s x{s['rps_ratio_sluice_over_direct']:.2f}, "
            f"p50 x{s['p50_ratio']:.2f}, p99 x{s['p99_ratio']:.2f}; "
            f"{s['sluice_cpu_us']:.0f} us CPU per response "
            f"({verdict} the {s['target_us']:.0f} us target); errors {s['errors']}; "
            f"data plane only {s['dataplane_cpu_us']:.0f} us"
        )
    t = summary["ttft"]
    print(
        f"TTFT at concurrency 1 (p50): direct {t['direct_p50_ms']:.2f} ms, through Sluice "
        f"{t['sluice_p50_ms']:.2f} ms (+{t['added_p50_ms']:.2f} ms)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description="Sluice overhead benchmark (direct vs through Sluice)")
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured wrk run")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of unmeasured load per case")
    parser.add_argument("--runs", type=int, default=1, help="repeats; medians are reported")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--chunks", type=int, default=100, help="SSE events per stream")
    parser.add_argument("--ttft-samples", type=int, default=300, help="sequential streams for the TTFT probe")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "overhead.json")
    args = parser.parse_args()
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed (apt-get install nginx-light wrk)", file=sys.stderr)
            return 2
    procs = Processes()
    try:
        with tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp:
            measured = measure(args, Path(tmp), procs)
    finally:
        procs.stop_all()
    summary = summarize(measured["runs"])
    summary["ttft"] = measured["ttft"]
    print_table(summary)
    result = {
        "benchmark": "overhead",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "git_rev": git_rev(),
        "hot_path": hot_path(ROOT),
        "when_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "config": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "runs": args.runs,
            "connections": args.connections,
            "sse_chunks": args.chunks,
            "ttft_samples": args.ttft_samples,
            "load": "wrk -t1 --latency (latency = time to last byte)",
            "backends": "2 x nginx return 200 canned JSON (chat); 2 x raw-asyncio SSE streamer (stream)",
            "sluice_config": measured["sluice_config"],
            "dataplane_config": measured["sluice_config"] + DATAPLANE_ONLY,
        },
        "summary": {k: v for k, v in summary.items() if k != "median"},
        "median": summary["median"],
        "runs": measured["runs"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
