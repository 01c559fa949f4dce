"""mkdocs hooks (mkdocs.yml `hooks:`): the generated pages (command-line reference, recipes), the
generated blocks of the hand-written pages, and a failed build when a step kind, a scorer or a
verb has no entry (see `docgen.py`)."""

from __future__ import annotations

import sys
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

sys.path.insert(0, str(Path(__file__).parent))
import docgen


def on_files(files, config):
    docs = Path(config["docs_dir"])
    missing = docgen.undocumented(docs)
    if missing:
        raise PluginError(
            "no documentation entry for: " + "; ".join(missing) + ". Add an "
            "`<!-- assay:step KIND -->` or `<!-- assay:scorer NAME -->` marker to the page of "
            "its method (docs/methods/), or a help text to the verb."
        )
    files.append(File.generated(config, "cli.md", content=docgen.cli_page()))
    recipes = docgen.recipes_page(docgen.step_pages(docs))
    files.append(File.generated(config, "recipes.md", content=recipes))
    return files


def on_page_markdown(markdown, page, config, files):
    try:
        return docgen.expand(markdown, page.file.src_uri)
    except KeyError as e:
        raise PluginError(f"{page.file.src_uri}: {e.args[0]}") from None
