"""Real-time replay of a workload against a URL, end to end: preflight, send, summarise, write.

``replay(workload, client_options, ...)`` is what ``sluice replay`` (and
later ``make demo``) calls. It never raises for a run that started: an
interrupt (the returned task cancelled, i.e. Ctrl-C) or a workload error
surfacing mid-run (a corrupt tail of a lazily read trace) stops sending,
cancels what is in flight and returns the records so far with
``partial=True`` and the reason. An unreachable target raises
``TargetUnreachable`` before anything is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import sys
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from loadgen.client import ClientOptions, LoadClient
from loadgen.progress import ProgressBar
from loadgen.records import RequestRecord
from loadgen.results import SLO, git_revision, results_document
from loadgen.workload import WorkloadRequest
from loadgen.workloads import Workload, WorkloadError


@dataclass(slots=True)
class ReplayResult:
    records: list[RequestRecord]
    document: dict[str, Any]
    partial: bool
    partial_reason: str | None


def raise_open_files_limit(wanted: int = 65_536) -> int:
    """Lift the soft open-files limit towards the hard one: every open stream holds a socket.

    Open-loop load against a slow target can hold thousands of streams; the common
    default soft limit of 1,024 would turn them into ``connect_error`` records.
    Returns the soft limit now in force.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class _Guarded:
    """Wraps the workload iterator so a ``WorkloadError`` mid-run is kept instead of escaping the client."""

    def __init__(self, requests: Iterator[WorkloadRequest]) -> None:
        self._requests = requests
        self.error: WorkloadError | None = None

    def __iter__(self) -> Iterator[WorkloadRequest]:
        try:
            yield from self._requests
        except WorkloadError as exc:
            self.error = exc


async def replay(
    workload: Workload,
    client_options: ClientOptions,
    *,
    slo: SLO,
    warmup_s: float = 0.0,
    command: Sequence[str] | None = None,
    progress: bool | None = None,
) -> ReplayResult:
    """Preflight, then send ``workload`` open-loop and summarise; see the module docstring."""
    client = LoadClient(client_options)
    await client.preflight()
    requests = _Guarded(workload.requests())
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    raise_open_files_limit()
    bar = ProgressBar(client.counters, workload.options.duration_s, enabled=progress)
    bar_task = asyncio.create_task(bar.run())
    partial_reason: str | None = None
    try:
        await client.run(requests)
    except asyncio.CancelledError:
        # The interrupt is this function's to handle: stop, keep the records, report partial.
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        partial_reason = "interrupted"
    finally:
        bar_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await bar_task
    if requests.error is not None:
        partial_reason = f"workload error: {requests.error}"
    records = client.records()
    meta = {
        "kind": "replay",
        "started_at": started_at,
        "command": list(command if command is not None else sys.argv),
        "git_rev": git_revision(),
        "seed": workload.options.seed,
        "target": {"url": client_options.base_url},
        "client": {k: v for k, v in asdict(client_options).items() if k != "api_key"},
        "workload": workload.describe(),
    }
    partial = partial_reason is not None
    doc = results_document(
        records, slo=slo, warmup_s=warmup_s, meta=meta, partial=partial, partial_reason=partial_reason
    )
    return ReplayResult(records, doc, partial, partial_reason)
