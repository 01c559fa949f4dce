"""Target examples: the benchmark items that target-driven scorers (BETR, PreSelect, MATES,
MASS) aim the selection at.

A target example becomes one document: its fields joined in order (BETR: question, then answer,
then any supporting text). Sources:

- a JSON-lines / JSON / parquet file of records, with `fields` naming what to join (default:
  `text` alone if the records have it, else `question` + `answer`);
- a built-in benchmark: `assay_champ` (competition math) or `assay_mmlu_dev` (MMLU dev items),
  the items of assay's local lm-eval tasks. An `answer` that is an index into `choices` is
  replaced by the chosen text.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from assay.errors import InputError, MissingError
from assay.util.files import read_parquet

BUILTIN = ("assay_champ", "assay_mmlu_dev")


def builtin_records(name: str) -> list[dict[str, Any]]:
    from assay.common import tasks

    return tasks.champ_items() if name == "assay_champ" else tasks.mmlu_dev_items()


def file_records(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, record) pairs; a bad line is an error naming the file and line."""
    if not path.exists():
        raise MissingError(f"target file {path} does not exist")
    if path.suffix == ".parquet":
        return [(i + 1, r) for i, r in enumerate(read_parquet(path).to_dicts())]
    from assay.util.files import open_read

    with open_read(path) as f:
        raw = f.read().decode("utf-8")
    if raw.lstrip().startswith("["):  # one JSON array
        try:
            items = json.loads(raw)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}: line {e.lineno}: not valid JSON ({e.msg})") from None
        return list(enumerate(items, start=1))
    out = []
    for n, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append((n, json.loads(line)))
        except json.JSONDecodeError as e:
            raise InputError(f"{path}: line {n}: not valid JSON ({e.msg})") from None
    return out


def example_text(record: dict[str, Any], fields: Sequence[str], where: str = "") -> str:
    """Join a record's fields into one document (an answer index becomes the chosen text)."""
    if not isinstance(record, dict):
        raise InputError(f"{where}: a target example must be a JSON object")
    parts = []
    for field in fields:
        if field not in record or record[field] is None:
            raise InputError(
                f"{where}: target example has no field {field!r} "
                f"(it has {sorted(record)}; choose fields with `fields=`)"
            )
        value = record[field]
        if field == "answer" and isinstance(value, int) and isinstance(record.get("choices"), list):
            value = record["choices"][value]
        text = " ".join(str(v) for v in value) if isinstance(value, list) else str(value)
        if text.strip():
            parts.append(text.strip())
    return "\n".join(parts)


def load_targets(
    source: str | os.PathLike | Sequence[str],
    fields: Sequence[str] | None = None,
    *,
    max_items: int | None = None,
    seed: int = 0,
) -> list[str]:
    """Target examples as texts, one per example (a seeded subset when `max_items` is given)."""
    if not isinstance(source, (str, os.PathLike)):
        texts = [str(t) for t in source]
        where = "target examples"
    elif str(source) in BUILTIN:
        records = list(enumerate(builtin_records(str(source)), start=1))
        texts = [
            example_text(r, fields or ("question", "answer"), f"{source}[{n}]") for n, r in records
        ]
        where = str(source)
    else:
        path = Path(source)
        records = file_records(path)
        if fields is None and records:
            fields = ("text",) if "text" in records[0][1] else ("question", "answer")
        texts = [example_text(r, fields or (), f"{path}: line {n}") for n, r in records]
        where = str(path)
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise InputError(f"{where}: no target examples (the target set is empty)")
    if max_items is not None and len(texts) > max_items:
        keep = np.sort(np.random.default_rng(seed).choice(len(texts), max_items, replace=False))
        texts = [texts[i] for i in keep]
    return texts
