"""Blocks of flat JSON lines parsed by assay's own C parser (`assay/io/_jsonl.c`).

Nearly every pretraining corpus is JSON lines of flat records: an id, a text, a few string or
number fields. For these the C parser is about four times as fast as pyarrow's reader, and as
strict: it validates UTF-8, refuses lone surrogate escapes, duplicate keys, mixed types and
anything not JSON, and gives the same columns, types and values that pyarrow gives (tested
against it). It builds Arrow buffers outside the GIL, so several blocks parse at once on
several threads, and keeps a few freed output buffers for the next blocks (at most 96 MiB), as
a fresh page costs a fault on first touch.

A block it does not read (nested values, or anything it refuses) returns None, and the caller
parses it with pyarrow, which keeps nested values and, for a broken block, sends it on to the
line-by-line reader that names each bad record. Where the extension was not built (no C
compiler at install time), every block goes to pyarrow: slower, same results.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

try:
    from assay.io import _jsonl
except ImportError:  # built without a C compiler
    _jsonl = None

#: Whether the C parser is there (the read benchmarks report it).
AVAILABLE = _jsonl is not None

_TYPES = {"int64": pa.int64(), "double": pa.float64()}


def parse_flat(block: Any) -> pl.DataFrame | None:
    """The records of a block of whole JSON lines, or None when the C parser is not built or
    does not read this block (pyarrow then does)."""
    if _jsonl is None:
        return None
    got = _jsonl.parse(block)
    if got is None:
        return None
    rows, columns = got
    if not columns:
        return None if rows else pl.DataFrame()  # records `{}`: as pyarrow reads them
    arrays = [_array(rows, *c[1:]) for c in columns]
    table = pa.Table.from_arrays(arrays, names=[c[0] for c in columns])
    df = pl.from_arrow(table)
    assert isinstance(df, pl.DataFrame)
    return df


def _bits(flags: bytes) -> pa.Buffer:
    """One byte per row (0 or 1) as an Arrow bitmap."""
    return pa.py_buffer(np.packbits(np.frombuffer(flags, dtype=np.uint8), bitorder="little"))


def _array(rows: int, kind: str, valid: bytes | None, values: Any, data: Any, nulls: int):
    validity = None if valid is None else _bits(valid)
    if kind == "string":
        buffers = [validity, pa.py_buffer(values), pa.py_buffer(data)]
        return pa.Array.from_buffers(pa.large_string(), rows, buffers, null_count=nulls)
    if kind == "bool":
        return pa.Array.from_buffers(pa.bool_(), rows, [validity, _bits(values)], null_count=nulls)
    if kind in _TYPES:
        buffers = [validity, pa.py_buffer(values)]
        return pa.Array.from_buffers(_TYPES[kind], rows, buffers, null_count=nulls)
    return pa.nulls(rows)
