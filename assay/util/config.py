"""The base of every settings model: strict, so that a typo or a nonsense value never runs.

Settings are pydantic models declared once, where they are used (`ReadOptions` beside the
corpus readers, `SelectConfig` beside `select`, `TrainConfig` beside `train_proxy`,
`BETRSettings` beside `fit_betr`, `ClusterSettings` beside `cluster_corpus`, `SearchSettings`
beside `search_mixture`, and so on). A recipe step inherits the settings of the call it makes
and adds only its inputs. Recipes validate them, the command line generates its flags from them
and takes its help text from their `Field(description=...)`.

Unknown keys are errors (a typo never silently falls back to a default), and so are numbers
that are not finite (`.nan`, `.inf`) and booleans where a number is expected (`keep: true`).
"""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator


def admits_bool(annotation: Any) -> bool:
    """Whether a field's type accepts true/false as such (not as the number 1 or 0)."""
    if annotation is bool or annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return admits_bool(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return any(admits_bool(a) for a in typing.get_args(annotation))
    return origin is Literal and any(isinstance(a, bool) for a in typing.get_args(annotation))


class Strict(BaseModel):
    """A settings model: unknown keys, non-finite numbers and booleans for numbers are errors."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, value in data.items():
                field = cls.model_fields.get(key) if isinstance(key, str) else None
                if isinstance(value, bool) and field and not admits_bool(field.annotation):
                    raise ValueError(f"{key}: expected a number or text, not {str(value).lower()}")
        return data
