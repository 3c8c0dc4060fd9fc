"""Readable lines for pydantic validation errors: ``source: key.path: what is allowed (got x)``.

The bounds a message quotes ("must be between 0.5 and 60") are read back from the model's own
field declarations, so they cannot drift from what is enforced.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Mapping
from typing import Any, get_args, get_origin

from pydantic import BaseModel, ValidationError

from doorkeeper.runtime.config.types import describe_value, field_at


def _annotation_bounds(annotation: Any, found: dict[str, Any]) -> None:
    if get_origin(annotation) is typing.Annotated:
        inner, *metadata = get_args(annotation)
        _metadata_bounds(metadata, found)
        _annotation_bounds(inner, found)
    elif get_origin(annotation) in (typing.Union, types.UnionType):
        for member in get_args(annotation):
            _annotation_bounds(member, found)


def _metadata_bounds(metadata: Any, found: dict[str, Any]) -> None:
    for meta in metadata:
        if isinstance(getattr(meta, "metadata", None), list):  # a FieldInfo inside Annotated
            _metadata_bounds(meta.metadata, found)
        for name in ("ge", "gt", "le", "lt"):
            if getattr(meta, name, None) is not None:
                found.setdefault(name, getattr(meta, name))


def _constraints(model: type[BaseModel], loc: tuple[str, ...]) -> dict[str, Any]:
    """The numeric bounds (ge/gt/le/lt) declared for the field at ``loc``."""
    owner: Any = model
    if len(loc) > 1:
        where, owner = field_at(model, loc[:-1])
        if where != "model":
            return {}
    field = owner.model_fields.get(loc[-1])
    found: dict[str, Any] = {}
    if field is not None:
        _metadata_bounds(field.metadata, found)
        _annotation_bounds(field.annotation, found)
    return found


def _num(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)



def _explain(model: type[BaseModel], error: Mapping[str, Any]) -> str:
    loc = tuple(str(p) for p in error["loc"])
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    if kind == "extra_forbidden":
        where, owner = field_at(model, loc[:-1]) if len(loc) > 1 else ("model", model)
        allowed = ", ".join(owner.model_fields) if where == "model" else "?"
        return f"unknown key; allowed keys: {allowed}"
    if kind == "missing":
        return "is required"
    if kind == "too_long":
        return f"must have at most {ctx.get('max_length')} entries"
    if kind == "multiple_of":
        return f"must be a multiple of {ctx.get('multiple_of')} (got {describe_value(value)})"
    c = _constraints(model, loc)
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than") and c:
        low, high = c.get("ge", c.get("gt")), c.get("le", c.get("lt"))
        got = f"(got {describe_value(value)})"
        if low is not None and high is not None and "gt" not in c and "lt" not in c:
            return f"must be between {_num(low)} and {_num(high)} {got}"
        parts = []
        if low is not None:
            parts.append(f"{'>' if 'gt' in c else '>='} {_num(low)}")
        if high is not None:
            parts.append(f"{'<' if 'lt' in c else '<='} {_num(high)}")
        return f"must be {' and '.join(parts)} {got}"
    if kind == "literal_error":
        expected = str(ctx.get("expected", "")).replace(" or ", ", ")
        return f"must be one of {expected} (got {describe_value(value)})"
    simple = {
        "int_type": "must be an integer", "float_type": "must be a number",
        "bool_type": "must be true or false", "string_type": "must be a string",
        "model_type": "must be a table", "dict_type": "must be a table",
        "model_attributes_type": "must be a table", "list_type": "must be an array",
        "finite_number": "must be a finite number",
    }
    if kind in simple:
        return f"{simple[kind]} (got {describe_value(value)})"
    message = str(error.get("msg", "invalid"))
    if kind == "value_error":  # our validators word their own message
        return message.removeprefix("Value error, ")
    return f"{message} (got {describe_value(value)})"


def _source_of(loc: tuple[str, ...], sources: Mapping[tuple[str, ...], str], default: str) -> str:
    """The source of the longest prefix of ``loc`` that has one, else ``default``."""
    for n in range(len(loc), 0, -1):
        if loc[:n] in sources:
            return sources[loc[:n]]
    return default


def problems_of(exc: ValidationError, model: type[BaseModel], sources: Mapping[tuple[str, ...], str],
                default_source: str) -> list[str]:
    """One readable line per pydantic error: ``source: key.path: what is allowed (got x)``."""
    lines: list[str] = []
    for error in exc.errors(include_url=False):
        loc = tuple(str(p) for p in error["loc"])
        explanation = _explain(model, error)
        if not loc:  # a model-level rule: its message starts with the key it is about
            head = explanation.split(":", 1)[0]
            named_loc = tuple(head.split(".")) if re.fullmatch(r"[a-z_.]+", head) else ()
            lines.append(f"{_source_of(named_loc, sources, default_source)}: {explanation}")
            continue
        source = _source_of(loc, sources, default_source)
        named = re.match(r"([a-z_]+(?:\.[a-z0-9_]+)+): ", explanation)
        if named and named.group(1).split(".")[0] == loc[0]:  # the validator named the key itself
            lines.append(f"{source}: {explanation}")
        else:
            lines.append(f"{source}: {'.'.join(loc)}: {explanation}")
    return lines
