"""Strict structuring hooks shared by the wire codec and the config loader.

cattrs coerces by default (``bool("false")`` is True, a string is a list of characters).
For input from peers and operators that is wrong: a value of the wrong JSON/TOML type is
an error that names the field, never a silent conversion.
"""

from __future__ import annotations

import types
import typing
from types import NoneType
from typing import Any

import attrs
import cattrs
from cattrs.cols import list_structure_factory
from cattrs.gen import make_dict_structure_fn


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "object", list: "array", str: "string", bool: "boolean"}.get(
        type(value), "number"
    )


def _scalar(kind: type, accept: tuple[type, ...], *, integral_floats: bool = False):
    name = kind.__name__

    def structure(value: Any, _: type) -> Any:
        if isinstance(value, bool) and kind is not bool:
            raise TypeError(f"expected {name}, got boolean")
        if isinstance(value, accept):
            return value if type(value) is kind else kind(value)
        if integral_floats and isinstance(value, float) and value.is_integer():
            return int(value)  # JavaScript peers may send 3.0 for 3
        raise TypeError(f"expected {name}, got {json_type(value)}")

    return structure


def _is_list(type_: Any) -> bool:
    return typing.get_origin(type_) is list


def _is_optional(type_: Any) -> bool:
    args = typing.get_args(type_)
    return (
        typing.get_origin(type_) in (typing.Union, types.UnionType)
        and len(args) == 2
        and NoneType in args
    )


def install_strict_hooks(
    converter: cattrs.Converter, *, null_is_missing: bool = False, integral_floats: bool = False
) -> None:
    """Make ``converter`` refuse values of the wrong type.

    With ``integral_floats``, ``3.0`` is accepted for an int (JSON from JavaScript).
    With ``null_is_missing``, a ``null`` field of an attrs class counts as absent, so its
    default applies (the wire contract: "null and a missing optional field mean the same").
    """
    converter.register_structure_hook(bool, _scalar(bool, (bool,)))
    converter.register_structure_hook(int, _scalar(int, (int,), integral_floats=integral_floats))
    converter.register_structure_hook(float, _scalar(float, (int, float)))
    converter.register_structure_hook(str, _scalar(str, (str,)))

    def structure_object(value: Any, _: type) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise TypeError(f"expected object, got {json_type(value)}")
        return value

    converter.register_structure_hook_func(
        lambda t: t in (dict, dict[str, Any]), structure_object
    )

    def list_factory(type_: Any) -> Any:
        items = list_structure_factory(type_, converter)

        def structure_list(value: Any, _: type) -> list:
            if not isinstance(value, list):
                raise TypeError(f"expected array, got {json_type(value)}")
            return items(value, type_)

        return structure_list

    converter.register_structure_hook_factory(_is_list, list_factory)

    def optional_factory(type_: Any) -> Any:
        # cattrs looks the inner hook up on every call; here it is found once.
        inner_type = next(arg for arg in typing.get_args(type_) if arg is not NoneType)
        inner = converter.get_structure_hook(inner_type)

        def structure_optional(value: Any, _: type) -> Any:
            return None if value is None else inner(value, inner_type)

        return structure_optional

    converter.register_structure_hook_factory(_is_optional, optional_factory)

    def attrs_factory(cls: type) -> Any:
        fields = make_dict_structure_fn(cls, converter)

        def structure_attrs(value: Any, _: type) -> Any:
            if not isinstance(value, dict):
                raise TypeError(f"expected object, got {json_type(value)}")
            if null_is_missing and None in value.values():  # a C scan; copy only if needed
                value = {k: v for k, v in value.items() if v is not None}
            return fields(value, cls)

        return structure_attrs

    converter.register_structure_hook_factory(attrs.has, attrs_factory)
