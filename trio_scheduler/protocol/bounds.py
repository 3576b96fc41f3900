"""What every inbound value may be: the bounded types the inbound message classes use.

A peer's value travels on: into job records, timers and every frame we send back. A value
that decodes but cannot be written back (an integer beyond 64 bits) or that is echoed
without end (a mebibyte ``trace_id`` in every frame) would fail or cost far from where it
came in. So each inbound field is declared with a bounded type (``trace_id: Id | None``)
and the codec enforces the bound in its one decode path, for both sockets: a value out of
bounds is an ``INVALID_MESSAGE`` naming the field, before any handler sees the frame.

Bounds fixed by the protocol's shapes are constants here. Bounds an operator may tune name
a field of :class:`DecodeLimits` (``Chars("max_text_chars")``), filled from ``[server]``.
"""

from __future__ import annotations

import typing
from typing import Annotated, Any, TypeVar

import attrs
import cattrs
import orjson

SAFE_INTEGER = 2**53 - 1  # the largest integer a JavaScript peer reads exactly
MAX_TAG_CHARS = 16  # language tags (PROTOCOL §2.3.1)
MAX_ID_CHARS = 64  # ids: ours are short, a trace_id is a UUID (36)
MAX_NAME_CHARS = 64  # versions, platforms, formats, codes, modes, service types
MAX_DURATION_MS = 86_400_000  # one day: no duration or interval a peer reports is longer
MAX_SAMPLE_RATE = 384_000  # Hz, the highest rate audio interfaces offer


@attrs.frozen(cache_hash=True)
class DecodeLimits:
    """The tunable bounds (``[server]`` settings); the codec keeps one converter per value."""

    max_depth: int = 32
    max_message_bytes: int = 2 * 1024 * 1024
    max_text_chars: int = 10_000
    max_object_bytes: int = 16_384
    max_list_items: int = 256

    def resolve(self, limit: int | str) -> int:
        return limit if isinstance(limit, int) else getattr(self, limit)


@attrs.frozen
class Chars:
    """A string of at most ``limit`` characters (a number, or a :class:`DecodeLimits` name)."""

    limit: int | str


@attrs.frozen
class Items:
    """An array of at most ``limit`` items; checked before the items are structured."""

    limit: int | str


@attrs.frozen
class EncodedBytes:
    """A free-form JSON object whose encoding takes at most ``limit`` bytes.

    Objects peers send and we pass on (``features``, ``extra``…) have no shape of ours to
    bound; their size as JSON bounds everything at once (keys, strings, lengths), and their
    depth is bounded for the whole frame.
    """

    limit: int | str


@attrs.frozen
class Between:
    """A number from ``low`` to ``high`` inclusive (so finite, and for integers, exact in
    JSON and within 64 bits)."""

    low: int
    high: int


T = TypeVar("T")

Id = Annotated[str, Chars(MAX_ID_CHARS)]
Name = Annotated[str, Chars(MAX_NAME_CHARS)]
LanguageTag = Annotated[str, Chars(MAX_TAG_CHARS)]
Text = Annotated[str, Chars("max_text_chars")]  # recognised text, messages, reasons
Audio = Annotated[str, Chars("max_message_bytes")]  # base64: only the frame bounds it
Object = Annotated[dict[str, Any], EncodedBytes("max_object_bytes")]
ListOf = Annotated[list[T], Items("max_list_items")]

Index = Annotated[int, Between(0, SAFE_INTEGER)]  # utterance_index, seq, attempt_id
Count = Annotated[int, Between(0, SAFE_INTEGER)]  # jobs, cores, queue lengths, reruns
SampleRate = Annotated[int, Between(1, MAX_SAMPLE_RATE)]
IntervalMs = Annotated[int, Between(0, MAX_DURATION_MS)]
DurationMs = Annotated[float, Between(0, MAX_DURATION_MS)]
TimestampMs = Annotated[float, Between(0, SAFE_INTEGER)]  # a peer's clock, ms since 1970
Amount = Annotated[float, Between(0, SAFE_INTEGER)]  # GB, percents (above 100 per core)
Score = Annotated[float, Between(-SAFE_INTEGER, SAFE_INTEGER)]  # passed on as is


def _bound_of(type_: Any) -> tuple[Any, Any]:
    base, *marks = typing.get_args(type_)
    bounds = [m for m in marks if isinstance(m, Chars | Items | EncodedBytes | Between)]
    if len(bounds) != 1:
        raise TypeError(f"{type_} must carry exactly one bound")
    return base, bounds[0]


def install_bound_hooks(converter: cattrs.Converter, limits: DecodeLimits) -> None:
    """Make ``converter`` enforce the bound of every ``Annotated`` type, with ``limits``.

    Each hook takes the common case (a value of the right type within its bound) in one
    step, and leaves every other value to the base type's strict hook for its message.
    """

    def factory(type_: Any) -> Any:
        base, bound = _bound_of(type_)
        inner = converter.get_structure_hook(base)
        match bound:
            case Chars(limit):
                return _chars(inner, base, limits.resolve(limit))
            case Items(limit):
                return _items(inner, base, limits.resolve(limit))
            case EncodedBytes(limit):
                return _encoded_bytes(inner, base, limits.resolve(limit))
            case Between(low, high):
                return _between(inner, base, low, high)

    converter.register_structure_hook_factory(
        lambda t: typing.get_origin(t) is Annotated, factory
    )


def _chars(inner: Any, base: type, limit: int) -> Any:
    def structure(value: Any, _: Any) -> str:
        if type(value) is not str:
            value = inner(value, base)
        if len(value) > limit:
            raise ValueError(f"longer than {limit} characters")
        return value

    return structure


def _items(inner: Any, base: Any, limit: int) -> Any:
    def structure(value: Any, _: Any) -> list:
        if isinstance(value, list) and len(value) > limit:
            raise ValueError(f"more than {limit} items")
        return inner(value, base)

    return structure


def _encoded_bytes(inner: Any, base: Any, limit: int) -> Any:
    def structure(value: Any, _: Any) -> dict:
        value = inner(value, base)
        if len(orjson.dumps(value)) > limit:
            raise ValueError(f"larger than {limit} bytes as JSON")
        return value

    return structure


def _between(inner: Any, base: type, low: int, high: int) -> Any:
    def structure(value: Any, _: Any) -> Any:
        if type(value) is not base:
            value = inner(value, base)
        if not low <= value <= high:
            raise ValueError(f"must be from {low} to {high}")
        return value

    return structure
