"""Start real llama.cpp servers as child processes, wait until they serve, stop them by PID.

Each server is ``python -m loadgen.llamacpp.serve`` in its own process (one
model, ``slots`` parallel sequences, one thread), bound to 127.0.0.1 on an
ephemeral port that is parsed from the child's ``LISTENING <url>`` line; its
stderr (one log line per request) goes to a file. Readiness is ``GET /health``
answering 200 (503 while loading), polled until a deadline.

Several servers are started together and waited for together, so their model
loads overlap. ``stop`` sends SIGTERM to the child's PID and SIGKILL if it has
not exited within ``grace_s``; nothing is ever killed by name.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

_REPO_ROOT = Path(__file__).resolve().parents[2]
_READY_LINE = "LISTENING "
_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only


class ServerStartError(RuntimeError):
    """The server process died or did not become healthy in time; the message quotes its log."""


@dataclass(frozen=True, slots=True)
class ServerSpec:
    model_path: Path
    log_path: Path
    alias: str = "tiny-llama"
    slots: int = 4
    ctx_tokens: int = 8192
    threads: int = 1


@dataclass(slots=True)
class LlamaCppServer:
    """One running server process: its PID, base URL and log file."""

    spec: ServerSpec
    process: subprocess.Popen[str]
    url: str = ""
    _log_file: IO[str] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, grace_s: float = 10.0) -> int | None:
        """SIGTERM by PID, wait up to ``grace_s``, then SIGKILL; returns the exit code."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=grace_s)
        if self.process.stdout is not None:
            self.process.stdout.close()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return self.process.returncode

    def log_tail(self, n_lines: int = 20) -> str:
        try:
            lines = self.spec.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n_lines:])


def launch(spec: ServerSpec) -> LlamaCppServer:
    """Start the process (non-blocking); call ``wait_ready`` before use."""
    spec.log_path.parent.mkdir(parents=True, exist_ok=True)
    log_file = spec.log_path.open("w")
    command = [
        sys.executable,
        "-m",
        "loadgen.llamacpp.serve",
        *("--model", str(spec.model_path), "--alias", spec.alias, "--port", "0"),
        *("--slots", str(spec.slots), "--ctx-tokens", str(spec.ctx_tokens), "--threads", str(spec.threads)),
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(_REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=log_file, text=True, env=env, cwd=_REPO_ROOT
    )
    return LlamaCppServer(spec=spec, process=process, _log_file=log_file)


def wait_ready(server: LlamaCppServer, deadline_s: float) -> None:
    """Read the bound URL from the child's stdout, then poll ``/health`` until 200 or ``deadline_s``."""
    server.url = _read_url(server, deadline_s)
    while True:
        if _healthy(server.url):
            return
        _check_alive(server)
        if time.monotonic() > deadline_s:
            raise ServerStartError(f"{server.url} not healthy in time\n{server.log_tail()}")
        time.sleep(0.02)  # polling interval of a readiness probe, not synchronisation


def start_servers(specs: Sequence[ServerSpec], timeout_s: float = 60.0) -> list[LlamaCppServer]:
    """Start all servers at once and wait until every one is healthy; on failure stop them all."""
    servers = [launch(spec) for spec in specs]
    deadline_s = time.monotonic() + timeout_s
    try:
        for server in servers:
            wait_ready(server, deadline_s)
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers


def _read_url(server: LlamaCppServer, deadline_s: float) -> str:
    stdout = server.process.stdout
    assert stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(stdout, selectors.EVENT_READ)
        while True:
            remaining_s = deadline_s - time.monotonic()
            if remaining_s <= 0:
                raise ServerStartError(f"no {_READY_LINE!r} line in time\n{server.log_tail()}")
            if selector.select(timeout=remaining_s):
                line = stdout.readline()
                if not line:
                    _check_alive(server)
                    raise ServerStartError(f"server closed its stdout\n{server.log_tail()}")
                if line.startswith(_READY_LINE):
                    return line[len(_READY_LINE) :].strip().rstrip("/")


def _check_alive(server: LlamaCppServer) -> None:
    code = server.process.poll()
    if code is not None:
        raise ServerStartError(f"server exited with {code}\n{server.log_tail()}")


def _healthy(url: str) -> bool:
    try:
        with _NO_PROXY_OPENER.open(url + "/health", timeout=1.0) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):  # 503 while loading, or not accepting yet
        return False
