"""What assay has registered, for `assay list`: scorers, step kinds and target tasks, each
with a one-line description."""

from __future__ import annotations

import sys
from typing import Any, Literal

from assay.errors import ConfigError

Kind = Literal["scorers", "steps", "tasks"]
KINDS: tuple[str, ...] = ("scorers", "steps", "tasks")


#: words ending in a full stop that do not end a sentence
_ABBREVIATIONS = ("al.", "e.g.", "i.e.", "etc.", "vs.", "cf.")


def one_line(doc: str | None) -> str:
    """The first sentence of a docstring's first paragraph, on one line."""
    words = " ".join((doc or "").strip().split("\n\n")[0].split()).split(" ")
    for i, w in enumerate(words):
        if w.endswith(".") and w not in _ABBREVIATIONS:
            return " ".join(words[: i + 1])
    return " ".join(words)


def catalog(kind: str) -> list[dict[str, Any]]:
    """The registered things of `kind` ("scorers", "steps" or "tasks"), in their registry's
    order (scorers by name): a dict each with `name` and `description` (and, for a step, its
    command-line `verb`; for a scorer, whether it is a `plugin`)."""
    if kind == "scorers":
        return _scorers()
    if kind == "steps":
        from assay.recipe.step import STEPS

        return [
            {"name": k, "description": one_line(cls.__doc__), "verb": cls.verb}
            for k, cls in STEPS.items()
        ]
    if kind == "tasks":
        from assay.common.tasks import TASK_DESCRIPTIONS, TASKS

        return [{"name": t, "description": TASK_DESCRIPTIONS[t]} for t in TASKS]
    raise ConfigError(f"nothing to list as {kind!r}; choose one of {', '.join(KINDS)}")


def _scorers() -> list[dict[str, Any]]:
    """Built-in scorers are imported to read their docstrings; plugins are not (their entry
    point is described instead)."""
    from assay.selection.base import available_scorers, plugin_entry_points, scorer_class

    plugins = plugin_entry_points()
    out = []
    for name in available_scorers():
        if name in plugins:
            out.append(
                {"name": name, "description": f"plugin {plugins[name].value}", "plugin": True}
            )
            continue
        try:
            cls = scorer_class(name)
            description = one_line(cls.__doc__)
            if len(description) < 40:  # a terse class docstring: its module says more
                description = one_line(sys.modules[cls.__module__].__doc__) or description
        except ImportError as e:  # a built-in whose optional dependency is missing
            description = f"(cannot be imported here: {e})"
        out.append({"name": name, "description": description, "plugin": False})
    return out
