"""Arrow IPC files, and Hugging Face datasets saved on disk.

`datasets.Dataset.save_to_disk` writes a folder of Arrow IPC *stream* files plus two small JSON
files: `state.json` (which data files, in order, under `_data_files`) and `dataset_info.json`
(the features). A `DatasetDict` writes `dataset_dict.json` and one such folder per split. The
prepared cache of `datasets.load_dataset` holds the same Arrow stream files. assay reads these
files itself, memory-mapped, one shard per file (no copy, no `datasets` import), and writes
them: an output folder of `.arrow` shards gets the two JSON files, so that
`datasets.load_from_disk(folder)` opens it as it is.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from assay.errors import InputError
from assay.io.blocks import FileLevelError
from assay.io.read import RawBatch
from assay.util.files import atomic_path, content_id
from assay.util.hashing import config_hash

HF_STATE = "state.json"
HF_INFO = "dataset_info.json"
HF_DICT = "dataset_dict.json"


def _open(source: Any) -> pa.ipc.RecordBatchStreamReader | pa.ipc.RecordBatchFileReader:
    if isinstance(source, str):
        source = pa.memory_map(source)
    try:
        return pa.ipc.open_stream(source)
    except pa.ArrowInvalid:  # the IPC file format ("Feather v2"), also `.arrow`
        source.seek(0)
        return pa.ipc.open_file(source)


def read_arrow(path: str, batch_rows: int) -> Iterator[RawBatch]:
    """The rows of an Arrow IPC file, memory-mapped, in batches of at most `batch_rows`."""
    try:
        source = pa.memory_map(path)
    except (pa.ArrowException, OSError) as e:
        raise FileLevelError(path, f"not a readable Arrow IPC file ({e})") from e
    yield from read_arrow_source(path, source, batch_rows)


def read_arrow_source(label: str, source: Any, batch_rows: int) -> Iterator[RawBatch]:
    """The rows of an Arrow IPC stream or file read from `source` (a memory map, or a remote
    object's file), in batches of at most `batch_rows`; errors name `label`."""
    try:
        reader = _open(source)
        if isinstance(reader, pa.ipc.RecordBatchFileReader):
            batches: Iterator[pa.RecordBatch] = (
                reader.get_batch(i) for i in range(reader.num_record_batches)
            )
        else:
            batches = iter(reader)
        row = 0
        for batch in batches:
            for start in range(0, batch.num_rows, batch_rows):
                piece = batch.slice(start, batch_rows)
                df = pl.from_arrow(pa.Table.from_batches([piece]))
                assert isinstance(df, pl.DataFrame)
                n = df.height
                numbers = np.arange(row + 1, row + 1 + n, dtype=np.int64)
                yield RawBatch(df, numbers, lambda v=numbers: v)
                row += n
    except FileLevelError:
        raise
    except (pa.ArrowException, OSError) as e:
        raise FileLevelError(label, f"not a readable Arrow IPC file ({e})") from e


def saved_dataset_files(folder: str | os.PathLike) -> list[Path] | None:
    """The data files of a dataset saved with `save_to_disk`, in its order; None when
    `folder` is not one. A saved `DatasetDict` is refused, naming its splits' folders."""
    root = Path(folder)
    if (root / HF_DICT).is_file():
        try:
            splits = json.loads((root / HF_DICT).read_text())["splits"]
        except (ValueError, KeyError, TypeError) as e:
            raise InputError(f"{root / HF_DICT}: not a datasets DatasetDict file ({e})") from e
        where = ", ".join(str(root / s) for s in splits)
        raise InputError(
            f"{root} is a Hugging Face DatasetDict with splits {splits}: pass one split's "
            f"folder ({where})"
        )
    state = root / HF_STATE
    if not (state.is_file() and (root / HF_INFO).is_file()):
        return None
    try:
        names = [f["filename"] for f in json.loads(state.read_text())["_data_files"]]
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f"{state}: not a datasets save_to_disk state file ({e})") from e
    files = [root / n for n in names]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise InputError(f"{state} lists data files that are missing: {missing[:3]}")
    return files


def _features(schema: pa.Schema) -> dict[str, Any]:
    """The `datasets` features of an Arrow schema (its own conversion, so nested types match)."""
    from datasets import Features

    return Features.from_arrow_schema(schema).to_dict()


def write_hf_dataset_files(folder: str | os.PathLike, files: Sequence[str | os.PathLike]) -> None:
    """Make a folder of `.arrow` shards a dataset that `datasets.load_from_disk` opens.

    `files` are the folder's Arrow stream files in order. A dataset has one set of features, so
    shards whose columns differ (a field only some shards' records have) are rewritten,
    atomically and streaming, with the union of the columns (nulls where a shard had none); a
    column with two different types is refused. Both JSON files are written atomically,
    `state.json` last.
    """
    root = Path(folder)
    paths = [Path(f) for f in files]
    if not paths:
        raise InputError(f"{root}: no .arrow shards to describe as a Hugging Face dataset")
    schemas = [_open(str(p)).schema.remove_metadata() for p in paths]
    try:
        union = pa.unify_schemas(schemas)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise InputError(
            f"{root}: the .arrow shards' columns have conflicting types ({e}); a Hugging Face "
            "dataset has one type per column"
        ) from e
    for p, schema in zip(paths, schemas, strict=True):
        if not schema.equals(union):
            _conform(p, union)
    info = {"citation": "", "description": "", "features": _features(union)}
    info.update(homepage="", license="")
    _write_text(root / HF_INFO, json.dumps(info, indent=2))
    state = {
        "_data_files": [{"filename": p.relative_to(root).as_posix()} for p in paths],
        "_fingerprint": _fingerprint(paths),
        "_format_columns": None,
        "_format_kwargs": {},
        "_format_type": None,
        "_output_all_columns": False,
        "_split": None,
    }
    _write_text(root / HF_STATE, json.dumps(state, indent=2))


def _conform(path: Path, schema: pa.Schema) -> None:
    """Rewrite one Arrow stream file with `schema`'s columns, in its order, batch by batch."""
    with atomic_path(path) as tmp:
        reader = _open(str(path))
        batches = (
            iter(reader)
            if isinstance(reader, pa.ipc.RecordBatchStreamReader)
            else (reader.get_batch(i) for i in range(reader.num_record_batches))
        )
        with pa.ipc.new_stream(str(tmp), schema) as writer:
            for batch in batches:
                names = batch.schema.names
                columns = [
                    batch.column(names.index(f.name))
                    if f.name in names
                    else pa.nulls(batch.num_rows, f.type)
                    for f in schema
                ]
                writer.write_batch(pa.RecordBatch.from_arrays(columns, schema=schema))
        del reader, batches


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n")


def _fingerprint(paths: Sequence[Path]) -> str:
    """What `datasets` calls a fingerprint (a cache key): here, of the files' contents."""
    return config_hash([[p.name, content_id(p, mtime=False)] for p in paths])
