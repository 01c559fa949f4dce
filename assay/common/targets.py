"""Target examples: the benchmark items that target-driven scorers (BETR, PreSelect, MATES,
MASS) aim the selection at.

A target example becomes one document: its fields joined in order (BETR: question, then answer,
then any supporting text). Sources:

- a JSON-lines / JSON / parquet file of records (JSON lines may be gzip- or zstd-compressed),
  or a folder of such files (every one, in name order: a sharded reference set such as a
  held-out split), with `fields` naming what to join (default: `text` alone if the records
  have it, else `question` + `answer`);
- a built-in benchmark: `assay_champ` (competition math) or `assay_mmlu_dev` (MMLU dev items),
  the items of assay's local lm-eval tasks. An `answer` that is an index into `choices` is
  replaced by the chosen text.

A target set may also say which part of an example is *context* (the prompt) and which is the
*continuation* (what a model should produce): `load_target_pairs`, with `context_fields` and
`continuation_fields`. MATES' reference loss scores only the continuation, as the official code
does (lm-eval's doc_to_text as context, doc_to_target as continuation). The built-in benchmarks
declare their split (`BUILTIN_SPLIT`: the question as context, the answer as continuation); a file
has one only when its fields are named.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from assay.errors import ConfigError, InputError, MissingError
from assay.util.files import read_parquet

BUILTIN = ("assay_champ", "assay_mmlu_dev")
#: each built-in benchmark's (context fields, continuation fields): problem, then its answer
BUILTIN_SPLIT = {name: (("question",), ("answer",)) for name in BUILTIN}


def builtin_records(name: str) -> list[dict[str, Any]]:
    from assay.common import tasks

    return tasks.champ_items() if name == "assay_champ" else tasks.mmlu_dev_items()


#: the files a folder of target records is read from, in name order
RECORD_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".json", ".json.gz", ".parquet")


def record_files(folder: Path) -> list[Path]:
    """The record files of a target folder, in name order: a known suffix, and not a hidden or
    '_' name (assay's own `_assay.json` and `_stats.json` beside the shards of an output)."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith((".", "_")) and p.name.endswith(RECORD_SUFFIXES)
    )


def file_records(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(where, record) pairs, `where` naming the file and line (or row) for messages; a folder
    gives the records of every file in it with a known suffix, in name order. A bad line is an
    error naming the file and line."""
    if not path.exists():
        raise MissingError(f"target file {path} does not exist")
    if path.is_dir():
        files = record_files(path)
        if not files:
            raise InputError(
                f"{path}: no target files in the folder (looked for {', '.join(RECORD_SUFFIXES)})"
            )
        return [rec for f in files for rec in file_records(f)]
    if path.suffix == ".parquet":
        return [(f"{path}: row {i + 1}", r) for i, r in enumerate(read_parquet(path).to_dicts())]
    from assay.util.files import open_read

    with open_read(path) as f:
        raw = f.read().decode("utf-8")
    if raw.lstrip().startswith("["):  # one JSON array
        try:
            items = json.loads(raw)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}: line {e.lineno}: not valid JSON ({e.msg})") from None
        return [(f"{path}: item {i}", r) for i, r in enumerate(items, start=1)]
    out = []
    for n, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append((f"{path}: line {n}", json.loads(line)))
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


def seeded_subset(items: list[Any], max_items: int | None, seed: int) -> list[Any]:
    """At most `max_items` of `items`, a seeded sample kept in their order (all when fewer)."""
    if max_items is None or len(items) <= max_items:
        return items
    keep = np.sort(np.random.default_rng(seed).choice(len(items), max_items, replace=False))
    return [items[i] for i in keep]


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
        texts = [example_text(r, fields or (), at) for at, r in records]
        where = str(path)
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise InputError(f"{where}: no target examples (the target set is empty)")
    return seeded_subset(texts, max_items, seed)


def target_split(
    source: str | os.PathLike | Sequence[str],
    context_fields: Sequence[str] | None = None,
    continuation_fields: Sequence[str] | None = None,
) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """The (context, continuation) fields of a target set: those given (both or neither), else
    a built-in benchmark's own (`BUILTIN_SPLIT`), else None (no split: the whole text)."""
    if (context_fields is None) != (continuation_fields is None):
        raise ConfigError("give both context_fields and continuation_fields, or neither")
    if continuation_fields is not None:
        assert context_fields is not None
        if not continuation_fields:
            raise ConfigError("continuation_fields is empty: name the fields that are scored")
        if isinstance(source, str | os.PathLike) or not source:
            return tuple(context_fields), tuple(continuation_fields)
        raise ConfigError("a list of texts has no fields to split into context and continuation")
    if isinstance(source, str | os.PathLike) and str(source) in BUILTIN_SPLIT:
        return BUILTIN_SPLIT[str(source)]
    return None


def load_target_pairs(
    source: str | os.PathLike,
    context_fields: Sequence[str],
    continuation_fields: Sequence[str],
    *,
    max_items: int | None = None,
    seed: int = 0,
) -> list[tuple[str, str]]:
    """Target examples as (context, continuation) pairs: each side its fields joined as
    `example_text` joins them, except that the white space a continuation begins with is kept
    (lm-eval's doc_to_target, e.g. LAMBADA's " word"). Their `pair_text` is the text
    `load_targets` gives for `fields = context_fields + continuation_fields` when the
    continuation does not begin with white space. Examples with an empty continuation (nothing
    to score) are left out; a seeded subset when `max_items` is given."""
    where = str(source)
    if where in BUILTIN:
        records = [(f"{where}[{n}]", r) for n, r in enumerate(builtin_records(where), start=1)]
    else:
        records = file_records(Path(source))
    pairs = []
    for at, r in records:
        context = example_text(r, context_fields, at)
        continuation = example_text(r, continuation_fields, at)
        first = r.get(continuation_fields[0]) if isinstance(r, dict) else None
        if continuation and isinstance(first, str) and first[:1].isspace():
            continuation = first[: len(first) - len(first.lstrip())] + continuation
        if continuation.strip():
            pairs.append((context, continuation))
    if not pairs:
        raise InputError(f"{where}: no target example has a continuation to score")
    return seeded_subset(pairs, max_items, seed)


def pair_text(context: str, continuation: str) -> str:
    """The whole text of a (context, continuation) pair: joined by a newline, as `example_text`
    joins fields, or directly when the continuation begins with white space (as lm-eval joins
    doc_to_text and doc_to_target)."""
    if not context:
        return continuation.lstrip()
    return context + continuation if continuation[:1].isspace() else f"{context}\n{continuation}"
