"""Sluice forwards the simulator's ground truth (``x-sim-output-tokens``) but never reads it.

The header tells a *simulated* backend how many tokens to generate; if the
router, the predictors or the policies looked at it, every benchmark on the
simulated fleet would be flattered by an oracle no real deployment has. Two
checks: no code on Sluice's decision path mentions the header, and through
the real proxy the same request gets the same predictions and the same routing
with and without it (on fresh, identically seeded proxies).
"""

from __future__ import annotations

import ast
import random
from pathlib import Path

import aiohttp
import orjson

from core import headers
from core.config import load_config_text
from router.app import HEALTH, build_app, start_server
from tests.fakes.backend import FakeBackend
from tests.integration.conftest import config_text

ROOT = Path(__file__).resolve().parents[2]
DECISION_PATH_PACKAGES = ("router", "policies", "predictors", "decision", "state", "core")
POLICY = "routes:\n  - {name: default, policy: {name: sluice_predictive}}\n"
PROMPTS = (
    "Write a long essay about the history of paged attention.",
    "Yes or no: is 17 prime?",
    "List ten uses of a prefix cache, with a paragraph each.",
)


def _mentions_of_the_header(path: Path) -> list[str]:
    """String constants (not docstrings) naming an x-sim header, and uses of the header constant."""
    tree = ast.parse(path.read_text(), filename=str(path))
    docstrings = {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
    }
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
            and "x-sim" in node.value.lower()
        ):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
        name = node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else ""
        if name == "SIM_OUTPUT_TOKENS":
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: SIM_OUTPUT_TOKENS")
    return found


def test_no_decision_path_module_reads_the_simulator_header() -> None:
    mentions = []
    for package in DECISION_PATH_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == ROOT / "core" / "headers.py":  # where the name is defined for the load generator
                continue
            mentions.extend(_mentions_of_the_header(path))
    assert mentions == []


async def _decision_for(prompt: str, sim_tokens: str | None) -> tuple[dict, dict[str, str]]:
    """One request through a fresh, seeded proxy on fresh backends: its decision record, upstream headers."""
    backends = [await FakeBackend(f"b{i}").start() for i in range(3)]
    app = build_app(load_config_text(config_text(backends, POLICY)), rng=random.Random(7))
    runner, host, port = await start_server(app, "127.0.0.1", 0, shutdown_grace_s=0.5)
    try:
        await app[HEALTH].first_round.wait()
        url = f"http://{host}:{port}"
        sent = {headers.REQUEST_ID: "same-id"}
        if sim_tokens is not None:
            sent[headers.SIM_OUTPUT_TOKENS] = sim_tokens
        body = {"model": "m1", "messages": [{"role": "user", "content": prompt}], "max_tokens": 4096}
        async with aiohttp.ClientSession() as session:
            async with session.post(url + "/v1/chat/completions", json=body, headers=sent) as resp:
                assert resp.status == 200
            async with session.get(url + "/debug/decisions") as resp:
                (record,) = orjson.loads(await resp.read())["decisions"]
        upstream = next(dict(r.headers) for b in backends for r in b.requests)
    finally:
        await runner.cleanup()
        for b in backends:
            await b.stop()
    record.pop("at_s")
    return record, upstream


async def test_predictions_and_routing_are_identical_with_and_without_the_header() -> None:
    for prompt in PROMPTS:
        without, upstream_without = await _decision_for(prompt, None)
        for truth in ("1", "3000"):
            with_header, upstream_with = await _decision_for(prompt, truth)
            assert with_header == without, (prompt, truth)
            assert upstream_with[headers.SIM_OUTPUT_TOKENS] == truth  # forwarded to the simulator
        assert headers.SIM_OUTPUT_TOKENS not in {k.lower() for k in upstream_without}
        assert without["predicted_output_tokens"] is not None
