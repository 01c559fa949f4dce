"""assay's C parser of flat JSON lines (assay/io/_jsonl.c) against pyarrow's strict reader.

Whatever the C parser reads must come out exactly as pyarrow reads it (columns, order, types,
values, nulls); whatever it does not read (nested values, anything pyarrow or JSON refuses) it
must hand back (None), so that pyarrow and then the line-by-line reader decide. The tests also
read whole corpora with the parser and without it: same rows, same ids, same errors.
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import polars as pl
import pytest
from conftest import read_all, write_jsonl
from polars.testing import assert_frame_equal

from assay.io import flat, read
from assay.io.corpus import Corpus
from assay.io.flat import parse_flat
from assay.io.read import parse_jsonl
from assay.io.shards import CorpusError, ShardStats


def test_the_c_parser_is_built() -> None:
    # `make install` builds it where a C compiler exists (the CI machine has one); without it
    # assay falls back to pyarrow, and every other test here would test nothing.
    assert flat.AVAILABLE


def _same_as_pyarrow(block: bytes) -> pl.DataFrame:
    got = parse_flat(block)
    assert got is not None, block[:200]
    assert_frame_equal(got, parse_jsonl(block, use_threads=False))
    return got


def test_real_records_parse_as_pyarrow_parses_them(demo_records: list[dict]) -> None:
    records = demo_records[:400]
    compact = b"\n".join(json.dumps(r, ensure_ascii=False).encode() for r in records) + b"\n"
    ascii_ = b"\n".join(json.dumps(r).encode() for r in records)  # \uXXXX escapes, no last \n
    for block in (compact, ascii_):
        df = _same_as_pyarrow(block)
        assert df.get_column("text").to_list() == [r["text"] for r in records]
        assert df.columns == list(records[0])


ACCEPTED = {
    "types": b'{"s":"a","i":1,"d":1.5,"b":true,"z":null}\n{"s":"b","i":-2,"d":2,"b":false,"z":null}',
    "int then fraction": b'{"n":1}\n{"n":2.5}\n{"n":-0}\n{"n":1e3}\n{"n":9007199254740993}',
    "missing keys and a late field": b'{"a":"x"}\n{"b":"y"}\n{"a":null,"b":"z","c":3}',
    "nulls first": b'{"a":null}\n{"a":null}\n{"a":"v"}',
    "escapes": rb'{"t":"q\" b\\ s\/ \b\f\n\r\t \u00e9 \u20ac \ud83d\ude00 \u0000 \u001f"}',
    "raw UTF-8": '{"t":"café 😀 한국어 ﷽","é":"key"}'.encode(),
    "whitespace": b' \t{ "a" : "x" , "b" :1 } \r\n\r\n  \n{"a":"y","b":2}\r\n',
    "negative and large": b'{"n":-9223372036854775808}\n{"n":9223372036854775807}',
    "exponents": b'{"x":1E+2}\n{"x":-1.5e-300}\n{"x":0.1}\n{"x":123456789.123456789e-5}',
    "empty string and text": b'{"id":"","text":""}',
    "a long plain run": b'{"t":"' + b"abcdefgh" * 5000 + b'"}',
}


@pytest.mark.parametrize("case", list(ACCEPTED))
def test_flat_records_are_read_as_pyarrow_reads_them(case: str) -> None:
    _same_as_pyarrow(ACCEPTED[case])


def test_an_all_null_column_has_the_null_type() -> None:
    df = _same_as_pyarrow(b'{"a":"x","z":null}\n{"a":"y"}')
    assert df.schema["z"] == pl.Null


HANDED_BACK = {
    "nested object": b'{"a":"x","m":{"k":1}}',
    "list": b'{"a":"x","l":[1,2]}',
    "duplicate key": b'{"text":"a","text":"b"}',
    "lone high surrogate": b'{"t":"\\ud800"}',
    "lone low surrogate": b'{"t":"x\\udc00y"}',
    "high surrogate then not low": b'{"t":"\\ud800\\u0041"}',
    "invalid UTF-8": b'{"t":"\xff"}',
    "overlong UTF-8": b'{"t":"\xc0\x80"}',
    "UTF-8 surrogate": b'{"t":"\xed\xa0\x80"}',
    "beyond U+10FFFF": b'{"t":"\xf4\x90\x80\x80"}',
    "truncated UTF-8": b'{"t":"\xe2\x82"}',
    "raw control character": b'{"t":"a\x01b"}',
    "raw tab": b'{"t":"a\tb"}',
    "unknown escape": b'{"t":"\\q"}',
    "short unicode escape": b'{"t":"\\u12"}',
    "string and number": b'{"t":"a"}\n{"t":42}',
    "number and boolean": b'{"t":1}\n{"t":true}',
    "leading zero": b'{"n":01}',
    "bare fraction": b'{"n":1.}',
    "bare exponent": b'{"n":1e}',
    "int beyond int64": b'{"n":9223372036854775808}',
    "double overflow": b'{"n":1e400}',
    "NaN": b'{"n":NaN}',
    "trailing comma": b'{"a":"x",}',
    "single quotes": b"{'a':'x'}",
    "two objects on a line": b'{"a":"x"}{"a":"y"}',
    "text after the object": b'{"a":"x"} x',
    "not an object": b"[1, 2]",
    "a number line": b"5",
    "unterminated string": b'{"a":"x',
    "unterminated object": b'{"a":"x"',
    "record split across lines": b'{"a":\n"x"}',
    "escaped key": b'{"t\\u0065xt":"v"}',
    "form feed line": b'{"a":"x"}\n\x0c\n',
    "records that are {}": b"{}\n{}",
    "bad literal": b'{"a":nul}',
}


@pytest.mark.parametrize("case", list(HANDED_BACK))
def test_what_the_parser_does_not_read_goes_back_to_pyarrow(case: str) -> None:
    assert parse_flat(HANDED_BACK[case]) is None


def _mutated(rng: random.Random, line: bytes, pieces: list[bytes]) -> bytes:
    b = bytearray(line)
    for _ in range(rng.randint(1, 3)):
        if not b:
            break
        i, op = rng.randrange(len(b)), rng.random()
        if op < 0.3:
            b[i] = rng.choice(b'"\\{}[],:0123456789eE.-+ntfu\x00\x7f\x80\xc3\xa9\xff \t\r')
        elif op < 0.5:
            del b[i]
        elif op < 0.7:
            b.insert(i, rng.choice(b'"\\{}[],: \xc3'))
        else:
            b[i:i] = rng.choice(pieces)[1:-1] + b","
    return bytes(b)


def test_mutated_blocks_never_read_differently_from_pyarrow(demo_records: list[dict]) -> None:
    """Blocks of real lines and hostile ones, mutated at random (seeded): where the C parser
    reads one it equals pyarrow's result, and it never reads one that pyarrow refuses."""
    rng = random.Random(0)
    lines = [json.dumps(r, ensure_ascii=rng.random() < 0.5).encode() for r in demo_records[:300]]
    pieces = [*ACCEPTED.values(), *HANDED_BACK.values()]
    read_by_c = 0
    for _ in range(600):
        block_lines = [rng.choice(lines) for _ in range(rng.randint(1, 8))]
        block_lines += [rng.choice(pieces) for _ in range(rng.randint(0, 2))]
        rng.shuffle(block_lines)
        if rng.random() < 0.7:
            k = rng.randrange(len(block_lines))
            block_lines[k] = _mutated(rng, block_lines[k], pieces)
        block = b"\n".join(block_lines) + (b"\n" if rng.random() < 0.8 else b"")
        got = parse_flat(block)
        if got is None:
            continue
        read_by_c += 1
        try:
            expected = parse_jsonl(block, use_threads=False)
        except Exception as e:
            pytest.fail(f"the C parser read a block pyarrow refuses ({e}): {block[:300]!r}")
        assert_frame_equal(got, expected)
    assert read_by_c > 150  # the comparison is exercised, not skipped


# ---------------------------------------------------------------------------------------------
# Whole corpora, with the parser and without it


def _read(path: Path, **options) -> tuple[pl.DataFrame, dict]:
    corpus = Corpus(path, on_error="skip", **options)
    stats = ShardStats("s")
    frames = list(corpus.shards[0].read(corpus.options, stats))
    return pl.concat(frames, how="diagonal_relaxed"), stats.to_dict()


@pytest.mark.parametrize("compress", [False, True])
def test_a_corpus_reads_the_same_with_and_without_the_parser(
    tmp_path: Path, demo_records: list[dict], monkeypatch: pytest.MonkeyPatch, compress: bool
) -> None:
    records = [dict(r, n=i, score=i / 7) for i, r in enumerate(demo_records[:300])]
    records[5]["extra"] = {"nested": True}  # a block pyarrow reads
    raw = {
        20: b'{"id": "dup", "text": "a", "text": "b"}',
        40: b'{"id": "sur", "text": "\\ud800"}',
        60: b'{"id": "num", "text": 42}',
        80: b'{"id": "broken", "text": "x',
        100: b"",
        120: b'{"id": "empty", "text": "  "}',
    }
    path = write_jsonl(tmp_path / "c" / "s.jsonl", records, raw_lines=raw)
    if compress:
        gz = path.with_suffix(".jsonl.gz")
        gz.write_bytes(gzip.compress(path.read_bytes()))
        path.unlink()
        path = gz
    small = {"whole_file_bytes": 0, "block_bytes": 4096}
    with_c = _read(path, **small)
    assert with_c[1]["skipped"]  # the hostile lines were met
    monkeypatch.setattr(flat, "_jsonl", None)
    monkeypatch.setattr(read, "FLAT_PARSER", False)
    for options in (small, {}):  # pyarrow's blocks, and pyarrow's whole-file parse
        without = _read(path, **options)
        assert_frame_equal(with_c[0], without[0])
        assert {k: v for k, v in with_c[1].items() if k != "seconds"} == {
            k: v for k, v in without[1].items() if k != "seconds"
        }


def test_errors_name_the_same_line_with_and_without_the_parser(
    tmp_path: Path, real_texts: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    records = [{"id": f"r{i}", "text": t} for i, t in enumerate(real_texts[:50])]
    path = write_jsonl(tmp_path / "c" / "s.jsonl", records, raw_lines={37: b'{"text": "\\udc00"}'})
    for parser in (True, False):
        if not parser:
            monkeypatch.setattr(flat, "_jsonl", None)
            monkeypatch.setattr(read, "FLAT_PARSER", False)
        for options in ({}, {"whole_file_bytes": 0, "block_bytes": 2048}):
            with pytest.raises(CorpusError, match=r"s\.jsonl, line 38: "):
                read_all(Corpus(path, **options))
