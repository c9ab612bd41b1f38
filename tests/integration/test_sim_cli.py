"""``sluice sim`` as a user runs it: a subprocess that prints its addresses and stops on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from core.config import load_config

ROOT = Path(__file__).resolve().parents[2]


def test_sluice_sim_prints_addresses_writes_a_config_and_stops(tmp_path: Path) -> None:
    config = tmp_path / "sluice.yaml"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sluice",
            "sim",
            "--fleet",
            "configs/fleets/demo.yaml",
            "--write-config",
            str(config),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(json.loads(line))
            if lines[-1].get("event") == "ready":
                break
        backends = [line for line in lines if "backend" in line]
        assert [b["backend"] for b in backends] == ["h100", "a100", "l4"]
        for b in backends:
            with urllib.request.urlopen(b["url"] + "/health", timeout=10) as resp:
                assert resp.status == 200
        loaded = load_config(config).config
        assert [b.url for b in loaded.backends] == [b["url"] for b in backends]
        assert [b.gpu for b in loaded.backends] == ["h100", "a100", "l4"]
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


def test_sluice_sim_reports_a_bad_fleet_file_with_its_line(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("backends:\n  - name: a\n    profile: h100-llama3.1-8b\n    colour: red\n")
    done = subprocess.run(
        [sys.executable, "-m", "sluice", "sim", "--fleet", str(fleet)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert f"{fleet}:4: backends[0].colour: unknown key" in done.stderr


def test_sluice_sim_refuses_a_bad_output_lengths_file(tmp_path: Path) -> None:
    lengths = tmp_path / "lengths.json"
    lengths.write_text('{"r1": 12, "r2": "many"}')
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "sluice",
            "sim",
            "--fleet",
            "configs/fleets/demo.yaml",
            "--output-lengths",
            str(lengths),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert f"{lengths}: 'r2': output tokens must be a non-negative integer, got 'many'" in done.stderr
