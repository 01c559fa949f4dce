"""benchmarks/scale.py: its corpus is deterministic with unique ids, and its projection adds up."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from assay.io.corpus import Corpus

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "scale.py"


@pytest.fixture
def scale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, real_texts: list[str]) -> ModuleType:
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("scale_benchmark", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "scale_benchmark", module)
    spec.loader.exec_module(module)
    sentences = [s.strip() + "." for t in real_texts for s in t.split(". ") if len(s) > 20]
    monkeypatch.setattr(module, "ROOT", tmp_path)
    monkeypatch.setattr(module, "SHARD_DOCS", 40)
    monkeypatch.setattr(module, "_sentences", lambda: (sentences, ["news"] * len(sentences)))
    return module


def test_the_corpus_is_deterministic_with_unique_ids_and_grows_by_shards(
    scale: ModuleType, tmp_path: Path
) -> None:
    small = Corpus(scale.build_corpus(80))
    large = Corpus(scale.build_corpus(200))
    docs = [b for b in large.iter_batches()]
    ids = [i for b in docs for i in b.get_column("id").to_list()]
    assert len(ids) == len(set(ids)) == 200 and len(large.shards) == 5
    texts = [t for b in docs for t in b.get_column("text").to_list()]
    assert all(t.count(". ") >= 1 for t in texts) and len(set(texts)) > 190
    # the 80-document corpus is the first two shards of the 200-document one, byte for byte
    for a, b in zip(small.shards, large.shards[:2], strict=True):
        assert Path(a.path).read_bytes() == Path(b.path).read_bytes()
    before = Path(small.shards[0].path).read_bytes()
    (tmp_path / "corpus-80" / "_done").unlink()
    scale.build_corpus(80)  # built again: the same bytes
    assert Path(small.shards[0].path).read_bytes() == before


def test_the_projection_spreads_the_per_document_work_and_keeps_the_decision_serial(
    scale: ModuleType,
) -> None:
    def row(lo: float, hi: float, **extra: float) -> dict:
        return {
            "100000": {"seconds": lo, "largest_process_mib": 512.0},
            "1000000": {"seconds": hi, "largest_process_mib": 512.0, **extra},
        }

    rows = {
        "score": row(12.0, 102.0),  # 2 s fixed, 100 us a document on 2 workers
        "betr_fit": row(40.0, 43.0),  # a fixed sample: what it took, in one process
        "select": row(12.0, 102.0, serial_seconds=10.0, decision_bytes_per_doc=40.0),
    }
    out = scale.project(rows, [100_000, 1_000_000], 2, 100_000_000, 64, 4)["stages"]
    # 1e-4 s x 1e8 documents x 2 workers = 20,000 core-seconds: 312.5 s on 64 cores, + 2 s fixed
    assert out["score"]["one_machine_minutes"] == pytest.approx((2 + 20_000 / 64) / 60, abs=0.05)
    assert out["score"]["cluster_minutes"] == pytest.approx((2 + 20_000 / 256) / 60, abs=0.05)
    assert out["betr_fit"]["one_machine_minutes"] == out["betr_fit"]["cluster_minutes"] == 0.7
    assert out["betr_fit"]["one_machine_memory_gib"] == 0.5
    # the decision: 1e-5 s a document in one process, 1,000 s at 1e8 whatever the cores
    sel = out["select"]
    assert sel["one_machine_minutes"] > sel["cluster_minutes"] > 1000 / 60
    assert sel["one_machine_memory_gib"] == pytest.approx(32 + 40 * 1e8 / 2**30, abs=0.1)
