"""Prefix-cache effect on a real llama.cpp server: TTFT cold vs. same prefix again vs. another server.

Starts two xllamacpp servers (1 thread, 4 slots each) on the locally built
random-weight model, then per round sends a salted ~1.1k-token prompt to
server A (cold), the same prefix with a new suffix to A (warm: the prefix is
in A's cache) and the first prompt to B (cold: B never saw it). TTFT is the
time to the first SSE ``data:`` line, on a fresh connection per request
(llama.cpp closes the connection after each stream). Prints medians and the
cold/warm ratio measured within this run and writes
``bench/results/llamacpp_prefix.json``.

    python bench/llamacpp_prefix.py [--preset tiny] [--rounds 5] [--repeat 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from loadgen.llamacpp.gguf_model import build_model  # noqa: E402
from loadgen.llamacpp.harness import ServerSpec, start_servers  # noqa: E402

SENTENCE = "The cache keeps the prompt prefix, so the next request with the same prefix starts much faster. "


async def ttft(session: aiohttp.ClientSession, base: str, prompt: str) -> tuple[float, dict[str, Any]]:
    body = {
        "model": "m",
        "prompt": prompt,
        "max_tokens": 4,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    start = time.perf_counter()
    first_ms = None
    usage: dict[str, Any] = {}
    async with session.post(base + "/v1/completions", json=body) as response:
        async for line in response.content:
            if line.startswith(b"data: ") and first_ms is None:
                first_ms = (time.perf_counter() - start) * 1000
            if line.startswith(b"data: {") and b'"usage"' in line:
                usage = json.loads(line[6:]).get("usage") or usage
    assert first_ms is not None
    return first_ms, usage


async def run(urls: list[str], rounds: int, repeat: int) -> dict[str, Any]:
    cold, warm, other = [], [], []
    prompt_tokens, cached_tokens = 0, 0
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(rounds):
            prefix = f"Run {uuid.uuid4().hex}. " + SENTENCE * repeat
            cold_ms, usage = await ttft(session, urls[0], prefix + "First question?")
            warm_ms, warm_usage = await ttft(session, urls[0], prefix + "A different question?")
            other_ms, _ = await ttft(session, urls[1], prefix + "First question?")
            cold.append(cold_ms)
            warm.append(warm_ms)
            other.append(other_ms)
            prompt_tokens = usage.get("prompt_tokens", 0)
            cached_tokens = (warm_usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
    return {
        "prompt_tokens": prompt_tokens,
        "warm_cached_tokens": cached_tokens,
        "cold_ttft_ms": [round(x, 1) for x in cold],
        "warm_same_server_ttft_ms": [round(x, 1) for x in warm],
        "cold_other_server_ttft_ms": [round(x, 1) for x in other],
        "median_cold_ms": round(statistics.median(cold), 1),
        "median_warm_ms": round(statistics.median(warm), 1),
        "median_other_server_ms": round(statistics.median(other), 1),
        "cold_over_warm_ratio": round(statistics.median(cold) / statistics.median(warm), 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", choices=["tiny", "small", "medium"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=50, help="sentences in the shared prefix")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        model = build_model(Path(tmp) / f"{args.preset}.gguf", args.preset)
        build_s = time.perf_counter() - start
        start = time.perf_counter()
        specs = [ServerSpec(model, Path(tmp) / f"{name}.log") for name in ("a", "b")]
        servers = start_servers(specs)
        start_s = time.perf_counter() - start
        try:
            results = asyncio.run(run([s.url for s in servers], args.rounds, args.repeat))
        finally:
            for server in servers:
                server.stop()
    results |= {"model_build_s": round(build_s, 2), "two_servers_ready_s": round(start_s, 2)}
    print(json.dumps(results, indent=2))
    git = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    rev = git.stdout.strip()
    out = {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "config": {**vars(args), "slots": 4, "threads": 1, "ctx_tokens": 8192, "max_tokens": 4},
        "git_rev": rev,
        "results": results,
    }
    path = ROOT / "bench" / "results" / "llamacpp_prefix.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
