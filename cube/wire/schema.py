"""Declared message schemas, checked on receipt before any handler runs.

A schema is a map of field name -> Field. Extra fields are ignored (a newer peer may send more),
missing required fields and wrong types are refused with a message naming the field.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cube.wire.errors import BAD_BODY, UNKNOWN_TYPE, CubeError

NUMBER = (int, float)


@dataclass(frozen=True)
class Field:
    types: type | tuple[type, ...]
    required: bool = True
    items: type | tuple[type, ...] | None = None  # element type for lists
    max_len: int | None = None  # for strings and lists
    nullable: bool = False
    # The exact types accepted, for the fast path: msgpack decodes to exact builtin types, and
    # type(True) is bool, so a bool never passes for a number by accident.
    exact: frozenset = field(default=frozenset(), compare=False, repr=False)
    exact_items: frozenset = field(default=frozenset(), compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "exact", _exact(self.types))
        object.__setattr__(self, "exact_items", _exact(self.items) if self.items is not None else frozenset())


def _exact(types: type | tuple[type, ...]) -> frozenset:
    return frozenset(types if isinstance(types, tuple) else (types,))


def opt(types: type | tuple[type, ...], **kw: Any) -> Field:
    return Field(types, required=False, **kw)


Schema = dict[str, Field]
_REGISTRY: dict[str, Schema] = {}


def register(msg_type: str, schema: Schema) -> None:
    """Declare the schema of a message type (once; a second, different declaration is a bug)."""
    if msg_type in _REGISTRY and _REGISTRY[msg_type] != schema:
        raise ValueError(f"message type {msg_type!r} declared twice with different schemas")
    _REGISTRY[msg_type] = schema


def known_types() -> list[str]:
    return sorted(_REGISTRY)


def validate(msg_type: str, body: dict[str, Any]) -> None:
    schema = _REGISTRY.get(msg_type)
    if schema is None:
        raise CubeError(UNKNOWN_TYPE, f"unknown message type {msg_type!r}")
    for name, spec in schema.items():
        if name not in body:
            if spec.required:
                raise CubeError(BAD_BODY, f"{msg_type}: missing field {name!r}")
            continue
        _check(msg_type, name, spec, body[name])


def _check(msg_type: str, name: str, spec: Field, value: Any) -> None:
    kind = type(value)
    if kind in spec.exact and spec.max_len is None and (spec.items is None or kind is not list):
        return  # the common case, decided by one lookup
    if value is None and (spec.nullable or not spec.required):
        return
    if kind not in spec.exact and not _is(value, spec.types):
        raise CubeError(BAD_BODY, f"{msg_type}: field {name!r} must be {_names(spec.types)}, "
                                  f"got {type(value).__name__}")
    if spec.max_len is not None and hasattr(value, "__len__") and len(value) > spec.max_len:
        raise CubeError(BAD_BODY, f"{msg_type}: field {name!r} is longer than {spec.max_len}")
    if spec.items is not None and isinstance(value, list):
        if {type(item) for item in value} <= spec.exact_items:
            return
        for i, item in enumerate(value):
            if not _is(item, spec.items):
                raise CubeError(BAD_BODY, f"{msg_type}: field {name!r}[{i}] must be {_names(spec.items)}")


def _is(value: Any, types: type | tuple[type, ...]) -> bool:
    if isinstance(value, bool):  # bool is an int in Python; never accept it for numbers
        wanted = types if isinstance(types, tuple) else (types,)
        return bool in wanted
    return isinstance(value, types)


def _names(types: type | tuple[type, ...]) -> str:
    if isinstance(types, tuple):
        return " or ".join(t.__name__ for t in types)
    return types.__name__
