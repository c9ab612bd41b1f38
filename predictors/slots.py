"""Build frozen slotted dataclasses of ``core.types`` without their ``__init__`` (request path only).

A frozen dataclass assigns each field through ``object.__setattr__``, which
costs more than the arithmetic that produces the values: ~0.5-0.7 us for
``OutputLengthEstimate`` or ``Predictions`` (one each per request), ~0.4 us per
``BackendCostEstimate``. The request path instead allocates with
``object.__new__`` and calls each slot's descriptor setter, ~0.2 us. The field
list is checked at import, so a field added in ``core`` fails loudly instead of
being left unset; ``tests/unit/test_predictor_facade.py`` compares such values
with ones built by the normal constructor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import Any


def slot_setters(cls: type[Any], names: tuple[str, ...]) -> tuple[Callable[[Any, Any], None], ...]:
    """The slot setters of ``cls`` in field order; raises if ``names`` is not its exact field list."""
    actual = tuple(f.name for f in fields(cls))
    if actual != names:
        raise RuntimeError(f"{cls.__name__} fields changed to {actual}; update the predictors that build it")
    return tuple(getattr(cls, name).__set__ for name in names)
