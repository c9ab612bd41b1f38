"""The one error ``sluice bench`` reports as bad input (besides config and workload errors)."""

from __future__ import annotations


class BenchError(Exception):
    """A matrix that cannot run as asked: a message for the user, not a bug."""
