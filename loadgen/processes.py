"""Child processes a run starts (simulated fleet, proxy, peer routers): start, await readiness, stop.

Used by ``sluice demo`` and the ``bench/`` comparisons. The rules, and why:

* Each child runs in its own session (``start_new_session``): a Ctrl-C in the terminal reaches
  only the parent, which first writes its partial results and then stops the children itself,
  in reverse start order (load client before proxy before backends), instead of every process
  dying at once and the client recording the proxy's death as errors.
* On Linux each child also gets ``PR_SET_PDEATHSIG = SIGTERM``, so a parent killed with SIGKILL
  (which runs no cleanup) still leaves no orphan behind.
* Stopping is by PID: ``SIGTERM``, up to ``grace_s`` for a clean exit, then ``SIGKILL`` to the
  child's own process group (covers workers it forked, e.g. nginx's). Nothing is ever matched by
  name.
* Readiness is awaited on a condition with a deadline, never a fixed sleep: a line the child
  prints (``wait_line``) or an HTTP probe (``wait_http``). A child that exits first fails the wait
  at once with the tail of its output.

Every line a child writes (stdout and stderr) goes to ``<log_dir>/<name>.log``, and
``<log_dir>/processes.json`` lists every child started (name, PID, command), so a test or a
worried user can check that none is left running.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import aiohttp

_PR_SET_PDEATHSIG = 1
_TAIL_LINES = 40
_KEPT_LINES = 10_000


class ChildError(Exception):
    """A child did not start (exited early, or was not ready by its deadline)."""

    def __init__(self, name: str, message: str, tail: str = "") -> None:
        self.name = name
        self.tail = tail
        text = f"{name}: {message}"
        if tail:
            text += f"\n--- last lines of {name}'s output ---\n{tail}"
        super().__init__(text)


def _die_with_parent() -> None:
    """Runs in the child between fork and exec: deliver SIGTERM when the parent dies."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _open_log(path: Path) -> IO[str]:
    return path.open("w", encoding="utf-8")


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")


class Child:
    """One started process, its log, and waits on what it prints."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process, log: IO[str], log_path: Path) -> None:
        self.name = name
        self.proc = proc
        self.log_path = log_path
        self._log = log
        self._lines: deque[str] = deque(maxlen=_KEPT_LINES)
        self._waiters: list[tuple[Callable[[str], bool], asyncio.Future[str]]] = []
        self._readers = [
            asyncio.create_task(self._pump(stream))
            for stream in (proc.stdout, proc.stderr)
            if stream is not None
        ]
        self._exited = asyncio.create_task(proc.wait())

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def tail(self) -> str:
        return "\n".join(list(self._lines)[-_TAIL_LINES:])

    async def _pump(self, stream: asyncio.StreamReader) -> None:
        while line_bytes := await stream.readline():
            line = line_bytes.decode("utf-8", "replace").rstrip("\n")
            self._log.write(line + "\n")
            self._log.flush()
            self._lines.append(line)
            for predicate, future in list(self._waiters):
                if not future.done() and predicate(line):
                    future.set_result(line)

    async def wait_line(self, predicate: Callable[[str], bool], timeout_s: float, what: str) -> str:
        """The first line printed so far or later for which ``predicate`` holds (each line is offered
        to it once, in order); ``ChildError`` if the child exits first or the deadline passes."""
        for line in list(self._lines):
            if predicate(line):
                return line
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        entry = (predicate, future)
        self._waiters.append(entry)
        try:
            either: set[asyncio.Future[Any]] = {future, self._exited}
            done, _ = await asyncio.wait(either, timeout=timeout_s, return_when="FIRST_COMPLETED")
            if future in done:
                return future.result()
            await self.collect_output()
            if self._exited in done:
                raise ChildError(
                    self.name, f"exited with status {self.returncode} before {what}", self.tail()
                )
            raise ChildError(self.name, f"no {what} within {timeout_s:g} s", self.tail())
        finally:
            self._waiters.remove(entry)
            future.cancel()

    async def collect_output(self) -> None:
        """After an exit: let the readers copy the child's last output (for an error message)."""
        if self.returncode is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*self._readers, return_exceptions=True), 2.0)

    async def wait_exit(self, timeout_s: float) -> int:
        """The exit status of a child expected to finish by itself; ``ChildError`` past the deadline."""
        try:
            status = await asyncio.wait_for(asyncio.shield(self._exited), timeout_s)
        except TimeoutError:
            raise ChildError(self.name, f"still running after {timeout_s:g} s", self.tail()) from None
        await self.collect_output()
        return status

    async def stop(self, grace_s: float = 10.0) -> int | None:
        """SIGTERM by PID, then SIGKILL to its process group after ``grace_s``; returns the exit status."""
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(self._exited), grace_s)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.pid, signal.SIGKILL)
                await self._exited
        await asyncio.gather(*self._readers, return_exceptions=True)
        self._log.close()
        return self.returncode


async def wait_http(
    url: str,
    timeout_s: float,
    child: Child | None = None,
    ok: Callable[[int], bool] = lambda status: status == 200,
    interval_s: float = 0.1,
) -> None:
    """Poll ``GET url`` until ``ok(status)`` or the deadline; fails at once if ``child`` has exited."""
    name = child.name if child is not None else url
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2.0)) as session:
        while True:
            if child is not None and child.returncode is not None:
                await child.collect_output()
                raise ChildError(
                    name, f"exited with status {child.returncode} before {url} answered", child.tail()
                )
            try:
                async with session.get(url) as response:
                    await response.read()
                    if ok(response.status):
                        return
                    last = f"HTTP {response.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = type(exc).__name__
            if time.monotonic() >= deadline:
                tail = child.tail() if child is not None else ""
                raise ChildError(name, f"{url} not ready within {timeout_s:g} s (last: {last})", tail)
            await asyncio.sleep(interval_s)


class ChildGroup:
    """Children started for one run; leaving the ``async with`` stops them all, newest first."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.children: list[Child] = []
        self.started: list[dict[str, Any]] = []

    async def spawn(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Child:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        log = _open_log(log_path)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        except OSError as exc:
            log.close()
            raise ChildError(name, f"cannot start {argv[0]}: {exc}") from None
        child = Child(name, proc, log, log_path)
        self.children.append(child)
        self.started.append({"name": name, "pid": proc.pid, "argv": list(argv)})
        _write_json(self.log_dir / "processes.json", self.started)
        return child

    async def stop_all(self, grace_s: float = 10.0) -> None:
        while self.children:
            await self.children.pop().stop(grace_s)

    async def __aenter__(self) -> ChildGroup:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop_all()
