"""The enumerations of ``core.types`` (imported from there), in a module of their own.

Why a module of their own: ``core/views.py`` is compiled and needs ``Health``, and ``core/types.py``
imports ``core/views.py``; enums stay interpreted (plain Python classes) either way.
"""

from __future__ import annotations

from enum import StrEnum


class Endpoint(StrEnum):
    """The OpenAI endpoints Sluice proxies."""

    CHAT = "chat"
    COMPLETIONS = "completions"
    EMBEDDINGS = "embeddings"


class Health(StrEnum):
    """Backend life cycle (after SMG's worker states).

    ``PENDING``: configured, no health check has passed yet.
    ``READY``: selectable. ``DRAINING``: finishing in-flight work, takes no new
    requests. ``DOWN``: failed active checks or its circuit breaker is open.
    """

    PENDING = "pending"
    READY = "ready"
    DRAINING = "draining"
    DOWN = "down"
