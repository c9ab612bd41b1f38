"""Prefix-cache effect through Sluice: two real llama.cpp servers, TTFT cold vs. the same prefix again.

Starts two xllamacpp servers (1 thread, 4 slots each) on the locally built
random-weight model and Sluice in front of them (in this process, 127.0.0.1
port 0). Per round, with a salted ~1.1k-token prefix and one ``x-session-id``:

* ``sglang_cache_aware`` (prefix affinity): the first prompt (cold) and the same prefix with a
  new suffix (warm) through Sluice — both land on the same server; then the
  same prefix with a third suffix straight to that server (Sluice's share
  of a warm TTFT);
* ``round_robin``: the same two prompts go to different servers, so the
  repeat is cold again (what routing without affinity costs).

TTFT is the client's time to the first SSE ``data:`` line. Prints medians and
the cold/warm ratio measured within this run and writes
``bench/results/llamacpp_through_sluice.json``.

    python bench/llamacpp_through_sluice.py [--rounds 5] [--repeat 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._results import write_result  # noqa: E402
from core.config import load_config_text  # noqa: E402
from loadgen.llamacpp.gguf_model import build_model  # noqa: E402
from loadgen.llamacpp.harness import LlamaCppServer, ServerSpec, start_servers  # noqa: E402
from router.app import HEALTH, build_app, start_server  # noqa: E402

SENTENCE = "The cache keeps the prompt prefix, so the next request with the same prefix starts much faster. "
MODEL = "tiny-llama"
NAMES = ("a", "b")


async def ttft(
    session: aiohttp.ClientSession, url: str, prompt: str, session_id: str
) -> tuple[float, str, int]:
    """(ms to the first event, the backend that answered, cached prompt tokens)."""
    body = {
        "model": MODEL,
        "prompt": prompt,
        "max_tokens": 4,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started_s = time.perf_counter()
    first_ms = None
    cached = 0
    async with session.post(url + "/v1/completions", json=body, headers={"x-session-id": session_id}) as resp:
        async for line in resp.content:
            if line.startswith(b"data: ") and first_ms is None:
                first_ms = (time.perf_counter() - started_s) * 1e3
            if line.startswith(b"data: {") and b'"usage"' in line:
                cached = json.loads(line[6:])["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert first_ms is not None and resp.status == 200
    return first_ms, resp.headers.get("x-sluice-backend", "direct"), cached


def config_text(servers: list[LlamaCppServer], policy: str) -> str:
    lines = ["backends:"]
    for name, server in zip(NAMES, servers, strict=True):
        lines.append(f"  - {{name: {name}, url: '{server.url}', models: [{MODEL}]}}")
    lines.append(f"routes:\n  - {{name: default, policy: {{name: {policy}}}}}")
    return "\n".join(lines) + "\n"


async def with_sluice(servers: list[LlamaCppServer], policy: str, rounds: int, repeat: int) -> dict[str, Any]:
    app = build_app(load_config_text(config_text(servers, policy)))
    runner, host, port = await start_server(app, "127.0.0.1", 0, shutdown_grace_s=0.5)
    await app[HEALTH].first_round.wait()
    url = f"http://{host}:{port}"
    by_name = dict(zip(NAMES, servers, strict=True))
    cold, repeat_ms, direct, cached = [], [], [], []
    same = 0
    # Straight to llama.cpp, a connection per request: it closes after every stream (docs/backends.md).
    one_shot = aiohttp.TCPConnector(force_close=True)
    try:
        async with aiohttp.ClientSession() as client, aiohttp.ClientSession(connector=one_shot) as raw:
            for _ in range(rounds):
                conversation = uuid.uuid4().hex
                prefix = f"Run {conversation}. " + SENTENCE * repeat
                cold_ms, home, _ = await ttft(client, url, prefix + "First question?", conversation)
                again_ms, again, again_cached = await ttft(client, url, prefix + "Another?", conversation)
                direct_ms, _, _ = await ttft(raw, by_name[home].url, prefix + "A third?", conversation)
                cold.append(cold_ms)
                repeat_ms.append(again_ms)
                direct.append(direct_ms)
                cached.append(again_cached)
                same += again == home
    finally:
        await runner.cleanup()
    return {
        "repeat_on_same_server": f"{same}/{rounds}",
        "repeat_cached_tokens": cached,
        "cold_ttft_ms": [round(x, 1) for x in cold],
        "repeat_ttft_ms": [round(x, 1) for x in repeat_ms],
        "warm_direct_ttft_ms": [round(x, 1) for x in direct],
        "median_cold_ms": round(statistics.median(cold), 1),
        "median_repeat_ms": round(statistics.median(repeat_ms), 1),
        "median_warm_direct_ms": round(statistics.median(direct), 1),
        "cold_over_repeat_ratio": round(statistics.median(cold) / statistics.median(repeat_ms), 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=50, help="sentences in the shared prefix")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = build_model(Path(tmp) / "tiny.gguf", "tiny")
        servers = start_servers([ServerSpec(model, Path(tmp) / f"{n}.log") for n in ("a", "b")])
        try:
            figures = {
                policy: asyncio.run(with_sluice(servers, policy, args.rounds, args.repeat))
                for policy in ("sglang_cache_aware", "round_robin")
            }
        finally:
            for server in servers:
                server.stop()
    print(json.dumps(figures, indent=2))
    config = {**vars(args), "preset": "tiny", "slots": 4, "threads": 1, "ctx_tokens": 8192, "max_tokens": 4}
    path = write_result("llamacpp_through_sluice", config, figures)
    print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
