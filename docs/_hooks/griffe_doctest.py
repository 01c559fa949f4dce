"""A griffe extension (mkdocs.yml, mkdocstrings' `extensions`): the `>>>` examples of assay's
docstrings become Python code blocks, not markdown quotes."""

from __future__ import annotations

from typing import Any

import griffe


def fence_examples(text: str) -> str:
    """Each run of `>>>` lines (with the `...` lines and output lines that follow them, up to a
    blank line) fenced as Python, at its own indentation."""
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        stripped = lines[i].lstrip()
        if not stripped.startswith(">>>"):
            out.append(lines[i])
            i += 1
            continue
        indent = lines[i][: len(lines[i]) - len(stripped)]
        block = []
        while i < len(lines) and lines[i].strip():
            block.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i])
            i += 1
        if out and out[-1].strip():
            out.append("")
        out += [indent + "```python", *(indent + b for b in block), indent + "```"]
    return "\n".join(out)


class DoctestFences(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None and ">>>" in obj.docstring.value:
            obj.docstring.value = fence_examples(obj.docstring.value)
