"""Streaming readers for the trace files, turning every I/O and format failure into ``WorkloadError``.

Files may be gzip-compressed (by the ``.gz`` suffix) or plain. Reading is
row by row so a large file is never held whole; a truncated gzip stream is
reported with the last row that was read intact, e.g.
``trace.csv.gz:1203: file is truncated or corrupt (Compressed file ended ...)``.

CSV: the header must hold exactly the expected columns (order free). JSON
lines: every row must be an object with exactly the expected keys. Unknown
columns are errors rather than being ignored, because a renamed column in a
new trace release would otherwise silently replay the wrong quantity.
"""

from __future__ import annotations

import csv
import gzip
import io
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

import orjson

from loadgen.workloads.errors import WorkloadError

T = TypeVar("T")

_STREAM_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error, OSError, UnicodeDecodeError)


def _open_text(path: Path) -> IO[str]:
    if not path.exists():
        raise WorkloadError("trace file not found", path=str(path))
    if path.is_dir():
        raise WorkloadError("is a directory, expected a trace file", path=str(path))
    try:
        if path.suffix == ".gz":
            return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
        return path.open("r", encoding="utf-8", newline="")
    except OSError as exc:
        raise WorkloadError(f"cannot open: {exc.strerror or exc}", path=str(path)) from None


def _corrupt(path: Path, last_row: int, exc: BaseException) -> WorkloadError:
    return WorkloadError(f"file is truncated or corrupt ({exc})", path=str(path), row=last_row + 1)


def iter_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, line without newline)`` of a text or gzip file."""
    handle = _open_text(path)
    line_no = 0
    try:
        with handle:
            for line in handle:
                line_no += 1
                yield line_no, line.rstrip("\r\n")
    except _STREAM_ERRORS as exc:
        raise _corrupt(path, line_no, exc) from None


def iter_csv(path: Path, columns: Sequence[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """``(line number, row)`` of a CSV whose header has exactly ``columns``."""
    handle = _open_text(path)
    expected = set(columns)
    line_no = 1
    try:
        with handle:
            reader = csv.reader(handle)
            try:
                header = next(reader)
            except StopIteration:
                raise WorkloadError("empty file, expected a CSV header", path=str(path), row=1) from None
            _check_header(path, header, expected)
            for values in reader:
                line_no = reader.line_num
                if not values:
                    continue
                if len(values) != len(header):
                    raise WorkloadError(
                        f"expected {len(header)} fields, found {len(values)}", path=str(path), row=line_no
                    )
                yield line_no, dict(zip(header, values, strict=True))
    except csv.Error as exc:
        raise WorkloadError(f"malformed CSV: {exc}", path=str(path), row=line_no + 1) from None
    except _STREAM_ERRORS as exc:
        raise _corrupt(path, line_no, exc) from None


def _check_header(path: Path, header: list[str], expected: set[str]) -> None:
    found = [h.strip() for h in header]
    unknown = [h for h in found if h not in expected]
    missing = sorted(expected - set(found))
    if unknown or missing or len(set(found)) != len(found):
        parts = []
        if unknown:
            parts.append(f"unknown columns {unknown}")
        if missing:
            parts.append(f"missing columns {missing}")
        if len(set(found)) != len(found):
            parts.append("repeated column names")
        raise WorkloadError(f"{'; '.join(parts)}; expected exactly {sorted(expected)}", path=str(path), row=1)


def iter_jsonl(path: Path, keys: Sequence[str] | None = None) -> Iterator[tuple[int, Mapping[str, Any]]]:
    """``(line number, object)`` of a JSON-lines file; blank lines are skipped.

    With ``keys`` every object must have exactly those keys.
    """
    expected = set(keys) if keys is not None else None
    for line_no, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise WorkloadError(f"invalid JSON: {exc}", path=str(path), row=line_no) from None
        if not isinstance(obj, dict):
            raise WorkloadError("expected a JSON object", path=str(path), row=line_no)
        if expected is not None and obj.keys() != expected:
            unknown = sorted(set(obj) - expected)
            missing = sorted(expected - set(obj))
            detail = "; ".join(
                p for p in (unknown and f"unknown keys {unknown}", missing and f"missing keys {missing}") if p
            )
            raise WorkloadError(f"{detail}; expected exactly {sorted(expected)}", path=str(path), row=line_no)
        yield line_no, obj


def parse_field(
    row: Mapping[str, Any], key: str, convert: Callable[[Any], T], path: Path, line_no: int, what: str = ""
) -> T:
    """``convert(row[key])`` or a ``WorkloadError`` naming the file, row and column."""
    value = row.get(key)
    try:
        return convert(value)
    except (TypeError, ValueError) as exc:
        shown = repr(value) if len(repr(value)) < 60 else repr(value)[:57] + "..."
        reason = what or str(exc)
        raise WorkloadError(
            f"column {key!r}: bad value {shown} ({reason})", path=str(path), row=line_no
        ) from None


def non_negative_int(value: Any) -> int:
    """An int >= 0 from an int or a decimal string (``"12"``, ``"12.0"``); bools are rejected."""
    if isinstance(value, bool):
        raise ValueError("expected an integer")
    if isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str):
        as_float = float(value)
        if not as_float.is_integer():
            raise ValueError("expected an integer")
        number = int(as_float)
    else:
        raise ValueError("expected an integer")
    if number < 0:
        raise ValueError("must be >= 0")
    return number


def finite_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("expected a number")
    number = float(value)
    if number != number or number in (float("inf"), float("-inf")):
        raise ValueError("must be finite")
    return number
