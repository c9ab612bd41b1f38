"""The one error a workload raises for bad input: it names the file and the row.

A trace that is missing, malformed, truncated or has unexpected columns must
stop a run with ``path:row: what is wrong`` and no traceback (the CLI prints
``str(error)``). ``row`` is the 1-based line number in the decompressed file
(the CSV header is line 1), or ``None`` when the problem is the file as a whole.
"""

from __future__ import annotations


class WorkloadError(Exception):
    """Bad workload input or options; ``str()`` is a ready-to-print message."""

    def __init__(self, message: str, *, path: str | None = None, row: int | None = None) -> None:
        self.path = path
        self.row = row
        self.detail = message
        where = ""
        if path is not None:
            where = f"{path}:{row}: " if row is not None else f"{path}: "
        super().__init__(where + message)
