"""Every ``assay`` module named anywhere in the repository exists.

Scripts embedded in tests and the code shown in the docs import assay by name inside strings,
where neither the linter nor the import contracts see them; a module that moves must take them
along.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_NAMED = re.compile(r"^\s*(?:from|import)\s+(assay(?:\.\w+)*)", re.MULTILINE)


def _named_modules() -> dict[str, str]:
    found: dict[str, str] = {}
    files = [
        *ROOT.glob("tests/**/*.py"),
        *ROOT.glob("benchmarks/**/*.py"),
        *ROOT.glob("docs/**/*.md"),
    ]
    for path in [*files, ROOT / "README.md"]:
        for name in _NAMED.findall(path.read_text(encoding="utf-8")):
            found.setdefault(name, str(path.relative_to(ROOT)))
    return found


@pytest.mark.parametrize(("module", "where"), sorted(_named_modules().items()))
def test_a_module_named_in_the_repository_imports(module: str, where: str) -> None:
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as err:  # pragma: no cover - the failure is the message
        pytest.fail(f"{where} imports {module}, which does not exist: {err}")
