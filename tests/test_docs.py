"""The documentation site's generated parts (docs/_hooks/docgen.py), without mkdocs: every step,
scorer and verb has an entry, every marker of every page resolves, and the generated tables and
reference follow the code. `make docs` builds the whole site with warnings as errors."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


@pytest.fixture(scope="module")
def docgen():
    spec = importlib.util.spec_from_file_location("docgen", DOCS / "_hooks" / "docgen.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_step_scorer_and_verb_has_a_documentation_entry(docgen):
    assert docgen.undocumented(DOCS) == []


def test_a_step_or_scorer_without_its_marker_is_reported(docgen, tmp_path):
    copy = tmp_path / "docs"
    shutil.copytree(DOCS, copy, ignore=shutil.ignore_patterns("_hooks"))
    page = copy / "methods" / "dsir.md"
    text = page.read_text()
    page.write_text(text.replace("<!-- assay:step dsir -->", "").replace("scorer dsir", "x"))
    assert docgen.undocumented(copy) == ["step dsir", "scorer dsir"]


def test_every_marker_of_every_page_resolves(docgen):
    """README headings and paragraphs, recipes and settings models named by the pages exist
    (a README edit that moves a section a page includes fails here, naming it)."""
    for page in DOCS.rglob("*.md"):
        rel = page.relative_to(DOCS).as_posix()
        expanded = docgen.expand(page.read_text(), rel)
        assert docgen.MARKER.search(expanded) is None, rel


def test_a_step_table_lists_every_setting_with_its_flag(docgen):
    from assay.recipe import STEPS
    from assay.selection.select import SelectConfig

    table = docgen.step_table("select")
    for name in SelectConfig.model_fields:
        assert f"| `{name}`<br>`--{name.replace('_', '-')}` |" in table
    assert "| `scores`<br>`--scores` |" in table
    train = docgen.step_table("train_proxy")  # nested settings are dotted keys, flags joined
    assert "| `train.lr`<br>`--train-lr` |" in train
    assert set(docgen.step_pages(DOCS)) == set(STEPS)


def test_the_cli_reference_has_every_command_and_option(docgen):
    import click

    from assay.cli.main import app

    page = docgen.cli_page()
    root = click.Context(app, info_name="assay")
    for name in app.list_commands(root):
        assert f"\n## assay {name}\n" in page
    assert "`--scorer TEXT`" in page and "`--dry-run`" in page


def test_readme_links_are_made_site_links(docgen):
    text = "see [Guarantees](#guarantees), [x](recipes/a.yaml) and [a](docs/architecture.md)"
    assert docgen.relink(text, "methods/dsir.md") == (
        "see [Guarantees](../guarantees.md), `x` and [a](../architecture.md)"
    )
    # the README's screenshot, from a page at the top and one a folder down
    image = "![A report](docs/images/report.png)"
    assert docgen.relink(image, "getting-started.md") == "![A report](images/report.png)"
    assert docgen.relink(image, "methods/a.md") == "![A report](../images/report.png)"


def test_doctest_examples_of_docstrings_become_code_blocks():
    pytest.importorskip("griffe")
    spec = importlib.util.spec_from_file_location("gd", DOCS / "_hooks" / "griffe_doctest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    doc = "A corpus.\n    >>> c = Corpus('x')\n    >>> c.sample(2)\n    out\n\nMore text."
    assert module.fence_examples(doc) == (
        "A corpus.\n\n    ```python\n    >>> c = Corpus('x')\n    >>> c.sample(2)\n    out\n"
        "    ```\n\nMore text."
    )
