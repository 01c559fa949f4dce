"""The runner: in-process, process pool and Ray give the same outputs; killed runs resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import polars as pl
import pytest
from conftest import write_jsonl

from assay.exec.runner import LocalRunner, RayRunner, make_runner
from assay.io.corpus import Corpus
from assay.io.shards import CorpusError
from assay.selection.doc_stats import DocStatsScorer
from assay.selection.score import score_corpus


def _outputs(folder: Path) -> dict[str, pl.DataFrame]:
    return {
        p.relative_to(folder).as_posix(): pl.read_parquet(p)
        for p in sorted(folder.rglob("*.parquet"))
        if "_" not in p.parts[-2]
    }


def test_pool_and_in_process_give_identical_outputs_and_stats(
    tmp_path: Path, demo_dir: Path
) -> None:
    corpus = Corpus(demo_dir / "train")
    one = score_corpus(DocStatsScorer(), corpus, tmp_path / "one", runner=LocalRunner(workers=1))
    two = score_corpus(DocStatsScorer(), corpus, tmp_path / "two", runner=LocalRunner(workers=2))
    a, b = _outputs(tmp_path / "one"), _outputs(tmp_path / "two")
    assert list(a) == [f"{s.stem}.parquet" for s in corpus.shards]
    assert a.keys() == b.keys() and all(a[k].equals(b[k]) for k in a)
    for p, q in [(tmp_path / "one" / k, tmp_path / "two" / k) for k in a]:
        assert p.read_bytes() == q.read_bytes()
    assert one.docs_out == two.docs_out == 360
    stats = (tmp_path / "two" / "_stats.json").read_text()
    assert '"docs_out": 360' in stats and '"ran": 4' in stats
    assert sorted(p.name for p in (tmp_path / "two" / "_stats").iterdir()) == sorted(
        f"{s.name}.json" for s in corpus.shards
    )


def test_finished_shards_are_skipped_and_overwrite_redoes_them(
    tmp_path: Path, demo_dir: Path
) -> None:
    corpus = Corpus(demo_dir / "train")
    score_corpus(DocStatsScorer(), corpus, tmp_path / "s")
    first = tmp_path / "s" / f"{corpus.shards[0].stem}.parquet"
    mtime = first.stat().st_mtime_ns
    again = score_corpus(DocStatsScorer(), corpus, tmp_path / "s")
    assert (again.ran, again.resumed) == (0, 4)
    assert again.docs_out == 360  # stats of resumed shards are read back
    assert first.stat().st_mtime_ns == mtime
    redo = score_corpus(DocStatsScorer(), corpus, tmp_path / "s", overwrite=True)
    assert (redo.ran, redo.resumed) == (4, 0)


def test_errors_from_pool_workers_keep_file_and_line(
    tmp_path: Path, demo_records: list[dict]
) -> None:
    recs = [{"id": r["id"], "text": r["text"]} for r in demo_records]
    for k in range(3):
        write_jsonl(tmp_path / "in" / f"s{k}.jsonl", recs[k * 20 : (k + 1) * 20])
    bad = write_jsonl(
        tmp_path / "in" / "s3.jsonl", recs[60:70], raw_lines={4: b'{"id": "x", "text": '}
    )
    with pytest.raises(CorpusError, match=r"s3\.jsonl, line 5: malformed JSON") as info:
        score_corpus(
            DocStatsScorer(),
            Corpus(tmp_path / "in"),
            tmp_path / "out",
            runner=LocalRunner(workers=2),
        )
    assert info.value.path == str(bad.resolve()) and info.value.line == 5
    # the shards that finished are kept, the failed one left nothing behind
    assert not (tmp_path / "out" / "s3.parquet").exists()
    assert not list((tmp_path / "out").glob(".tmp-*"))
    skip = score_corpus(
        DocStatsScorer(), Corpus(tmp_path / "in", on_error="skip"), tmp_path / "out"
    )
    assert skip.skipped == {"malformed_json": 1} and skip.docs_out == 69


SLOW_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from assay.io.corpus import Corpus
    from assay.selection.score import score_corpus
    from assay.selection.doc_stats import DocStatsScorer

    class Slow(DocStatsScorer):
        def score_table(self, texts):
            time.sleep(0.05)
            return super().score_table(texts)

    score_corpus(Slow(), Corpus(sys.argv[1], batch_rows=16), sys.argv[2])
    """
)


def test_a_killed_run_resumes_to_the_same_outputs(tmp_path: Path, demo_dir: Path) -> None:
    corpus = Corpus(demo_dir / "train")
    out = tmp_path / "killed"
    script = tmp_path / "slow.py"
    script.write_text(SLOW_SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(demo_dir / "train"), str(out)],
        env={**os.environ, "ASSAY_PROGRESS": "0"},
    )
    deadline = time.time() + 120
    while time.time() < deadline and (
        len(list(out.glob("[!.]*.parquet"))) < 2 or not list(out.glob(".tmp-*"))
    ):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = sorted(out.glob("[!.]*.parquet"))
    assert 2 <= len(done) < len(corpus.shards), "the run should have been killed mid-way"
    for p in done:  # what exists is whole
        assert pl.read_parquet(p).height == 90
    assert list(out.glob(".tmp-*")), "the shard in flight left its temporary file"

    resumed = score_corpus(DocStatsScorer(), corpus, out)
    assert resumed.resumed == len(done) and resumed.ran == len(corpus.shards) - len(done)
    assert not list(out.glob(".tmp-*")), "stale temporary files of the dead run are removed"
    fresh = tmp_path / "fresh"
    score_corpus(DocStatsScorer(), corpus, fresh)
    a, b = _outputs(out), _outputs(fresh)
    assert a.keys() == b.keys() and all(a[k].equals(b[k]) for k in a)


def test_make_runner_validates_kind() -> None:
    assert isinstance(make_runner("local", 2), LocalRunner)
    with pytest.raises(ValueError, match="unknown runner 'slurm'"):
        make_runner("slurm")


@pytest.mark.slow
def test_ray_runner_matches_local_and_reports_errors(
    tmp_path: Path, demo_dir: Path, demo_records: list[dict]
) -> None:
    ray = pytest.importorskip("ray")
    try:
        corpus = Corpus(demo_dir / "train")
        runner = RayRunner(workers=2, progress=False)
        result = score_corpus(DocStatsScorer(), corpus, tmp_path / "ray", runner=runner)
        score_corpus(DocStatsScorer(), corpus, tmp_path / "local")
        a, b = _outputs(tmp_path / "ray"), _outputs(tmp_path / "local")
        assert result.docs_out == 360 and a.keys() == b.keys() and all(a[k].equals(b[k]) for k in a)
        # tasks ran in Ray worker processes, not here
        assert ray.is_initialized()

        write_jsonl(
            tmp_path / "bad" / "s.jsonl",
            [{"id": "a", "text": demo_records[0]["text"]}],
            raw_lines={0: b"{oops"},
        )
        with pytest.raises(CorpusError, match=r"s\.jsonl, line 1: malformed JSON"):
            score_corpus(
                DocStatsScorer(), Corpus(tmp_path / "bad"), tmp_path / "bad_out", runner=runner
            )
    finally:
        ray.shutdown()


class DyingTask:
    """A task whose worker process exits abruptly, as an out-of-memory kill would."""

    def output_name(self, shard):
        return f"{shard.stem}.txt"

    def __call__(self, shard, out):
        os._exit(3)


def test_a_dead_worker_is_explained(tmp_path: Path, demo_dir: Path) -> None:
    with pytest.raises(RuntimeError, match="a worker process died"):
        LocalRunner(workers=2, progress=False).run(
            DyingTask(), Corpus(demo_dir / "train").shards, tmp_path / "out"
        )
    assert not list((tmp_path / "out").glob("*.txt"))


def test_map_runs_independent_jobs_in_a_pool_in_order() -> None:
    items = [-3, 1, -2, 5]
    assert LocalRunner(workers=1).map(abs, items) == [3, 1, 2, 5]
    assert LocalRunner(workers=2).map(abs, items) == [3, 1, 2, 5]


@pytest.mark.parametrize(
    ("address", "env", "expected"),
    [
        (None, None, {"address": "local", "num_cpus": 2}),  # never the latest cluster started here
        (None, "local", {"address": "local", "num_cpus": 2}),
        (None, "10.0.0.5:6379", {}),  # RAY_ADDRESS: that cluster, its own CPUs
        ("10.0.0.5:6379", None, {"address": "10.0.0.5:6379"}),
    ],
)
def test_ray_runner_starts_its_own_instance_unless_given_an_address(
    monkeypatch: pytest.MonkeyPatch, address: str | None, env: str | None, expected: dict
) -> None:
    ray = pytest.importorskip("ray")
    calls: list[dict] = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw))
    if env is None:
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
    else:
        monkeypatch.setenv("RAY_ADDRESS", env)
    RayRunner(address=address, workers=2, progress=False)._ensure_ray()
    (kwargs,) = calls
    assert {k: kwargs[k] for k in ("address", "num_cpus") if k in kwargs} == expected
    assert ("_node_ip_address" in kwargs) == ("num_cpus" in expected)  # loopback when started here
