"""Reading shards with assay vs reading the same files with polars directly.

assay validates every record (text present, a string, non-empty, UTF-8, under the length limit)
and normalises ids; polars reads each file whole with no checks. polars' default guesses the
schema from the first 100 records and drops any field that appears later; assay reads every
field of every record, so `polars_all_fields` (polars with infer_schema_length=None) is the
like-for-like baseline, and `ratio_all_fields` the ratio against it. Two assay paths are measured:
the default (parquet files within `whole_file_bytes` are read whole, and so are JSONL files
where the C parser is not built) and streaming (forced with whole_file_bytes=0: blocks of at
most 16 MiB, bounded memory, the path of large shards and of the parts of split files). Target: assay >= 0.85x polars. The readers take turns
(`--repeats` rounds, the fastest of each kept), so a busy spell of a shared machine falls on all;
`streaming_cpu_ratio` is polars' CPU time (all threads) over the streaming path's, the share of
the gap that more cores cannot close.

JSONL blocks are parsed by assay's C parser of flat records (`assay.io.flat`; `c_parser` says
whether it is built) and otherwise by pyarrow; `stream_pyarrow_*` measures the streaming path
with the C parser switched off, the path of installs without a C compiler (and of blocks with
nested values). A 16 MiB block of the demo text takes the C parser 5.7 ms of one core, pyarrow
21.7 ms, polars 15.4 ms (8.5 ms on 2 cores; lossy).

    python benchmarks/read_throughput.py [--docs 40000] [--shards 8]

`--shards 1` reads one 109 MB file (the streaming path in its steady state). With
`POLARS_MAX_THREADS=1 OMP_NUM_THREADS=1` in the environment every reader gets one thread, as
each worker of a `-j N` run does (pyarrow and polars honour these variables).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import polars as pl
from _common import bench_corpus, emit

from assay.io import flat, read
from assay.io.corpus import Corpus


def read_assay(folder, **options) -> int:
    return sum(b.height for b in Corpus(folder, **options).iter_batches())


def read_assay_pyarrow(folder) -> int:
    """The streaming path without the C parser: every block parsed by pyarrow."""
    saved = flat._jsonl, read.FLAT_PARSER
    flat._jsonl, read.FLAT_PARSER = None, False
    try:
        return read_assay(folder, whole_file_bytes=0)
    finally:
        flat._jsonl, read.FLAT_PARSER = saved


def read_polars(folder, fmt: str, all_fields: bool = False) -> int:
    if fmt == "parquet":
        return sum(pl.read_parquet(p).height for p in sorted(folder.glob(f"*.{fmt}")))
    schema_rows = None if all_fields else 100
    files = sorted(folder.glob(f"*.{fmt}"))
    return sum(pl.read_ndjson(p, infer_schema_length=schema_rows).height for p in files)


def interleaved(fns: dict[str, Callable[[], int]], repeats: int) -> dict[str, tuple]:
    """Each reader's fastest wall time, least CPU time (all threads) and document count; the
    readers take turns, so that a busy spell of the machine falls on all of them alike."""
    wall = dict.fromkeys(fns, float("inf"))
    cpu = dict.fromkeys(fns, float("inf"))
    docs = {}
    for _ in range(repeats):
        for name, fn in fns.items():
            c0, t0 = time.process_time(), time.perf_counter()
            docs[name] = fn()
            wall[name] = min(wall[name], time.perf_counter() - t0)
            cpu[name] = min(cpu[name], time.process_time() - c0)
    return {name: (wall[name], cpu[name], docs[name]) for name in fns}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=40_000)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    rows = {}
    for fmt in ("jsonl", "jsonl.gz", "jsonl.zst", "parquet"):
        folder = bench_corpus("read", args.docs, args.shards, fmt)
        size = sum(p.stat().st_size for p in folder.glob(f"*.{fmt}"))
        read_polars(folder, fmt)  # warm the page cache for both
        got = interleaved(
            {
                "assay": lambda f=folder: read_assay(f),
                "stream": lambda f=folder: read_assay(f, whole_file_bytes=0),
                "stream_pyarrow": lambda f=folder: read_assay_pyarrow(f),
                "polars": lambda f=folder, x=fmt: read_polars(f, x),
                "polars_all": lambda f=folder, x=fmt: read_polars(f, x, True),
            },
            args.repeats,
        )
        (t_assay, _, n_assay), (t_stream, c_stream, n_stream) = got["assay"], got["stream"]
        (t_polars, c_polars, n_polars), (t_full, _, _) = got["polars"], got["polars_all"]
        t_arrow, c_arrow, _ = got["stream_pyarrow"]
        assert n_assay == n_stream == n_polars == args.docs, (n_assay, n_stream, n_polars)
        rows[fmt] = {
            "docs": args.docs,
            "file_mb": round(size / 1e6, 1),
            "polars_docs_per_s": round(n_polars / t_polars),
            "assay_docs_per_s": round(n_assay / t_assay),
            "ratio": round(t_polars / t_assay, 3),
            "polars_all_fields_docs_per_s": round(n_polars / t_full),
            "ratio_all_fields": round(t_full / t_assay, 3),
            "assay_streaming_docs_per_s": round(n_stream / t_stream),
            "streaming_ratio": round(t_polars / t_stream, 3),
            "streaming_ratio_all_fields": round(t_full / t_stream, 3),
            "streaming_cpu_ratio": round(c_polars / c_stream, 3),
            "stream_pyarrow_ratio": round(t_polars / t_arrow, 3),
            "stream_pyarrow_cpu_ratio": round(c_polars / c_arrow, 3),
        }
    emit(
        {
            "benchmark": "read_throughput",
            "target_ratio": 0.85,
            "c_parser": flat.AVAILABLE,
            "formats": rows,
        }
    )


if __name__ == "__main__":
    main()
