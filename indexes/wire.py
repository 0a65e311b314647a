"""Integer fields for request models validated strictly (a JSON true is not a 1, nor "5" a 5), that still take
what JSON Schema calls an integer: 5.0 is one."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field


def _whole_number(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def integer(**constraints: Any) -> Any:
    """An int field of a strict model with its bounds (ge=, le=...): 5 and 5.0, never true, "5" or 5.5.
    The bounds go inside, next to the int, or the spec would show them as unknown keywords."""
    return Annotated[int, Field(**constraints), BeforeValidator(_whole_number)]
