"""Write a benchmark's result JSON with what is needed to reproduce it: command, config, git rev, host."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def git_rev() -> str:
    done = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False)
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", ".", ":!bench/results"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def hot_path(tree: Path) -> str:
    """Whether ``tree``'s Sluice runs compiled (mypyc) or pure Python here (docs/compiled.md)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    cmd = [sys.executable, "-m", "sluice", "version"]
    done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("hot path: "):
            return line.removeprefix("hot path: ")
    return "pure Python (no `sluice version`: before the compiled build)"


def write_result(name: str, config: dict[str, Any], figures: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {
        "command": " ".join(["python", *sys.argv]),
        "git_rev": git_rev(),
        "host": {
            "cpus": os.cpu_count(),
            "load_avg_1m": os.getloadavg()[0],
            "python": platform.python_version(),
            "machine": platform.machine(),
        },
        "config": config,
        "figures": figures,
    }
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    return path
