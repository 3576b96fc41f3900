"""The inbound fields of both sockets with their bounds, read from the message classes.

Shared by the test that keeps docs/wire-bounds.md in step with the classes and by the
property test that aims extreme values at every field.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator, Mapping
from typing import Annotated, Any

import attrs

from trio_scheduler.protocol.bounds import SAFE_INTEGER, Between, Chars, EncodedBytes, Items
from trio_scheduler.protocol.messages import NODE_INBOUND, SESSION_INBOUND


@attrs.frozen
class FieldBound:
    path: str  # dotted, with ``[]`` for the items of an array: ``hardware.gpus[].name``
    base: Any  # str, int, float, bool, list[…], dict[…]
    bound: Any  # Chars | Items | EncodedBytes | Between, or None (booleans)


def _without_none(type_: Any) -> Any:
    if typing.get_origin(type_) in (typing.Union, types.UnionType):
        (inner,) = [arg for arg in typing.get_args(type_) if arg is not types.NoneType]
        return inner
    return type_


def _walk(type_: Any, path: str) -> Iterator[FieldBound]:
    type_ = _without_none(type_)
    if attrs.has(type_):
        yield from field_bounds(type_, path + ".")
    elif typing.get_origin(type_) is Annotated:
        base, bound = typing.get_args(type_)
        yield FieldBound(path, base, bound)
        if typing.get_origin(base) is list:
            yield from _walk(typing.get_args(base)[0], path + "[]")
    else:
        yield FieldBound(path, type_, None)


def field_bounds(cls: type, prefix: str = "") -> Iterator[FieldBound]:
    hints = typing.get_type_hints(cls, include_extras=True)
    for field in attrs.fields(cls):
        yield from _walk(hints[field.name], prefix + field.name)


def inbound_fields() -> Iterator[tuple[str, str, FieldBound]]:
    """(socket, message type, field) for every inbound field of both sockets."""
    tables: Mapping[str, Mapping[str, type]] = {"session": SESSION_INBOUND, "node": NODE_INBOUND}
    for socket, table in tables.items():
        for kind, cls in table.items():
            for field in field_bounds(cls):
                yield socket, kind, field


def _number(value: int) -> str:
    if value == SAFE_INTEGER:
        return "2^53-1"
    if value == -SAFE_INTEGER:
        return "-(2^53-1)"
    return f"{value:,}".replace(",", " ")


def _limit(limit: int | str, unit: str) -> str:
    if isinstance(limit, int):
        return f"{limit} {unit}"
    return f"`[server] {limit}` {unit}"


def describe(field: FieldBound) -> str:
    """The bound as the docs table states it."""
    match field.bound:
        case Chars(limit):
            return "string, at most " + _limit(limit, "characters")
        case Items(limit):
            return "array, at most " + _limit(limit, "items")
        case EncodedBytes(limit):
            return "object, at most " + _limit(limit, "bytes as JSON")
        case Between(low, high):
            kind = "integer" if field.base is int else "number"
            return f"{kind} from {_number(low)} to {_number(high)}"
    raise AssertionError(f"{field.path} has no bound")


def bounds_table() -> str:
    """docs/wire-bounds.md's table: one row per field and bound, with its messages."""
    rows: dict[tuple[str, str], list[str]] = {}
    for socket, kind, field in inbound_fields():
        if field.base is bool:
            continue  # nothing to bound
        messages = rows.setdefault((field.path, describe(field)), [])
        if kind not in messages:
            messages.append(kind)
    lines = ["| field | bound | in |", "|---|---|---|"]
    for (path, bound), messages in sorted(rows.items()):
        lines.append(f"| `{path}` | {bound} | {', '.join(messages)} |")
    return "\n".join(lines) + "\n"
