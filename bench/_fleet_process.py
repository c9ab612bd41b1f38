"""Start ``sluice sim`` in a subprocess for a benchmark and read the addresses it prints."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def sim_fleet(fleet_file: str, *extra: str) -> Iterator[dict[str, str]]:
    """Yield ``{backend name: url}`` of a running ``sluice sim``; stop it by PID afterwards."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "sluice", "sim", "--fleet", fleet_file, *extra],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        urls: dict[str, str] = {}
        for line in proc.stdout:
            item = json.loads(line)
            if item.get("event") == "ready":
                break
            urls[item["backend"]] = item["url"]
        yield urls
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
