"""Readable logs: progress outside a terminal is a log line every few seconds (done/total, rate,
time left); `--quiet`, `--verbose` and `--no-progress`; worker processes log as the parent;
`--no-progress` hides every bar, other libraries' too, in a terminal."""

from __future__ import annotations

import logging
import os
import pty
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from assay.cli import app
from assay.util.log import StderrHandler
from assay.util.progress import THIRD_PARTY_ENV, ProgressBar, progress_hidden

#: a progress line of the runner: done/total shards, documents, their rate, elapsed, time left
RUNNER_LINE = re.compile(
    r"INFO assay\.util\.progress: score:doc_stats: (\d)/4 shards · [\d,]+ docs · [\d,]+ docs/s"
    r" · \d+:\d\d:\d\d elapsed · (\d+:\d\d:\d\d left|time left unknown|finished)$"
)
MATERIALIZE = ["--mixture", "natural", "--vocab-size", "300"]
BAR_MARKS = ("━", "╺", "%|", "it/s", "\x1b[?25l")  # rich's bar, tqdm's, a hidden cursor


def _env(**extra: str) -> dict[str, str]:
    env = {"PATH": "/usr/bin:/bin", "COLUMNS": "120", "PYTHONPATH": os.getcwd()}
    env.update(extra)
    return env


def test_progress_outside_a_terminal_is_periodic_log_lines_and_workers_log(
    demo_dir: Path, tmp_path: Path
) -> None:
    """stderr a pipe (a batch job's log): no bar, progress lines with a rate and the time left;
    --verbose shows the DEBUG lines of the pool's worker processes, marked with their pid."""
    args = ["--verbose", "score", str(demo_dir / "train"), "--scorer", "doc_stats"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "assay.cli", *args, "--out", str(tmp_path / "s"), "--workers", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(ASSAY_PROGRESS_INTERVAL="0"),
    )
    stdout, stderr = proc.communicate()
    assert proc.returncode == 0, stderr
    assert "scored 360 documents" in stdout
    lines = stderr.splitlines()
    progress = [m for m in map(RUNNER_LINE.search, lines) if m]
    assert len(progress) >= 2, stderr
    assert any(m[2].endswith(" left") for m in progress)  # an estimate of the time left
    assert progress[-1][1] == "4" and progress[-1][2] == "finished"
    assert "INFO assay.exec.runner: score:doc_stats: 4 shards, 4 to run, 0 already done" in stderr
    assert re.search(r"INFO assay\.recipe\.pipeline: step score: done in [\d.]+ s", stderr)
    workers = re.findall(r"DEBUG assay\.exec\.runner \[pid (\d+)\]: shard \S+: 90 documents in", stderr)  # fmt: skip
    assert len(workers) == 4 and str(proc.pid) not in workers
    assert not any(mark in stderr for mark in BAR_MARKS)


def _invoke(args: list[str]) -> tuple[str, str]:
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout, result.stderr


def test_quiet_verbose_and_no_progress(
    demo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASSAY_PROGRESS", "1")  # the suite turns progress off
    monkeypatch.setenv("ASSAY_PROGRESS_INTERVAL", "0")
    handlers = list(logging.getLogger().handlers)
    score = ["score", str(demo_dir / "train"), "--scorer", "doc_stats"]

    out, err = _invoke([*score, "--out", str(tmp_path / "a")])
    assert "INFO assay.recipe.pipeline: step score: start" in err
    assert any(RUNNER_LINE.search(line) for line in err.splitlines())
    assert "DEBUG" not in err and "━" not in err

    out, err = _invoke(["--quiet", *score, "--out", str(tmp_path / "b")])
    assert "scored 360 documents" in out  # the result still goes to stdout
    assert err == ""  # no progress, no INFO line

    out, err = _invoke(["--verbose", *score, "--out", str(tmp_path / "c")])
    assert "DEBUG assay.exec.runner: shard news-00000.jsonl.gz: 90 documents in" in err

    for no_progress in (["--no-progress", *score], [*score, "--no-progress"]):
        out, err = _invoke([*no_progress, "--out", str(tmp_path / "d"), "--overwrite"])
        assert "INFO assay.exec.runner: score:doc_stats: 4 shards" in err
        assert "assay.util.progress" not in err

    # the command line puts logging and the environment back as they were
    assert logging.getLogger().handlers == handlers
    assert not any(isinstance(h, StderrHandler) for h in handlers)
    assert all(k not in os.environ for k in THIRD_PARTY_ENV)


def test_progress_line_has_rate_and_time_left(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASSAY_PROGRESS", "log")
    monkeypatch.setenv("ASSAY_PROGRESS_INTERVAL", "0")
    caplog.set_level(logging.INFO, logger="assay")
    with ProgressBar("embed", 10, 0, "", unit="texts") as bar:
        bar.update(advance=4)
        bar.update(advance=4)
    lines = [r.getMessage() for r in caplog.records if r.name == "assay.util.progress"]
    assert len(lines) == 3
    assert re.fullmatch(
        r"embed: 4/10 texts · [\d,.]+ texts/s · \d+:\d\d:\d\d elapsed · \d+:\d\d:\d\d left",
        lines[0],
    )
    assert lines[1].startswith("embed: 8/10 texts") and lines[2].endswith("elapsed · finished")

    caplog.clear()
    with progress_hidden():
        assert all(os.environ.get(k) == v for k, v in THIRD_PARTY_ENV.items())
        with ProgressBar("embed", 10, 0, "", unit="texts") as bar:
            bar.update(advance=4)
    with ProgressBar("embed", 10, 0, "", enabled=False) as bar:
        bar.update(advance=4)
    assert not caplog.records


def _in_terminal(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run `args` with stderr a pseudo-terminal; returns the exit code and what it showed."""
    master, slave = pty.openpty()
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(master, 1 << 16)
            except OSError:  # the terminal closed
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        proc = subprocess.run(args, stdout=subprocess.DEVNULL, stderr=slave, env=env)
    finally:
        os.close(slave)
        reader.join(timeout=30)
        os.close(master)
    return proc.returncode, b"".join(chunks).decode(errors="replace")


def test_no_progress_hides_every_bar_in_a_terminal(demo_dir: Path, tmp_path: Path) -> None:
    """Training a tokenizer and tokenizing the corpus (a token cache, as train_proxy builds it)
    in a terminal with --no-progress: log lines, and no bar of assay's or of another library."""
    materialize = ["materialize", str(demo_dir / "train"), *MATERIALIZE, "--no-progress"]
    rc, shown = _in_terminal(
        [sys.executable, "-m", "assay.cli", *materialize, "--out", str(tmp_path / "m")],
        _env(TERM="xterm"),
    )
    assert rc == 0, shown
    assert "INFO assay.common.tokenizer: training a 300-token BPE tokenizer" in shown
    assert "INFO assay.exec.runner: tokenize: done: 4 shards ran" in shown
    assert not any(mark in shown for mark in BAR_MARKS), shown
