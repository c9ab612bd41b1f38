"""``sluice replay`` end to end in subprocesses: files written, exit codes, Ctrl-C gives partial results."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

DEADLINE_S = 60.0


@pytest.fixture(scope="module")
def fake_url() -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "loadgen.fake_server", "--port", "0", "--itl-ms", "1"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        port = json.loads(proc.stdout.readline())["port"]
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def sluice(*args: str) -> list[str]:
    return [sys.executable, "-m", "sluice", *args]


def test_replay_writes_results_report_and_summary(fake_url: str, tmp_path: Path) -> None:
    out = tmp_path / "run"
    cmd = sluice(
        "replay", "--url", fake_url, "--workload", "poisson", "--set", "rate_rps=40", "--set", "span_s=2",
        "--set", "output_tokens=8", "--out", str(out), "--seed", "7", "--slo-ttft-ms", "2000",
        "--slo-tpot-ms", "500", "--tenant-mix", "a=1,b=1", "--no-progress",
    )  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=DEADLINE_S)
    assert done.returncode == 0, done.stderr
    assert "TTFT ms" in done.stdout and "per tenant" in done.stdout and "report:" in done.stdout
    doc = json.loads((out / "results.json").read_text())
    summary = doc["summary"]
    assert summary["requests"] == summary["completed"] > 40
    assert doc["partial"] is False and doc["seed"] == 7 and doc["kind"] == "replay"
    assert doc["workload"]["name"] == "poisson" and doc["workload"]["params"]["rate_rps"] == 40.0
    assert doc["target"]["url"] == fake_url and "api_key" not in doc["client"]
    assert doc["command"][1:3] == ["replay", "--url"]
    assert set(doc["by_tenant"]) == {"a", "b"} and set(doc["by_backend"]) == {"fake-0"}
    assert summary["slo_attainment_frac"] is not None
    with gzip.open(out / "requests.jsonl.gz", "rt") as handle:
        lines = [json.loads(line) for line in handle]
    assert len(lines) == summary["requests"]
    assert all(line["output_tokens"] == 8 and len(line["itl_ms"]) == 7 for line in lines)
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 4 and "Latency CDFs" in html


def test_unreachable_target_fails_fast_with_the_url(tmp_path: Path) -> None:
    done = subprocess.run(
        sluice("replay", "--url", "http://127.0.0.1:9", "--workload", "poisson", "--out", str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
    )
    assert done.returncode == 3
    assert "cannot reach http://127.0.0.1:9" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "results.json").exists()


def test_ctrl_c_writes_partial_results(fake_url: str, tmp_path: Path) -> None:
    out = tmp_path / "run"
    cmd = sluice(
        "replay", "--url", fake_url, "--workload", "poisson", "--set", "rate_rps=20", "--set", "span_s=600",
        "--out", str(out), "--progress",
    )  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ})
    assert proc.stderr is not None
    os.set_blocking(proc.stderr.fileno(), False)
    seen = b""
    deadline = time.monotonic() + DEADLINE_S
    while b"ok 5" not in seen and time.monotonic() < deadline:  # wait on the progress line, not on a timer
        seen += proc.stderr.read() or b""
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, _ = proc.communicate(timeout=DEADLINE_S)
    assert proc.returncode == 130
    assert b"PARTIAL: interrupted" in stdout
    doc = json.loads((out / "results.json").read_text())
    assert doc["partial"] is True and doc["partial_reason"] == "interrupted"
    assert doc["summary"]["completed"] >= 5
