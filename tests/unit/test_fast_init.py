"""``core.fast_init``: the patched ``__init__`` behaves as the dataclass-generated one it replaces."""

from __future__ import annotations

import dataclasses
import inspect
import pickle
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import pytest

from core import types, views
from core.fast_init import fast_frozen_init

# core/views.py's classes are patched when it runs interpreted; compiled, they are native classes
# with their own native constructor (tests/unit/test_views.py covers them in both builds).
_VIEWS = (types.RequestFeatures, types.BackendView, types.FleetSnapshot, types.RoutingDecision)
PATCHED = (
    *(() if views._COMPILED else _VIEWS),
    types.BackendCostEstimate,
    types.RoutingRequest,
    types.Outcome,
)


def _generated_twin(cls: type[Any]) -> type[Any]:
    """The same fields as a plain frozen slotted dataclass (the generated ``__init__``)."""
    fields = [(f.name, f.type, _copy_field(f)) for f in dataclasses.fields(cls)]
    return dataclasses.make_dataclass(f"Plain{cls.__name__}", fields, frozen=True, slots=True)


def _copy_field(f: dataclasses.Field[Any]) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return field(default_factory=f.default_factory, init=f.init, repr=f.repr, compare=f.compare)
    if f.default is not dataclasses.MISSING:
        return field(default=f.default, init=f.init, repr=f.repr, compare=f.compare)
    return field(init=f.init, repr=f.repr, compare=f.compare)


def _values(obj: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


def _required_args(cls: type[Any]) -> dict[str, Any]:
    """A distinct value for every field without a default."""
    out: dict[str, Any] = {}
    for i, f in enumerate(dataclasses.fields(cls)):
        if f.init and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            out[f.name] = f"value-{i}"
    return out


@pytest.mark.parametrize("cls", PATCHED, ids=lambda c: c.__name__)
def test_same_signature_as_the_generated_init(cls: type[Any]) -> None:
    ours = inspect.signature(cls.__init__).parameters
    theirs = inspect.signature(_generated_twin(cls).__init__).parameters
    assert [(p.name, p.kind) for p in ours.values()] == [(p.name, p.kind) for p in theirs.values()]
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            assert ours[f.name].default is f.default
        elif f.default_factory is dataclasses.MISSING:
            assert ours[f.name].default is inspect.Parameter.empty


@pytest.mark.parametrize("cls", PATCHED, ids=lambda c: c.__name__)
def test_same_values_defaults_and_factories(cls: type[Any]) -> None:
    twin = _generated_twin(cls)
    required = _required_args(cls)
    ours, theirs = cls(**required), twin(**required)
    assert _values(ours) == _values(theirs)
    positional = list(required.values())
    assert _values(cls(*positional)) == _values(ours)
    # Fresh default-factory objects per instance, as dataclasses makes them.
    for f in dataclasses.fields(cls):
        if f.default_factory is not dataclasses.MISSING and not isinstance(
            getattr(ours, f.name), MappingProxyType
        ):
            assert getattr(ours, f.name) is not getattr(cls(**required), f.name)


@pytest.mark.parametrize("cls", PATCHED, ids=lambda c: c.__name__)
def test_every_field_passed_is_stored(cls: type[Any]) -> None:
    given = {f.name: f"v{i}" for i, f in enumerate(dataclasses.fields(cls)) if f.init}
    obj = cls(**given)
    for name, value in given.items():
        assert getattr(obj, name) == value


@pytest.mark.parametrize("cls", PATCHED, ids=lambda c: c.__name__)
def test_still_frozen_comparable_and_picklable(cls: type[Any]) -> None:
    required = _required_args(cls)
    obj = cls(**required)
    first = dataclasses.fields(cls)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(obj, first, "changed")
    assert obj == cls(**required)
    if not any(isinstance(v, MappingProxyType) for v in _values(obj).values()):  # those never pickled
        assert pickle.loads(pickle.dumps(obj)) == obj
    assert dataclasses.replace(obj, **{first: "other"}) == cls(**{**required, first: "other"})


def test_wrong_arguments_still_raise() -> None:
    with pytest.raises(TypeError):
        types.SLOTargets(1.0, 2.0, 3.0, 4.0)  # type: ignore[call-arg]  # not patched: reference
    with pytest.raises(TypeError):
        types.RoutingDecision()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        types.RoutingDecision(ranked=(), policy="p", unknown=1)  # type: ignore[call-arg]


def test_refuses_what_it_cannot_reproduce() -> None:
    @dataclass(slots=True)
    class Mutable:
        x: int

    @dataclass(frozen=True, slots=True)
    class WithPostInit:
        x: int

        def __post_init__(self) -> None:
            pass

    @dataclass(frozen=True, slots=True, kw_only=True)
    class KeywordOnly:
        x: int

    for cls in (Mutable, WithPostInit, KeywordOnly):
        with pytest.raises(TypeError):
            fast_frozen_init(cls)
