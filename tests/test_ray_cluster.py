"""Two Ray nodes on this machine (a head and a worker with a pretend GPU) score and select
exactly as a local run does, and a task whose model may use a GPU asks Ray for one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import write_jsonl

from assay.exec.runner import RayRunner
from assay.io.corpus import Corpus
from assay.selection.doc_stats import DocStatsScorer
from assay.selection.perplexity import PerplexityScorer
from assay.selection.score import score_corpus
from assay.selection.select import select

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'assay[ray]')")


@pytest.fixture
def two_nodes(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A head node and a worker node of one CPU each (the worker with one pretend GPU), both
    on the loopback interface, without a dashboard; shut down whatever happens."""
    from ray._private import ray_constants
    from ray.cluster_utils import Cluster

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    # Ray replaces a loopback node address by the host's external IP unless this is off; the
    # variable reaches the nodes' processes, the constant this process (see RayRunner).
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)
    if ray.is_initialized():
        ray.shutdown()
    local = {"node_ip_address": "127.0.0.1", "num_cpus": 1}
    cluster = Cluster()
    try:
        cluster.add_node(**local, include_dashboard=False)
        cluster.add_node(**local, num_gpus=1)
        cluster.wait_for_nodes()
        yield cluster.address
    finally:
        ray.shutdown()
        cluster.shutdown()


def _frames(folder: Path, pattern: str) -> dict[str, pl.DataFrame]:
    read = pl.read_parquet if pattern.endswith("parquet") else pl.read_ndjson
    return {p.name: read(p) for p in sorted(folder.glob(pattern))}


def _tiny_lm(folder: Path, tokenizer) -> str:
    from assay.proxies.model import build_model, save_model

    model = build_model("tiny", tokenizer.vocab_size, 128, seed=1)
    return str(save_model(model, folder, tokenizer))


@pytest.mark.slow
def test_two_ray_nodes_score_and_select_as_a_local_run(
    two_nodes: str,
    tmp_path: Path,
    demo_dir: Path,
    demo_records: list[dict],
    proxy_tokenizer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    requested: list[dict] = []  # the options of every Ray task the runner declares
    remote = ray.remote

    def recording_remote(*args, **options):
        requested.append(options)
        return remote(*args, **options)

    monkeypatch.setattr(ray, "remote", recording_remote)
    corpus = Corpus(demo_dir / "train")
    runner = RayRunner(address=two_nodes, progress=False)

    stats = score_corpus(DocStatsScorer(), corpus, tmp_path / "ray" / "scores", runner=runner)
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    assert requested[-1]["num_gpus"] == 0  # document statistics need no GPU
    score_corpus(DocStatsScorer(), corpus, tmp_path / "local" / "scores")
    ray_scores = _frames(tmp_path / "ray" / "scores", "*.parquet")
    local_scores = _frames(tmp_path / "local" / "scores", "*.parquet")
    assert stats.docs_out == 360 and ray_scores.keys() == local_scores.keys()
    assert all(ray_scores[k].equals(local_scores[k]) for k in ray_scores)

    kept = {}
    for where, run in (("ray", runner), ("local", None)):
        result = select(
            corpus, tmp_path / where / "scores", tmp_path / where / "selected", runner=run,
            column="alpha_frac", policy="gumbel", keep=0.3, seed=7,
        )  # fmt: skip
        kept[where] = _frames(tmp_path / where / "selected", "*.jsonl*")
        assert result.kept_docs == 108
    assert kept["ray"].keys() == kept["local"].keys()
    assert all(kept["ray"][k].equals(kept["local"][k]) for k in kept["ray"])

    # A language model on device "auto" asks for a GPU on a cluster that has one: its tasks can
    # only run on the worker node (whose pretend GPU torch cannot use, so they run on its CPU).
    # Short documents: a language model on a loaded CPU is slow.
    for i in range(2):
        records = [{**r, "text": r["text"][:400]} for r in demo_records[i::40]]
        write_jsonl(tmp_path / "short" / f"s{i}.jsonl", records)
    short = Corpus(tmp_path / "short")
    scorer = PerplexityScorer(_tiny_lm(tmp_path / "lm", proxy_tokenizer), seq_len=128)
    score_corpus(scorer, short, tmp_path / "ray" / "ppl", runner=runner)
    assert requested[-1]["num_gpus"] == 1
    score_corpus(scorer, short, tmp_path / "local" / "ppl")
    a, b = (
        _frames(tmp_path / "ray" / "ppl", "*.parquet"),
        _frames(tmp_path / "local" / "ppl", "*.parquet"),
    )
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].get_column("id").equals(b[k].get_column("id"))
        np.testing.assert_allclose(
            a[k].get_column("ppl_bpb"), b[k].get_column("ppl_bpb"), rtol=1e-5
        )
