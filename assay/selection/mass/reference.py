"""Reference sets for MASS: texts and, where there are any, their skill tags (CHAMP's concept
annotations for `assay_champ`, the subject for `assay_mmlu_dev`, a field of a file)."""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from assay.errors import InputError
from assay.selection.mass.skills import normalize_tags


def champ_skill_tags(*, parents: bool = True, category: bool = True) -> dict[str, list[str]]:
    """CHAMP's annotated concepts of every problem, by problem id, as skill names.

    A concept is named by its name ("Vieta's formula for quadratic equation"), or by its
    statement when it has none ("For integer x, x^2 mod 8 can take values of 0, 1 and 4.").
    `parents` adds the concepts a concept specialises (AM-GM for 2 variables -> for n);
    `category` adds the problem's category ("number theory"), so every problem has a skill."""
    return {pid: list(tags) for pid, tags in _champ_tags(parents, category)}


@functools.lru_cache(maxsize=4)
def _champ_tags(parents: bool, category: bool) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Cached: the dataset file is 72 MB of JSON, about a second to parse."""
    from assay.common.tasks import package_file

    data = json.loads(package_file("champ_dataset", "dataset_files", "v0.json").read_text())
    concepts: dict[str, dict[str, Any]] = data["concepts"]

    def label(c: dict[str, Any]) -> str:
        return " ".join((c.get("name") or c.get("_text") or c["identifier"]).split())

    out = []
    for pid, p in sorted(data["problems"].items()):
        tags: list[str] = []
        for cid in p.get("ch_list", []):
            c = concepts.get(cid) if cid.startswith("C_") else None
            while c is not None:
                tags.append(label(c))
                parent = c.get("parent") if parents else None
                c = concepts.get(parent["identifier"], parent) if parent else None
        if category and p.get("category"):
            tags.append(p["category"].replace("-", " ").lower())
        out.append((pid, tuple(dict.fromkeys(tags))))
    return tuple(out)


@functools.lru_cache(maxsize=2)
def builtin_records(name: str) -> tuple[dict[str, Any], ...]:
    """The built-in benchmark's records, parsed once per process (CHAMP's file is large)."""
    from assay.common.targets import builtin_records as records

    return tuple(records(name))


def _builtin_reference(name: str, fields: Sequence[str] | None, want_tags: bool):
    from assay.common.targets import example_text

    records = builtin_records(name)
    fields = fields or ("question", "answer")
    texts = [example_text(r, fields, f"{name}[{i}]") for i, r in enumerate(records, 1)]
    if not want_tags:
        return texts, None
    if name == "assay_champ":
        by_id = champ_skill_tags()
        return texts, [by_id.get(r["id"], []) for r in records]
    return texts, [[r["subject"].replace("_", " ")] for r in records]  # MMLU: its subject


def _file_reference(path: Path, fields: Sequence[str] | None, tags_field: str | None):
    from assay.common.targets import example_text, file_records

    records = file_records(path)
    if fields is None and records:
        fields = ("text",) if "text" in records[0][1] else ("question", "answer")
    texts = [example_text(r, fields or (), at) for at, r in records]
    if tags_field is None:
        return texts, None
    tags = []
    for at, r in records:
        value = r.get(tags_field)
        if value is not None and not isinstance(value, (str, list)):
            raise InputError(f"{at}: {tags_field!r} must be a list of skill names")
        tags.append(value)
    return texts, tags


def load_reference(
    reference: Any,
    *,
    fields: Sequence[str] | None = None,
    tags_field: str | None = None,
    tags: Sequence[Sequence[str]] | None = None,
    want_tags: bool = True,
    max_items: int | None = None,
    seed: int = 0,
) -> tuple[list[str], list[list[str]] | None]:
    """Reference texts and, where there are any, their skill tags (aligned).

    `reference` is what `load_targets` accepts: a built-in benchmark ("assay_champ" carries
    CHAMP's concept annotations as tags, "assay_mmlu_dev" its subject), a JSONL/JSON/parquet
    file (tags from the field `tags_field`), or a list of texts (tags from `tags`). Examples
    with no text are dropped together with their tags; `max_items` keeps a seeded subset."""
    import os

    from assay.common.targets import BUILTIN

    if isinstance(reference, (str, os.PathLike)) and str(reference) in BUILTIN:
        texts, found = _builtin_reference(str(reference), fields, want_tags and tags_field is None)
        where = str(reference)
    elif isinstance(reference, (str, os.PathLike)):
        texts, found = _file_reference(Path(reference), fields, tags_field)
        where = str(reference)
    else:
        texts, found, where = [str(t) for t in reference], None, "reference examples"
    if tags is not None:
        found = list(tags)
    if found is not None:
        found = normalize_tags(found, len(texts))
    keep = [i for i, t in enumerate(texts) if t.strip()]
    if not keep:
        raise InputError(f"{where}: no reference examples (the reference set is empty)")
    if max_items is not None and len(keep) > max_items:
        keep = sorted(np.random.default_rng(seed).choice(keep, max_items, replace=False).tolist())
    return [texts[i] for i in keep], (None if found is None else [found[i] for i in keep])
