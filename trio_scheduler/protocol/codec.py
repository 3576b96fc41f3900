"""One codec for every message: orjson for the bytes, one cattrs converter for the shapes.

Decoding is strict about types (``"is_final": "false"`` is an error, never ``True``),
enforces the bound of every inbound field (protocol/bounds.py) and is lenient about extra
fields. Every failure becomes a single :class:`ProtocolError` carrying the path of the
offending field, which the connection tasks turn into one ``error`` frame.
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Mapping
from typing import Any

import cattrs
import orjson
from cattrs.preconf.orjson import make_converter

from trio_scheduler.protocol.bounds import DecodeLimits, install_bound_hooks
from trio_scheduler.protocol.errors import ErrorCode, echo
from trio_scheduler.protocol.messages import JobAssign
from trio_scheduler.strict import install_strict_hooks


class FrameCounts:
    """Frames decoded and encoded by type, and ``error`` frames by code, in this process.

    Counted here, where every frame passes anyway, for the price of a dict update; the
    metrics read them at scrape time. A frame that cannot be decoded counts as
    ``invalid`` (and one of a type this socket does not speak as ``unknown``), so peers
    cannot grow the table.
    """

    def __init__(self) -> None:
        self.received: collections.Counter[str] = collections.Counter()
        self.sent: collections.Counter[str] = collections.Counter()
        self.errors_sent: collections.Counter[str] = collections.Counter()


frame_counts = FrameCounts()


class ProtocolError(Exception):
    """A frame that does not follow the contract.

    ``field`` is the dotted path of the offending field (``hardware.gpus[0].name``) or
    None when the frame as a whole is wrong.
    """

    def __init__(
        self, message: str, *, field: str | None = None, code: ErrorCode = ErrorCode.INVALID_MESSAGE
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.code = code

    @property
    def details(self) -> dict[str, Any] | None:
        return {"field": self.field} if self.field else None


class UnknownMessageType(ProtocolError):
    """A well-formed frame whose ``type`` this socket does not speak."""

    def __init__(self, kind: str) -> None:
        super().__init__(f"unknown message type {echo(kind)}", field="type")
        self.kind = kind


DEFAULT_LIMITS = DecodeLimits()


@functools.cache
def _make_converter(limits: DecodeLimits) -> cattrs.Converter:
    """The converter for one set of limits: bounds are resolved once, in its hooks."""
    converter = make_converter(forbid_extra_keys=False)
    install_strict_hooks(converter, null_is_missing=True, integral_floats=True)
    install_bound_hooks(converter, limits)

    flags = JobAssign.OMIT_WHEN_FALSE
    unstructure_job_assign = converter.gen_unstructure_attrs_fromdict(JobAssign)

    def job_assign_to_dict(message: JobAssign) -> dict[str, Any]:
        data = unstructure_job_assign(message)
        for flag in flags:
            if not data[flag]:
                del data[flag]
        return data

    converter.register_unstructure_hook(JobAssign, job_assign_to_dict)
    return converter


converter = _make_converter(DEFAULT_LIMITS)  # encodes; its bounds are the defaults


@functools.cache
def _structure_hook(limits: DecodeLimits, cls: type) -> Any:
    """The hook of one message class: calling it skips cattrs' dispatch on every frame."""
    return _make_converter(limits).get_structure_hook(cls)


def _first_problem(exc: cattrs.ClassValidationError) -> tuple[str, str | None]:
    """The first leaf error of a cattrs exception tree as (message, dotted field path)."""

    def describe(error: BaseException, _type: Any) -> str:
        if isinstance(error, KeyError):
            return "required field missing"
        return str(error) or type(error).__name__

    problems = cattrs.transform_error(exc, path="$", format_exception=describe)
    text = problems[0] if problems else str(exc)
    message, _, path = text.rpartition(" @ ")
    if not message:
        return text, None
    field = path.removeprefix("$").removeprefix(".") or None
    return message, field


def nesting_depth(data: Any, limit: int) -> int:
    """Depth of nested arrays/objects in ``data``, counting up to ``limit + 1`` at most."""
    deepest = 0
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return deepest


def _brackets(raw: str | bytes) -> int:
    """An upper bound of a frame's nesting depth, found at the speed of a byte search:
    most frames have far fewer brackets than the limit, and need no walk at all."""
    if isinstance(raw, str):
        return raw.count("{") + raw.count("[")
    return raw.count(b"{") + raw.count(b"[")


def decode(
    raw: str | bytes, table: Mapping[str, type], limits: DecodeLimits = DEFAULT_LIMITS
) -> Any:
    """Parse one frame into the message class its ``type`` names in ``table``.

    Nesting deeper than ``limits.max_depth`` is refused here: such a frame could be read but
    not written back (orjson writes at most 254 levels), so it would fail later, far from
    here. So is every value outside its field's bound.
    """
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        frame_counts.received["invalid"] += 1
        raise ProtocolError("frame is not valid JSON") from None
    kind = data.get("type") if isinstance(data, dict) else None
    cls = table.get(kind) if isinstance(kind, str) else None
    frame_counts.received[_counted_type(kind, cls)] += 1
    if not isinstance(data, dict):
        raise ProtocolError("frame must be a JSON object")
    if _brackets(raw) > limits.max_depth and nesting_depth(data, limits.max_depth) > limits.max_depth:
        raise ProtocolError(f"frame is nested deeper than {limits.max_depth} levels")
    if not isinstance(kind, str):
        raise ProtocolError("missing string field 'type'", field="type")
    if cls is None:
        raise UnknownMessageType(kind)
    try:
        return _structure_hook(limits, cls)(data, cls)
    except cattrs.ClassValidationError as exc:
        message, field = _first_problem(exc)
        where = f" at '{field}'" if field else ""
        raise ProtocolError(f"invalid {kind}{where}: {message}", field=field) from None
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"invalid {kind}: {exc}") from None


def _counted_type(kind: Any, cls: type | None) -> str:
    if cls is not None:
        return kind
    return "unknown" if isinstance(kind, str) else "invalid"


def to_dict(message: Any) -> dict[str, Any]:
    return {"type": message.TYPE, **converter.unstructure(message)}


def encode(message: Any) -> str:
    """Serialise an outbound message class into a text frame."""
    frame_counts.sent[message.TYPE] += 1
    return orjson.dumps(to_dict(message)).decode()


def encode_error(code: ErrorCode | str, message: str, details: dict[str, Any] | None = None) -> str:
    frame_counts.sent["error"] += 1
    frame_counts.errors_sent[str(code)] += 1
    return orjson.dumps(
        {"type": "error", "code": str(code), "message": message, "details": details}
    ).decode()
