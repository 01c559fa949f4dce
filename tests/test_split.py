"""Large files as several tasks: byte ranges of JSONL, row groups of parquet (assay.io.split).

The demo files are small, so these tests split them with a tiny `split_bytes`; what holds for
them holds for a 50 GB file cut into 512 MiB parts.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from conftest import read_all

from assay.exec.runner import LocalRunner, RayRunner
from assay.io.corpus import Corpus
from assay.io.scores import read_scores
from assay.io.shards import ShardStats
from assay.io.split import FilePart
from assay.selection.doc_stats import DocStatsScorer
from assay.selection.score import score_corpus
from assay.selection.select import select

SPLIT = 64 << 10  # splits each small demo file into 2 to 7 parts


def _awkward_jsonl(n: int = 300) -> bytes:
    """Lines of very different lengths, blank and whitespace-only lines, CRLF endings."""
    rng = random.Random(0)
    words = [f"{w}{k}" for w in ("alpha", "beta", "gamma", "delta", "ε") for k in range(50)]
    out = []
    for i in range(n):
        text = " ".join(rng.choices(words, k=rng.randint(1, 400)))
        out.append(json.dumps({"id": f"d{i}", "text": text, "k": i}))
        if i % 29 == 0:
            out.append("")
        if i % 41 == 0:
            out.append(" \t\r")
    return ("\n".join(out[:-1]) + "\r\n" + out[-1]).encode()  # no final newline


@pytest.fixture
def awkward_files(tmp_path: Path) -> dict[str, Path]:
    data = _awkward_jsonl()
    paths = {
        "jsonl": tmp_path / "a.jsonl",
        "gz": tmp_path / "b.jsonl.gz",
        "zst": tmp_path / "c.jsonl.zst",
        "parquet": tmp_path / "d.parquet",
    }
    paths["jsonl"].write_bytes(b"\xef\xbb\xbf" + data)
    paths["gz"].write_bytes(gzip.compress(data))
    paths["zst"].write_bytes(zstandard.ZstdCompressor().compress(data))
    rows = [json.loads(line) for line in data.splitlines() if line.strip()]
    pq.write_table(pa.Table.from_pylist(rows), paths["parquet"], row_group_size=23)
    return paths


def _read_parts(corpus: Corpus, stats: ShardStats | None = None) -> pl.DataFrame:
    return pl.concat([b for s in corpus.shards for b in s.read(corpus.options, stats)])


@pytest.mark.parametrize("fmt", ["jsonl", "gz", "zst", "parquet"])
@pytest.mark.parametrize("id_field", ["id", None])
def test_the_parts_of_a_file_read_each_record_once_as_the_whole_file_does(
    awkward_files: dict[str, Path], fmt: str, id_field: str | None
) -> None:
    path = awkward_files[fmt]
    whole = read_all(Corpus(path, id_field=id_field, whole_file_bytes=0))
    assert whole.height == 300
    for split_bytes in (5_000, 23_456, 100_000):
        corpus = Corpus(path, id_field=id_field, split_bytes=split_bytes, block_bytes=4096)
        assert len(corpus.shards) > 1 and all(isinstance(s, FilePart) for s in corpus.shards)
        # generated ids number the records of the whole file, not of the part
        assert _read_parts(corpus).equals(whole), split_bytes
    n = len(corpus.shards)
    stem = path.name.split(".")[0]
    assert [s.name for s in corpus.shards] == [
        f"{stem}.part-{i:05d}-of-{n:05d}{path.name[len(stem) :]}" for i in range(n)
    ]
    assert read_all(corpus).equals(whole)  # a sequential read takes the file whole


def test_bad_and_too_long_lines_are_counted_once_across_parts(tmp_path: Path) -> None:
    lines = []
    for i in range(200):
        if i % 31 == 7:
            lines.append(b'{"id": "broken", "text": ')
        elif i % 23 == 5:
            lines.append(json.dumps({"id": f"long{i}", "text": "y" * 5000}).encode())
        else:
            lines.append(json.dumps({"id": f"d{i}", "text": f"doc {i} " * 40}).encode())
    data = b"\n".join(lines) + b"\n"
    (tmp_path / "a.jsonl").write_bytes(data)
    (tmp_path / "b.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(data))
    opts = {"max_chars": 1000, "on_error": "skip", "whole_file_bytes": 0, "block_bytes": 2048}
    for name in ("a.jsonl", "b.jsonl.zst"):
        whole_stats, part_stats = ShardStats("w"), ShardStats("p")
        whole = read_all_with(Corpus(tmp_path / name, **opts), whole_stats)
        split = Corpus(tmp_path / name, split_bytes=3000, **opts)
        assert len(split.shards) > 2
        assert _read_parts(split, part_stats).equals(whole)
        assert part_stats.skipped == whole_stats.skipped == {"malformed_json": 7, "too_long": 9}
        assert part_stats.docs_in == whole_stats.docs_in == 200
    # under on_error='fail', the part holding a bad line names the file and its line number
    strict = Corpus(tmp_path / "b.jsonl.zst", split_bytes=3000, max_chars=1000)
    errors = []
    for shard in strict.shards:
        try:
            list(shard.read(strict.options))
        except ValueError as e:
            errors.append(str(e))
    assert errors[0].endswith(
        "b.jsonl.zst, line 6: 'text' is longer than max_chars=1000 characters"
    )
    assert any("b.jsonl.zst, line 8: malformed JSON" in e for e in errors)


def read_all_with(corpus: Corpus, stats: ShardStats) -> pl.DataFrame:
    return pl.concat(list(corpus.iter_batches(stats)))


def _parquet_copy(src: Path, dst: Path) -> None:
    """The demo corpus as parquet files of several row groups each."""
    dst.mkdir()
    for f in sorted(src.glob("*.jsonl.gz")):
        table = read_all(Corpus(f)).to_arrow()
        pq.write_table(table, dst / f.name.replace(".jsonl.gz", ".parquet"), row_group_size=20)


@pytest.mark.parametrize("fmt", ["jsonl.gz", "parquet"])
def test_a_split_corpus_scores_and_selects_as_the_unsplit_one_with_two_workers(
    tmp_path: Path, demo_dir: Path, fmt: str
) -> None:
    src = demo_dir / "train"
    if fmt == "parquet":
        _parquet_copy(src, tmp_path / "pq")
        src = tmp_path / "pq"
    whole, split = Corpus(src), Corpus(src, split_bytes=SPLIT)
    assert len(split.shards) > 2 * len(whole.shards)
    two = LocalRunner(workers=2, progress=False)
    score_corpus(DocStatsScorer(), whole, tmp_path / "s1")
    result = score_corpus(DocStatsScorer(), split, tmp_path / "s2", runner=two)
    assert result.ran == len(split.shards) and result.docs_out == 360
    assert sorted(p.name for p in (tmp_path / "s2").glob("*.parquet")) == sorted(
        f"{s.stem}.parquet" for s in split.shards
    )
    ref = read_scores(tmp_path / "s1", whole).drop("shard").sort("id")
    assert read_scores(tmp_path / "s2", split).drop("shard").sort("id").equals(ref)
    # scores written under one split are found under another
    assert read_scores(tmp_path / "s2", whole).drop("shard").sort("id").equals(ref)
    assert read_scores(tmp_path / "s1", split).drop("shard").sort("id").equals(ref)

    cfg = {"column": "alpha_frac", "policy": "gumbel", "keep": 0.3, "by": "chars", "seed": 3}
    a = select(whole, tmp_path / "s1", tmp_path / "sel1", **cfg)
    b = select(split, tmp_path / "s2", tmp_path / "sel2", runner=two, **cfg)
    c = select(split, tmp_path / "s1", tmp_path / "sel3", **cfg)
    assert a.kept_docs == b.kept_docs == c.kept_docs > 0
    assert b.to_dict() | {"out_dir": None} == a.to_dict() | {"out_dir": None}
    kept = [read_all(Corpus(tmp_path / d)).sort("id") for d in ("sel1", "sel2", "sel3")]
    assert kept[0].equals(kept[1]) and kept[0].equals(kept[2])
    assert sorted(p.name for p in (tmp_path / "sel2").glob(f"[!._]*.{fmt}")) == sorted(
        s.name for s in split.shards
    )


SLOW_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from assay.io.corpus import Corpus
    from assay.selection.score import score_corpus
    from assay.selection.doc_stats import DocStatsScorer

    class Slow(DocStatsScorer):
        def score_table(self, texts):
            time.sleep(0.03)
            return super().score_table(texts)

    corpus = Corpus(sys.argv[1], batch_rows=8, split_bytes=int(sys.argv[3]))
    score_corpus(Slow(), corpus, sys.argv[2])
    """
)


def test_a_killed_split_run_redoes_only_its_unfinished_parts(
    tmp_path: Path, demo_dir: Path
) -> None:
    corpus = Corpus(demo_dir / "train", split_bytes=SPLIT, batch_rows=8)
    out = tmp_path / "killed"
    script = tmp_path / "slow.py"
    script.write_text(SLOW_SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(demo_dir / "train"), str(out), str(SPLIT)],
        env={**os.environ, "ASSAY_PROGRESS": "0"},
    )
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("[!.]*.parquet"))) < 3:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = {p.name: p.stat().st_mtime_ns for p in out.glob("[!.]*.parquet")}
    assert 3 <= len(done) < len(corpus.shards), "the run should have been killed mid-way"
    assert all(".part-" in name for name in done)

    resumed = score_corpus(DocStatsScorer(), corpus, out)
    assert resumed.resumed == len(done) and resumed.ran == len(corpus.shards) - len(done)
    assert all(out.joinpath(n).stat().st_mtime_ns == t for n, t in done.items())
    fresh = tmp_path / "fresh"
    score_corpus(DocStatsScorer(), corpus, fresh)
    names = sorted(p.name for p in fresh.glob("*.parquet"))
    assert names == sorted(p.name for p in out.glob("[!.]*.parquet"))
    assert all((out / n).read_bytes() == (fresh / n).read_bytes() for n in names)


def test_a_file_cut_otherwise_since_replaces_its_old_parts_and_others_resume(
    tmp_path: Path, demo_dir: Path
) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for f in (demo_dir / "train").glob("*.jsonl.gz"):
        (src / f.name).write_bytes(f.read_bytes())
    corpus = Corpus(src, split_bytes=SPLIT)
    score_corpus(DocStatsScorer(), corpus, tmp_path / "s")
    select(corpus, tmp_path / "s", tmp_path / "sel", column="alpha_frac", keep=0.5)
    assert len(list((tmp_path / "s").glob("math-00000.part-*-of-00002.parquet"))) == 2
    # the math file grows to three parts: the outputs of its two old parts must go
    math = src / "math-00000.jsonl.gz"
    rows = read_all(Corpus(math))
    more = pl.concat([rows, rows.with_columns(pl.col("id") + "-copy")])
    more.write_ndjson(tmp_path / "more.jsonl")
    math.write_bytes(gzip.compress((tmp_path / "more.jsonl").read_bytes()))
    corpus = Corpus(src, split_bytes=SPLIT)
    again = score_corpus(DocStatsScorer(), corpus, tmp_path / "s")
    math_parts = [s for s in corpus.shards if s.file_name == "math-00000.jsonl.gz"]
    assert len(math_parts) == 3 and again.ran == 3 and again.resumed == len(corpus.shards) - 3
    assert not list((tmp_path / "s").glob("math-00000.part-*-of-00002.parquet"))
    assert not list((tmp_path / "s" / "_stats").glob("math-00000.part-*-of-00002.jsonl.gz.json"))
    assert read_scores(tmp_path / "s", corpus).height == 450
    result = select(corpus, tmp_path / "s", tmp_path / "sel", column="alpha_frac", keep=0.5)
    kept = read_all(Corpus(tmp_path / "sel"))
    assert kept.height == result.kept_docs and kept.get_column("id").is_unique().all()
    assert not list((tmp_path / "sel").glob("math-00000.part-*-of-00002.jsonl.gz"))


@pytest.mark.slow
def test_ray_runs_the_parts_of_a_split_corpus_as_the_local_runner_does(
    tmp_path: Path, demo_dir: Path
) -> None:
    ray = pytest.importorskip("ray")
    corpus = Corpus(demo_dir / "train", split_bytes=SPLIT)
    try:
        result = score_corpus(
            DocStatsScorer(), corpus, tmp_path / "ray", runner=RayRunner(workers=2, progress=False)
        )
    finally:
        ray.shutdown()
    score_corpus(DocStatsScorer(), corpus, tmp_path / "local")
    assert result.ran == len(corpus.shards) and result.docs_out == 360
    names = sorted(p.name for p in (tmp_path / "local").glob("*.parquet"))
    assert names == sorted(p.name for p in (tmp_path / "ray").glob("*.parquet"))
    assert all(
        (tmp_path / "ray" / n).read_bytes() == (tmp_path / "local" / n).read_bytes() for n in names
    )


def test_blocks_stay_intact_after_a_too_long_line_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Blocks are views of the buffer they were decompressed into: reading on (past a line too
    long to keep) must never write into a buffer whose lines were handed out."""
    from assay.io import blocks

    monkeypatch.setattr(blocks, "CHUNK_BYTES", 1024)
    lines = [
        json.dumps({"id": f"d{i}", "text": "y" * 9000 if i % 7 == 3 else f"doc {i} " * 30})
        for i in range(120)
    ]
    path = tmp_path / "a.jsonl.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress("\n".join(lines).encode() + b"\n"))
    got = list(blocks.stream_blocks(str(path), "zstd", 1 << 20, 5000))  # all held at once
    assert sum(b is None for _, b in got) == sum(i % 7 == 3 for i in range(120))
    kept = b"".join(bytes(b) for _, b in got if b is not None)
    assert kept == "".join(f"{ln}\n" for i, ln in enumerate(lines) if i % 7 != 3).encode()


@pytest.mark.parametrize(("threads", "block_bytes"), [(2, 1 << 20), (3, 8 << 10), (1, 8 << 10)])
def test_a_plain_file_is_cut_into_equal_blocks_a_multiple_of_the_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threads: int, block_bytes: int
) -> None:
    """No sliver of a last block (7 blocks on 2 threads leave one thread idle at the end)."""
    from assay.io import blocks

    monkeypatch.setattr(blocks, "FIRST_BLOCK_BYTES", 1024)
    rng = random.Random(0)
    data = "".join(
        json.dumps({"id": f"d{i}", "text": "z" * rng.randrange(50, 400)}) + "\n" for i in range(240)
    ).encode()
    path = tmp_path / "a.jsonl"
    path.write_bytes(data)
    got = list(blocks.mapped_blocks(str(path), block_bytes, None, threads=threads))
    assert b"".join(bytes(b) for _, b in got) == data
    n = -(-len(data) // block_bytes)
    assert len(got) == -(-n // threads) * threads
    sizes = [len(b) for _, b in got]
    assert min(sizes) > 0.8 * len(data) / len(got) and max(sizes) <= block_bytes
