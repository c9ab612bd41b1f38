"""A small, forgiving parser for the Prometheus text exposition format (0.0.4 / OpenMetrics).

Why not ``prometheus_client.parser``: it parses every line of a body that is
mostly histogram buckets Sluice never reads, and raises on the first bad line.
Engine metrics are polled every second from every backend, so this parser
(1) looks only at the sample names it is asked for — everything else costs one
``str.find`` and a set lookup per line — and (2) skips a malformed line instead
of failing the scrape, counting it so the collector can warn.

Grammar accepted per line: ``name{label="value",...} value [timestamp]``;
``#`` lines (HELP/TYPE/EOF) are ignored; label values may contain ``\\"``,
``\\\\`` and ``\\n`` escapes and commas or braces inside quotes. Values are
Python floats (``NaN``, ``+Inf`` included); non-finite values are kept here and
ignored by the adapters.
"""

from __future__ import annotations

import math
import re
from collections.abc import Container, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

_NO_LABELS: Mapping[str, str] = MappingProxyType({})
_LABEL_BLOCK_RE = re.compile(r'\{((?:[^"}]|"(?:[^"\\]|\\.)*")*)\}')
_LABEL_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')
_ESCAPES = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}
_ESCAPE_RE = re.compile(r"\\[\\\"n]")


@dataclass(frozen=True, slots=True)
class Sample:
    """One series of a metric: its labels and current value."""

    labels: Mapping[str, str]
    value: float


@dataclass(slots=True)
class Exposition:
    """The wanted samples of one scrape, by metric name, plus parse diagnostics."""

    samples: dict[str, list[Sample]] = field(default_factory=dict)
    malformed_lines: int = 0
    first_malformed: str | None = None

    def series(self, name: str) -> list[Sample]:
        """Finite-valued samples of ``name`` (empty if absent)."""
        return [s for s in self.samples.get(name, ()) if math.isfinite(s.value)]

    def has(self, name: str) -> bool:
        return name in self.samples

    def names(self) -> frozenset[str]:
        return frozenset(self.samples)


def parse_exposition(text: str, wanted: Container[str]) -> Exposition:
    """Parse the samples of ``text`` whose metric name is in ``wanted``; never raises."""
    out = Exposition()
    for raw in text.split("\n"):  # not splitlines(): label values may hold \r, \x85, \u2028
        line = raw.strip()
        if not line or line[0] == "#":
            continue
        name_end = _name_end(line)
        if line[:name_end] not in wanted:
            continue
        sample = _parse_sample(line, name_end)
        if sample is None:
            out.malformed_lines += 1
            if out.first_malformed is None:
                out.first_malformed = line[:200]
            continue
        out.samples.setdefault(line[:name_end], []).append(sample)
    return out


def _name_end(line: str) -> int:
    brace = line.find("{")
    space = line.find(" ")
    if brace == -1:
        return space if space != -1 else len(line)
    return brace if space == -1 or brace < space else space


def _parse_sample(line: str, name_end: int) -> Sample | None:
    labels: Mapping[str, str] = _NO_LABELS
    rest = line[name_end:]
    if rest.startswith("{"):
        block = _LABEL_BLOCK_RE.match(rest)
        if block is None:
            return None
        parsed = _parse_labels(block.group(1))
        if parsed is None:
            return None
        labels = parsed
        rest = rest[block.end() :]
    parts = rest.split()
    if not 1 <= len(parts) <= 2:
        return None
    try:
        value = float(parts[0])
    except ValueError:
        return None
    if "_" in parts[0]:  # float() accepts "1_000"; the exposition format does not
        return None
    return Sample(labels, value)


def _parse_labels(block: str) -> Mapping[str, str] | None:
    if not block.strip():
        return _NO_LABELS
    labels: dict[str, str] = {}
    pos = 0
    while pos < len(block):
        match = _LABEL_RE.match(block, pos)
        if match is None or match.end() == pos:
            return None
        value = match.group(2)
        if "\\" in value:
            value = _ESCAPE_RE.sub(lambda m: _ESCAPES[m.group(0)], value)
        labels[match.group(1)] = value
        pos = match.end()
    return labels
