"""Child-process supervision: readiness on a condition, early exits reported, nothing left running."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from loadgen.processes import ChildError, ChildGroup, wait_http

PY = sys.executable
DEADLINE_S = 30.0


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def script(code: str) -> list[str]:
    return [PY, "-c", code]


SLEEPER = "import time, sys; print('up', flush=True); time.sleep(600)"
STUBBORN = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ignoring', flush=True); time.sleep(600)"
)


async def test_wait_line_then_stop_all_leaves_no_process(tmp_path: Path) -> None:
    async with ChildGroup(tmp_path) as group:
        child = await group.spawn("sleeper", script(SLEEPER))
        line = await child.wait_line(lambda text: text == "up", DEADLINE_S, "'up'")
        assert line == "up" and alive(child.pid)
    assert not alive(child.pid) and child.returncode is not None
    assert (tmp_path / "sleeper.log").read_text() == "up\n"
    [entry] = json.loads((tmp_path / "processes.json").read_text())
    assert entry["name"] == "sleeper" and entry["pid"] == child.pid


async def test_a_child_that_exits_early_fails_the_wait_with_its_output(tmp_path: Path) -> None:
    async with ChildGroup(tmp_path) as group:
        other = await group.spawn("sleeper", script(SLEEPER))
        failing = await group.spawn("failing", script("import sys; print('bad flag --x'); sys.exit(3)"))
        with pytest.raises(ChildError, match="exited with status 3") as caught:
            await failing.wait_line(lambda text: text == "never", DEADLINE_S, "a ready line")
        assert "bad flag --x" in str(caught.value)
        await other.wait_line(lambda text: text == "up", DEADLINE_S, "'up'")
    assert not alive(other.pid)


async def test_sigterm_ignored_means_sigkill_after_the_grace(tmp_path: Path) -> None:
    group = ChildGroup(tmp_path)
    child = await group.spawn("stubborn", script(STUBBORN))
    await child.wait_line(lambda text: text == "ignoring", DEADLINE_S, "'ignoring'")
    status = await asyncio.wait_for(child.stop(grace_s=0.2), DEADLINE_S)
    assert status == -9 and not alive(child.pid)


async def test_wait_http_reports_a_dead_child_rather_than_waiting_out_its_deadline(tmp_path: Path) -> None:
    async with ChildGroup(tmp_path) as group:
        child = await group.spawn("quitter", script("print('bye')"))
        with pytest.raises(ChildError, match="exited with status 0 before"):
            await wait_http("http://127.0.0.1:9/health", 600.0, child)


async def test_a_missing_program_is_a_child_error(tmp_path: Path) -> None:
    async with ChildGroup(tmp_path) as group:
        with pytest.raises(ChildError, match="cannot start"):
            await group.spawn("ghost", [str(tmp_path / "no-such-binary")])


async def test_wait_exit_returns_the_status_or_fails_past_its_deadline(tmp_path: Path) -> None:
    async with ChildGroup(tmp_path) as group:
        quick = await group.spawn("quick", script("import sys; print('done'); sys.exit(4)"))
        assert await quick.wait_exit(DEADLINE_S) == 4 and "done" in quick.tail()
        slow = await group.spawn("slow", script(SLEEPER))
        with pytest.raises(ChildError, match=r"still running after 0\.2 s"):
            await slow.wait_exit(0.2)
    assert not alive(slow.pid)
