"""/health, /ready, /v1/models, /metrics, and the ``sluice serve`` command end to end."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from pathlib import Path

import aiohttp
import orjson

from tests.fakes.backend import FakeBackend
from tests.integration.conftest import StartFleet, assert_no_leaks, config_text

ROOT = Path(__file__).resolve().parents[2]


async def _get(url: str) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, orjson.loads(await resp.read())


async def test_health_ready_and_models(start_fleet: StartFleet) -> None:
    proxy, backends = await start_fleet(2, models=("m1", "m2"))
    assert await _get(proxy.url + "/health") == (200, {"status": "ok"})
    status, ready = await _get(proxy.url + "/ready")
    assert status == 200
    assert ready["ready_backends"] == {"m1": 2, "m2": 2}
    status, models = await _get(proxy.url + "/v1/models")
    assert [m["id"] for m in models["data"]] == ["m1", "m2"]
    status, model = await _get(proxy.url + "/v1/models/m2")
    assert (status, model["id"]) == (200, "m2")
    for b in backends:
        b.health_status = 503
    await proxy.check_health()
    status, body = await _get(proxy.url + "/ready")
    assert status == 503
    assert body["error"]["code"] == "no_healthy_backend"
    assert await _get(proxy.url + "/health") == (200, {"status": "ok"})  # liveness is not readiness
    backends[1].health_status = 200
    await proxy.check_health()
    status, ready = await _get(proxy.url + "/ready")
    assert (status, ready["ready_backends"]) == (200, {"m1": 1, "m2": 1})


async def test_metrics_have_bounded_labels(start_fleet: StartFleet) -> None:
    proxy, backends = await start_fleet(1)
    async with aiohttp.ClientSession() as session:
        for model in ("m1", "m1", "unknown-model-xyz"):
            body = {"model": model, "messages": [], "stream": model == "m1"}
            async with session.post(proxy.url + "/v1/chat/completions", json=body) as resp:
                await resp.read()
        async with session.get(proxy.url + "/metrics") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain")
            text = await resp.text()
    assert 'sluice_requests_total{backend="b0",model="m1",route="default",status_class="2xx"} 2.0' in text
    assert 'sluice_requests_total{backend="none",model="none",route="none",status_class="4xx"} 1.0' in text
    assert "unknown-model-xyz" not in text
    assert 'sluice_errors_total{code="model_not_found"} 1.0' in text
    assert re.search(r'sluice_ttft_seconds_count\{backend="b0",model="m1",route="default"\} 2.0', text)
    assert 'sluice_output_tokens_total{backend="b0",model="m1",route="default"} 10.0' in text
    assert 'sluice_backend_health{backend="b0",state="ready"} 1.0' in text
    assert 'sluice_in_flight_requests{backend="b0"} 0.0' in text
    for name in (
        "sluice_inter_token_latency_seconds",
        "sluice_e2e_latency_seconds",
        "sluice_queue_time_seconds",
    ):
        assert f"# TYPE {name} histogram" in text
    await assert_no_leaks(proxy, backends)


async def test_serve_command_starts_logs_address_and_stops_on_sigterm(tmp_path: Path) -> None:
    backend = await FakeBackend("b0").start()
    try:
        config = tmp_path / "sluice.yaml"
        config.write_text(config_text([backend]))
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "sluice",
            "serve",
            "--config",
            str(config),
            "--port",
            "0",
            cwd=ROOT,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stderr is not None
        async with asyncio.timeout(20):
            while True:
                line = (await proc.stderr.readline()).decode()
                assert line, "serve exited before logging its address"
                match = re.search(r"listening on (http://\S+)", line)
                if match:
                    break
            url = match.group(1)
            assert await _get(url + "/health") == (200, {"status": "ok"})
            proc.send_signal(signal.SIGTERM)
            rest = (await proc.stderr.read()).decode()
            assert await proc.wait() == 0
        assert "stopped" in rest
    finally:
        await backend.stop()


async def test_serve_command_rejects_bad_config(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("backends:\n  - {name: a, url: 'http://127.0.0.1:1', models: [m], colour: red}\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sluice",
        "serve",
        "--config",
        str(config),
        cwd=ROOT,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    assert proc.returncode == 2
    assert f"{config}:2: backends[0].colour: unknown key" in err.decode()
