"""Corpus I/O: formats, discovery, ids, streaming, bad input, writing, sampling, HF datasets."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import polars as pl
import pytest
import zstandard
from conftest import read_all, write_jsonl, write_parquet

from assay.exec.stats import corpus_stats
from assay.io.corpus import Corpus
from assay.io.discover import discover_shards
from assay.io.shards import CorpusError, ShardStats
from assay.io.write import ShardWriter, write_shard


@pytest.fixture
def records(demo_records: list[dict]) -> list[dict]:
    return [{"id": r["id"], "text": r["text"], "domain": r["domain"]} for r in demo_records[:60]]


def _write_all_formats(root: Path, records: list[dict]) -> dict[str, Path]:
    paths = {
        "jsonl": write_jsonl(root / "a.jsonl", records),
        "parquet": write_parquet(root / "b.parquet", records),
    }
    data = b"".join(json.dumps(r).encode() + b"\n" for r in records)
    paths["gz"] = root / "c.jsonl.gz"
    paths["gz"].write_bytes(gzip.compress(data))
    paths["zst"] = root / "d.jsonl.zst"
    paths["zst"].write_bytes(zstandard.ZstdCompressor().compress(data))
    return paths


def test_every_format_reads_the_same_documents(tmp_path: Path, records: list[dict]) -> None:
    paths = _write_all_formats(tmp_path, records)
    frames = {k: read_all(Corpus(p)) for k, p in paths.items()}
    for k, df in frames.items():
        assert df.columns[:2] == ["id", "text"], k
        assert df.get_column("id").to_list() == [r["id"] for r in records], k
        assert df.get_column("text").to_list() == [r["text"] for r in records], k
        assert df.get_column("domain").to_list() == [r["domain"] for r in records], k


def test_folder_discovery_keeps_relative_names_and_ignores_bookkeeping(
    tmp_path: Path, records: list[dict]
) -> None:
    write_jsonl(tmp_path / "news" / "p0.jsonl", records[:5])
    write_jsonl(tmp_path / "code" / "p0.jsonl", records[5:10])
    write_jsonl(tmp_path / "_stats" / "x.jsonl", records[:1])
    write_jsonl(tmp_path / ".tmp-1-ab.p1.jsonl", records[:1])
    (tmp_path / "notes.txt").write_text("not a shard")
    shards = discover_shards(tmp_path)
    assert [s.name for s in shards] == ["code/p0.jsonl", "news/p0.jsonl"]
    assert [s.stem for s in shards] == ["code/p0", "news/p0"]
    globbed = discover_shards(str(tmp_path / "*" / "p0.jsonl"))
    assert [s.name for s in globbed] == ["code/p0.jsonl", "news/p0.jsonl"]


def test_discovery_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"missing\.jsonl"):
        Corpus(tmp_path / "missing.jsonl")
    with pytest.raises(FileNotFoundError, match=r"no corpus files match"):
        Corpus(str(tmp_path / "*.jsonl"))
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(FileNotFoundError, match="empty_dir"):
        Corpus(tmp_path / "empty_dir")
    (tmp_path / "x.csv").write_text("a,b")
    with pytest.raises(CorpusError, match=r"x\.csv: unsupported file type"):
        Corpus(tmp_path / "x.csv")


def test_shards_differing_only_by_format_are_refused(tmp_path: Path, records: list[dict]) -> None:
    write_jsonl(tmp_path / "a.jsonl", records[:2])
    write_parquet(tmp_path / "a.parquet", records[:2])
    with pytest.raises(ValueError, match="differ only by format"):
        Corpus(tmp_path)


def test_custom_fields_and_generated_ids(tmp_path: Path, records: list[dict]) -> None:
    renamed = [{"content": r["text"], "meta": r["domain"]} for r in records[:10]]
    path = write_jsonl(tmp_path / "s.jsonl", renamed)
    df = read_all(Corpus(path, text_field="content", id_field="doc_id"))
    assert df.columns == ["id", "text", "meta"]
    assert df.get_column("id").to_list() == [f"s.jsonl:{i}" for i in range(1, 11)]
    # ids come from record positions, so they do not shift when an earlier record is skipped
    path.write_bytes(b'{"content": ""}\n' + path.read_bytes())
    df2 = read_all(Corpus(path, text_field="content", on_error="skip"))
    assert df2.get_column("id").to_list() == [f"s.jsonl:{i}" for i in range(2, 12)]


def test_integer_ids_become_strings_and_null_ids_are_generated(
    tmp_path: Path, real_texts: list[str]
) -> None:
    path = write_jsonl(
        tmp_path / "s.jsonl",
        [{"id": 7, "text": real_texts[0]}, {"id": None, "text": real_texts[1]}],
    )
    assert read_all(Corpus(path)).get_column("id").to_list() == ["7", "s.jsonl:2"]


STREAM = {"whole_file_bytes": 0, "block_bytes": 4096}  # force the streaming path, many blocks


def test_streaming_and_whole_file_paths_agree_on_rows_ids_and_lines(
    tmp_path: Path, records: list[dict]
) -> None:
    path = write_jsonl(
        tmp_path / "s.jsonl", [{"text": r["text"], "domain": r["domain"]} for r in records]
    )
    data = path.read_bytes().split(b"\n")
    data.insert(3, b"")  # blank lines are not records
    data.insert(7, b"   ")
    data.insert(40, b'{"text": ""}')  # line 41, record 39
    path.write_bytes(b"\n".join(data))
    whole = read_all(Corpus(path, on_error="skip"))
    batches = list(Corpus(path, on_error="skip", **STREAM).iter_batches())
    assert len(batches) > 3
    assert pl.concat(batches).equals(whole)
    ids = whole.get_column("id").to_list()
    assert ids[:4] == ["s.jsonl:1", "s.jsonl:2", "s.jsonl:3", "s.jsonl:4"]
    assert "s.jsonl:39" not in ids and len(ids) == len(records)
    for opts in ({}, STREAM):
        with pytest.raises(CorpusError, match=r"s\.jsonl, line 41: 'text' is empty"):
            read_all(Corpus(path, **opts))


def test_parquet_row_groups_stream_the_same_rows(tmp_path: Path, records: list[dict]) -> None:
    path = tmp_path / "p.parquet"
    pl.DataFrame(records).write_parquet(path, row_group_size=7)
    whole = read_all(Corpus(path))
    streamed = list(Corpus(path, whole_file_bytes=0).iter_batches())
    assert len(streamed) == 9 and pl.concat(streamed).equals(whole)
    assert whole.get_column("id").to_list() == [r["id"] for r in records]


def test_batches_are_cut_to_batch_rows(tmp_path: Path, records: list[dict]) -> None:
    path = write_jsonl(tmp_path / "s.jsonl", records)
    sizes = [b.height for b in Corpus(path, batch_rows=16).iter_batches()]
    assert sizes == [16, 16, 16, 12]


# -- bad input ---------------------------------------------------------------------------------

BAD_LINES = {
    "malformed_json": (b'{"id": "x", "text": "unterminated', r"line 3: malformed JSON"),
    "missing_text": (
        b'{"id": "x", "body": "no text field here"}',
        r"line 3: record has no 'text' field",
    ),
    "invalid_utf8": (b'{"id": "x", "text": "caf\xe9 au lait"}', r"line 3: invalid UTF-8"),
    "empty_text": (b'{"id": "x", "text": "   "}', r"line 3: 'text' is empty"),
    "not_an_object": (b'["a", "list"]', r"line 3: expected a JSON object"),
}


@pytest.mark.parametrize("reason", sorted(BAD_LINES))
@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".jsonl.zst"])
@pytest.mark.parametrize("path_kind", ["whole", "stream"])
def test_bad_line_fails_with_file_and_line_or_is_counted(
    tmp_path: Path, records: list[dict], reason: str, suffix: str, path_kind: str
) -> None:
    opts = STREAM if path_kind == "stream" else {}
    raw, message = BAD_LINES[reason]
    lines = [json.dumps(r).encode() for r in records[:6]]
    lines[2] = raw
    data = b"\n".join(lines) + b"\n"
    path = tmp_path / f"shard{suffix}"
    if suffix.endswith(".gz"):
        data = gzip.compress(data)
    elif suffix.endswith(".zst"):
        data = zstandard.ZstdCompressor().compress(data)
    path.write_bytes(data)

    with pytest.raises(CorpusError, match=message) as info:
        read_all(Corpus(path, **opts))
    assert str(path.resolve()) in str(info.value)
    assert info.value.line == 3

    stats = ShardStats(path.name)
    corpus = Corpus(path, on_error="skip", **opts)
    kept = pl.concat(list(corpus.shards[0].read(corpus.options, stats)), how="diagonal_relaxed")
    assert kept.height == 5
    assert stats.skipped == {reason: 1}
    assert stats.docs_in == 6
    assert records[2]["id"] not in kept.get_column("id").to_list()


def test_a_50_mb_document_is_bad_input_by_default_and_readable_when_allowed(
    tmp_path: Path, real_texts: list[str]
) -> None:
    giant = (" ".join(real_texts) * (50_000_000 // len(" ".join(real_texts)) + 1))[:50_000_000]
    path = write_jsonl(
        tmp_path / "g.jsonl",
        [
            {"id": "a", "text": real_texts[0]},
            {"id": "giant", "text": giant},
            {"id": "c", "text": real_texts[1]},
        ],
    )
    with pytest.raises(CorpusError, match=r"line 2: 'text' is longer than max_chars=10000000"):
        read_all(Corpus(path))
    stats = ShardStats("g")
    c = Corpus(path, on_error="skip")
    kept = pl.concat(list(c.shards[0].read(c.options, stats)))
    assert kept.get_column("id").to_list() == ["a", "c"]
    assert stats.skipped == {"too_long": 1}
    # with no limit it is read in one piece, also when streaming with blocks far smaller than it
    whole = read_all(Corpus(path, max_chars=None))
    assert read_all(Corpus(path, max_chars=None, whole_file_bytes=0, block_bytes=1 << 20)).equals(
        whole
    )
    assert whole.get_column("text").str.len_chars().to_list() == [
        len(real_texts[0]),
        50_000_000,
        len(real_texts[1]),
    ]


def test_empty_shard_is_zero_documents_and_noted(tmp_path: Path, records: list[dict]) -> None:
    (tmp_path / "empty.jsonl").write_bytes(b"")
    write_jsonl(tmp_path / "full.jsonl", records[:3])
    result = corpus_stats(Corpus(tmp_path))
    assert result["docs"] == 3
    stats = ShardStats("empty")
    assert (
        list(Corpus(tmp_path / "empty.jsonl").shards[0].read(Corpus(tmp_path).options, stats)) == []
    )
    assert stats.extra == {"empty_shard": 1}


def test_corrupt_parquet_and_truncated_gzip(tmp_path: Path, records: list[dict]) -> None:
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 this is not parquet at all PAR1")
    with pytest.raises(CorpusError, match=r"bad\.parquet: not a readable parquet file"):
        read_all(Corpus(bad))
    stats = ShardStats("bad")
    c = Corpus(bad, on_error="skip")
    assert list(c.shards[0].read(c.options, stats)) == []
    assert stats.skipped == {"unreadable_file": 1}

    gz = tmp_path / "cut.jsonl.gz"
    full = gzip.compress(b"".join(json.dumps(r).encode() + b"\n" for r in records))
    gz.write_bytes(full[: len(full) // 2])
    for opts in ({}, STREAM):
        with pytest.raises(CorpusError, match=r"cut\.jsonl\.gz: cannot read gzip stream"):
            read_all(Corpus(gz, **opts))
    skipped = ShardStats("cut")
    c = Corpus(gz, on_error="skip", **STREAM)
    partial = list(c.shards[0].read(c.options, skipped))
    assert skipped.skipped == {"unreadable_file": 1}
    assert sum(b.height for b in partial) < len(records)


def test_parquet_rows_are_validated_with_row_numbers(tmp_path: Path, real_texts: list[str]) -> None:
    path = write_parquet(
        tmp_path / "p.parquet", [{"id": "a", "text": real_texts[0]}, {"id": "b", "text": None}]
    )
    with pytest.raises(CorpusError, match=r"p\.parquet, row 2: record has no 'text' field"):
        read_all(Corpus(path))


# -- writing ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jsonl", "jsonl.gz", "jsonl.zst", "parquet"])
def test_write_roundtrip_keeps_field_names(tmp_path: Path, records: list[dict], fmt: str) -> None:
    src = write_jsonl(
        tmp_path / "in" / "s.jsonl",
        [{"uid": r["id"], "body": r["text"], "domain": r["domain"]} for r in records],
    )
    corpus = Corpus(src, text_field="body", id_field="uid")
    (out,) = corpus.write(tmp_path / "out", fmt=fmt)
    assert out.name == f"s.{fmt}"
    again = Corpus(out, text_field="body", id_field="uid")
    assert read_all(again).equals(read_all(corpus))


def test_gzip_output_is_byte_for_byte_reproducible(tmp_path: Path, records: list[dict]) -> None:
    a = write_shard(tmp_path / "a.jsonl.gz", [pl.DataFrame(records)])
    b = write_shard(tmp_path / "b.jsonl.gz", [pl.DataFrame(records)])
    assert a == b == len(records)
    assert (tmp_path / "a.jsonl.gz").read_bytes() == (tmp_path / "b.jsonl.gz").read_bytes()


def test_atomic_writer_leaves_nothing_when_interrupted(tmp_path: Path, records: list[dict]) -> None:
    final = tmp_path / "out.jsonl"
    with pytest.raises(RuntimeError), ShardWriter.atomic(final) as w:
        w.write(pl.DataFrame(records[:3]))
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_parquet_writer_conforms_later_batches_and_refuses_new_columns(tmp_path: Path) -> None:
    w = ShardWriter(tmp_path / "x.parquet")
    w.write(pl.DataFrame({"id": ["a"], "text": ["t"], "n": [1]}))
    w.write(pl.DataFrame({"id": ["b"], "text": ["u"]}))
    w.write(pl.DataFrame({"id": ["c"], "text": ["v"], "n": [2], "empty": [None]}))  # dropped
    with pytest.raises(CorpusError, match=r"columns \['extra'\] appear after the first batch"):
        w.write(pl.DataFrame({"id": ["d"], "text": ["w"], "n": [3], "extra": [1]}))
    w.close()
    assert pl.read_parquet(tmp_path / "x.parquet").to_dicts() == [
        {"id": "a", "text": "t", "n": 1},
        {"id": "b", "text": "u", "n": None},
        {"id": "c", "text": "v", "n": 2},
    ]


# -- sampling, stats, HF ---------------------------------------------------------------------------


def test_sample_is_uniform_deterministic_and_independent_of_layout(
    tmp_path: Path, demo_dir: Path
) -> None:
    corpus = Corpus(demo_dir / "train")
    s1 = corpus.sample(50, seed=3)
    assert s1.height == 50 and s1.get_column("id").n_unique() == 50
    assert corpus.sample(50, seed=3).equals(s1)
    assert set(corpus.sample(50, seed=4).get_column("id")) != set(s1.get_column("id"))
    # same documents in one big file, read in tiny blocks: same sample
    merged = tmp_path / "all.jsonl"
    corpus.write(tmp_path / "copy", fmt="jsonl")
    merged.write_bytes(
        b"".join(p.read_bytes() for p in sorted((tmp_path / "copy").glob("*.jsonl")))
    )
    other = Corpus(merged, block_bytes=8192)
    assert set(other.sample(50, seed=3).get_column("id")) == set(s1.get_column("id"))
    # larger samples contain smaller ones (bottom-k)
    assert set(s1.get_column("id")) <= set(corpus.sample(80, seed=3).get_column("id"))
    # the domains are all represented in a uniform sample of a balanced corpus
    assert s1.get_column("domain").n_unique() == 4


def test_corpus_stats_match_the_manifest(demo_dir: Path) -> None:
    manifest = json.loads((demo_dir / "manifest.json").read_text())
    stats = corpus_stats(Corpus(demo_dir / "train"))
    assert stats["docs"] == sum(d["train_docs"] for d in manifest["domains"].values())
    for domain, d in manifest["domains"].items():
        assert stats["groups"][domain] == {"docs": d["train_docs"], "chars": d["train_chars"]}
    assert sum(stats["length_histogram"].values()) == stats["docs"]


def test_hugging_face_datasets_in_and_out(tmp_path: Path, records: list[dict]) -> None:
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_list(records)
    corpus = Corpus.from_hf(ds, num_shards=3)
    assert [s.name for s in corpus.shards] == ["hf-00000", "hf-00001", "hf-00002"]
    df = read_all(corpus)
    assert df.get_column("id").to_list() == [r["id"] for r in records]
    back = Corpus(write_jsonl(tmp_path / "s.jsonl", records)).to_hf(cache_dir=tmp_path / "hf")
    assert isinstance(back, datasets.Dataset)
    assert back["id"] == [r["id"] for r in records] and back["text"] == [r["text"] for r in records]
    streamed = Corpus.from_hf(ds.to_iterable_dataset())
    assert read_all(streamed).get_column("text").to_list() == [r["text"] for r in records]


def test_a_truncated_zstd_file_is_refused_not_read_short(
    tmp_path: Path, records: list[dict]
) -> None:
    # python-zstandard reads a frame cut short as a shorter stream, without an error; assay
    # walks a local file's frames first
    data = b"".join(json.dumps(r).encode() + b"\n" for r in records)
    full = zstandard.ZstdCompressor().compress(data)
    cut = tmp_path / "cut.jsonl.zst"
    cut.write_bytes(full[: len(full) - 5])
    for opts in ({}, STREAM):
        with pytest.raises(CorpusError, match=r"cut\.jsonl\.zst: .*zstd stream cut short"):
            read_all(Corpus(cut, **opts))
    skipped = ShardStats("cut")
    c = Corpus(cut, on_error="skip")
    assert list(c.shards[0].read(c.options, skipped)) == []
    assert skipped.skipped == {"unreadable_file": 1}
    # whole frames are read whole: two frames, a skippable frame between them
    half = len(data) // 2
    cut_at = data.rfind(b"\n", 0, half) + 1
    skippable = (0x184D2A53).to_bytes(4, "little") + (3).to_bytes(4, "little") + b"abc"
    two = tmp_path / "two" / "two.jsonl.zst"
    two.parent.mkdir()
    compress = zstandard.ZstdCompressor(write_checksum=True).compress
    two.write_bytes(compress(data[:cut_at]) + skippable + compress(data[cut_at:]))
    for opts in ({}, STREAM):
        got = read_all(Corpus(two, **opts))
        assert got.get_column("id").to_list() == [r["id"] for r in records]
