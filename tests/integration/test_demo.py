"""``sluice demo`` as a user runs it: a short run end to end, Ctrl-C mid-run, bad input; no orphans."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.loadgen_support import needs_data

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 240
pytestmark = [pytest.mark.slow, needs_data]


def demo(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "sluice", "demo", "--out", str(out), "--no-progress", *extra]


def started_pids(out: Path) -> dict[str, int]:
    entries = json.loads((out / "logs" / "processes.json").read_text())
    return {e["name"]: e["pid"] for e in entries}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_for_finished_requests(proxy_url: str, deadline_s: float = 120.0) -> None:
    """Poll Sluice's own metrics until some request has finished: the replay is under way."""
    give_up = time.monotonic() + deadline_s
    while time.monotonic() < give_up:
        with urllib.request.urlopen(proxy_url + "/metrics", timeout=5) as resp:
            text = resp.read().decode()
        counts = [
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("sluice_requests_total{")
        ]
        if sum(counts) > 0:
            return
        time.sleep(0.1)
    raise AssertionError(f"no request finished through {proxy_url} within {deadline_s} s")


def test_short_demo_prints_the_summary_writes_the_report_and_stops_everything(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    done = subprocess.run(
        demo(out, "--duration-s", "5", "--drain-s", "10"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr
    text = done.stdout
    for expected in ("fleet capacity", "offered load", "TTFT ms", "TPOT ms", "goodput", "per backend"):
        assert expected in text
    report = out / "report.html"
    assert f"report:  {report}" in text and report.stat().st_size > 10_000
    results = json.loads((out / "results.json").read_text())
    summary = results["summary"]
    assert summary["requests"] > 20 and summary["completed"] > 0 and results["partial"] is False
    assert set(results["by_backend"]) <= {"h100", "a100", "l4"} and results["by_backend"]
    assert results["slo"] == {"ttft_ms": 2000.0, "tpot_ms": 100.0, "e2e_ms": None}
    assert results["demo"]["sizing"]["load_frac"] == 0.5
    pids = started_pids(out)
    assert set(pids) == {"sim", "sluice"}
    assert not any(alive(pid) for pid in pids.values())


def test_ctrl_c_mid_replay_writes_partial_results_and_stops_everything(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc = subprocess.Popen(
        demo(out, "--duration-s", "120"), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        proxy_url = None
        for line in proc.stdout:
            if line.startswith("  http://"):
                proxy_url = line.strip()
            if line.startswith("replaying"):
                break
        assert proxy_url is not None
        wait_for_finished_requests(proxy_url)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "PARTIAL: interrupted" in stdout
    results = json.loads((out / "results.json").read_text())
    assert results["partial"] is True and results["partial_reason"] == "interrupted"
    assert (out / "report.html").is_file()
    assert not any(alive(pid) for pid in started_pids(out).values())


def test_unknown_policy_is_refused_before_anything_starts(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    done = subprocess.run(
        demo(out, "--policy", "no_such_policy"), cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT_S
    )
    assert done.returncode == 2
    assert "unknown policy 'no_such_policy'; known: " in done.stderr and "round_robin" in done.stderr
    assert "Traceback" not in done.stderr and not (out / "logs").exists()
