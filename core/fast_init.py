"""A cheaper ``__init__`` for the frozen, slotted dataclasses built on every request.

Why: a frozen dataclass's generated ``__init__`` assigns each field with
``object.__setattr__(self, name, value)`` (it must bypass its own frozen
``__setattr__``), a generic attribute lookup per field. The value types of
``core.types`` built per proxied request (``RequestFeatures``, 17 fields;
``BackendView``, 22, one per backend that changed since the last snapshot;
``Outcome``, 17; ``RoutingRequest``, ``RoutingDecision``, ``FleetSnapshot``)
spent ~1.7 us in ``__init__`` for 17 fields on this machine. Calling each
slot's descriptor setter directly (``member_descriptor.__set__``, bound once
here) does the same stores in ~1.0 us.

What stays the same: the signature (names, order, defaults, default
factories, keyword use), ``__setattr__``/``__delattr__`` still raise
``FrozenInstanceError``, equality, hashing, ``repr``, ``replace``, pickling.
``tests/unit/test_fast_init.py`` compares every patched class with the plain
dataclass built from the same definition.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")
_FACTORY = object()  # marks "no argument given" for a field with a default factory


def fast_frozen_init(cls: type[T]) -> type[T]:
    """Replace ``cls.__init__`` (a frozen slotted dataclass) with one that stores through slot setters.

    Refuses classes it cannot reproduce exactly: not frozen, no ``__slots__``, ``__post_init__``,
    ``InitVar`` or keyword-only fields.
    """
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__} is not a frozen slotted dataclass")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} has __post_init__; its generated __init__ must stay")
    namespace: dict[str, Any] = {"_FACTORY": _FACTORY}
    args: list[str] = []
    body: list[str] = []
    for i, f in enumerate(dataclasses.fields(cls)):  # type: ignore[arg-type]  # checked above
        if f.kw_only:
            raise TypeError(f"{cls.__name__}.{f.name} is keyword-only")
        setter = f"_set_{i}"
        namespace[setter] = getattr(cls, f.name).__set__
        has_factory = f.default_factory is not dataclasses.MISSING
        if has_factory:
            namespace[f"_factory_{i}"] = f.default_factory
        if not f.init:
            if has_factory:
                body.append(f"    {setter}(self, _factory_{i}())")
            elif f.default is not dataclasses.MISSING:
                namespace[f"_default_{i}"] = f.default
                body.append(f"    {setter}(self, _default_{i})")
            continue
        if has_factory:
            args.append(f"{f.name}=_FACTORY")
            body.append(f"    {setter}(self, _factory_{i}() if {f.name} is _FACTORY else {f.name})")
        elif f.default is not dataclasses.MISSING:
            namespace[f"_default_{i}"] = f.default
            args.append(f"{f.name}=_default_{i}")
            body.append(f"    {setter}(self, {f.name})")
        else:
            args.append(f.name)
            body.append(f"    {setter}(self, {f.name})")
    source = f"def __init__(self, {', '.join(args)}):\n" + ("\n".join(body) or "    pass") + "\n"
    exec(source, namespace)  # generated from the dataclass's own field list, as dataclasses does
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__doc__ = cls.__init__.__doc__
    cls.__init__ = init  # type: ignore[method-assign]
    return cls
