"""The error hierarchy through the real entry point: an `AssayError` is one line and exit code 2,
`--debug` raises it with its traceback, and any other exception (a bug) is never swallowed."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import write_jsonl

import assay.exec.stats
from assay.cli.main import main
from assay.errors import AssayError, MissingError

RECORDS = [
    {
        "id": "news-1",
        "text": "The city council approved a new budget on Tuesday, adding funds for two "
        "libraries and a bus route that connects the harbour to the university.",
        "domain": "news",
    },
    {
        "id": "news-2",
        "text": "Heavy rain flooded several roads overnight; the weather service expects the "
        "river to peak on Thursday before the water slowly recedes.",
        "domain": "news",
    },
    {
        "id": "math-1",
        "text": "Let n be a positive integer. Show that the sum of the first n odd numbers "
        "equals n squared, for example 1 + 3 + 5 = 9.",
        "domain": "math",
    },
    {
        "id": "code-1",
        "text": "def mean(values):\n    total = sum(values)\n    return total / len(values)\n",
        "domain": "code",
    },
]


@pytest.fixture(autouse=True)
def _no_debug_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ASSAY_DEBUG", raising=False)


def _exit_code(argv: list[str]) -> int | str | None:
    with pytest.raises(SystemExit) as e:
        main(argv)
    return e.value.code


def _assert_one_line_error(stderr: str, *needles: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    for needle in needles:
        assert needle in lines[0], stderr


def test_missing_corpus_is_one_line_and_exit_code_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert _exit_code(["stats", "missing.jsonl"]) == 2
    _assert_one_line_error(capsys.readouterr().err, "corpus file not found", "missing.jsonl")


def test_missing_corpus_with_a_long_path_stays_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A message longer than the terminal is one line still (no wrapping inside the path)."""
    missing = tmp_path / "a-folder-with-a-rather-long-name" / "and-a-long-shard-name.jsonl"
    assert _exit_code(["stats", str(missing)]) == 2
    _assert_one_line_error(capsys.readouterr().err, "corpus file not found", str(missing))


def test_debug_raises_the_assay_error(tmp_path: Path) -> None:
    missing = tmp_path / "missing.jsonl"
    with pytest.raises(MissingError, match="corpus file not found") as e:
        main(["--debug", "stats", str(missing)])
    assert isinstance(e.value, AssayError)
    assert isinstance(e.value, FileNotFoundError)  # still the builtin a caller would expect


def test_a_bug_is_not_swallowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_jsonl(tmp_path / "corpus" / "docs.jsonl", RECORDS)

    def broken(*args: object, **kwargs: object) -> None:
        return 1 / 0  # type: ignore[return-value]

    monkeypatch.setattr(assay.exec.stats, "corpus_stats", broken)
    with pytest.raises(ZeroDivisionError):
        main(["stats", str(path)])
    assert "error:" not in capsys.readouterr().err


def test_the_same_corpus_works_without_the_bug(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The corpus of the test above is valid: only the injected bug made that command fail."""
    path = write_jsonl(tmp_path / "corpus" / "docs.jsonl", RECORDS)
    main(["stats", str(path)])  # returns without sys.exit on success
    out = capsys.readouterr()
    assert "4" in out.out and "documents" in out.out
    assert "error:" not in out.err
