"""The LitGPT export: litdata token datasets read back (by an independent reader, and by litdata's
own StreamingDataset when it is installed) and the data module drawing blocks by the weights."""

from __future__ import annotations

import importlib.util
import itertools
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import yaml

from assay.export import IndexedFile, IndexedWriter, export_mixture
from assay.export.litdata_tokens import LitdataTokensWriter, read_litdata


def _docs(rng: np.random.Generator, n: int, lo: int, hi: int) -> list[np.ndarray]:
    return [rng.integers(lo, hi, size=int(rng.integers(1, 40))).astype(np.uint16) for _ in range(n)]


def _write(folder: Path, docs: list[np.ndarray], chunk_bytes: int, batch: int = 7) -> dict:
    w = LitdataTokensWriter(folder, chunk_bytes=chunk_bytes)
    for i in range(0, len(docs), batch):
        part = docs[i : i + batch]
        w.add_many(np.concatenate(part), np.array([len(d) for d in part]))
    return w.close()


def test_litdata_chunks_hold_every_document(tmp_path):
    docs = _docs(np.random.default_rng(0), 200, 0, 30_000)
    index = _write(tmp_path / "d", docs, chunk_bytes=600)
    assert len(index["chunks"]) > 5
    for c in index["chunks"]:  # a chunk closes before it passes the target
        assert c["chunk_bytes"] <= 600 + 4 * 2 or c["chunk_size"] == 1
    back = list(read_litdata(tmp_path / "d"))
    assert len(back) == len(docs)
    assert all(np.array_equal(a, b) for a, b in zip(back, docs, strict=True))
    assert sum(c["dim"] for c in index["chunks"]) == sum(len(d) for d in docs)
    # written again with fewer chunks: the old chunks are gone
    _write(tmp_path / "d", docs[:10], chunk_bytes=600)
    names = {p.name for p in (tmp_path / "d").iterdir()}
    assert names == {"index.json"} | {f"chunk-0-{i}.bin" for i in range(len(names) - 1)}
    assert len(list(read_litdata(tmp_path / "d"))) == 10


def test_litdata_streams_the_blocks(tmp_path):
    """litdata's own reader: TokensLoader cuts each chunk into whole blocks."""
    litdata = pytest.importorskip("litdata")
    docs = _docs(np.random.default_rng(1), 120, 0, 60_000)
    index = _write(tmp_path / "d", docs, chunk_bytes=1000)
    block = 9
    expected = []
    flat = iter(np.concatenate(docs))
    for c in index["chunks"]:
        tokens = np.fromiter(itertools.islice(flat, c["dim"]), dtype=np.int64)
        expected += [tuple(b) for b in tokens[: len(tokens) // block * block].reshape(-1, block)]
    ds = litdata.StreamingDataset(
        str(tmp_path / "d"), item_loader=litdata.TokensLoader(block_size=block), shuffle=False
    )
    got = [tuple(int(t) for t in ds[i]) for i in range(len(ds))]
    assert got == expected


@pytest.fixture(scope="module")
def two_domains(tmp_path_factory):
    """Megatron files whose ids tell the domain: a below 1000, b from 1000."""
    root = tmp_path_factory.mktemp("tree")
    rng = np.random.default_rng(2)
    for d, (lo, hi), n in (("a", (0, 1000), 400), ("b", (1000, 2000), 300)):
        docs = _docs(rng, n, lo, hi)
        for i, part in enumerate((docs[: n // 2], docs[n // 2 :])):
            with IndexedWriter(root / d / f"shard{i}_text_document", np.uint16) as w:
                w.add_many(np.concatenate(part), np.array([len(x) for x in part]))
    return root


def test_litgpt_export_rewrites_every_token(two_domains, tmp_path):
    summary = export_mixture({"a": 0.7, "b": 0.3}, two_domains, tmp_path / "x", to="litgpt",
                             budget=20_000, max_epochs=4, seed=5)  # fmt: skip
    for d in ("a", "b"):
        prefixes = sorted((two_domains / d).glob("*.idx"))
        source = [
            IndexedFile(p.with_suffix(""))[i]
            for p in prefixes
            for i in range(len(IndexedFile(p.with_suffix(""))))
        ]
        back = list(read_litdata(tmp_path / "x" / d))
        assert len(back) == len(source)
        assert all(np.array_equal(x, y) for x, y in zip(back, source, strict=True))
    config = yaml.safe_load((tmp_path / "x" / "litgpt.yaml").read_text())
    assert config["data"]["class_path"] == "assay_litgpt.AssayMixture"
    args = config["data"]["init_args"]
    assert args["data_path"] == str((tmp_path / "x").resolve())
    assert args["domains"] == ["a", "b"] and args["seed"] == 5
    assert args["weights"] == pytest.approx([summary["shares"]["a"], summary["shares"]["b"]])
    assert args["weights"] == pytest.approx([0.7, 0.3])
    assert config["train"] == {"max_tokens": 20_000}
    assert (tmp_path / "x" / "assay_litgpt.py").is_file()


def _load_module(path: Path, monkeypatch) -> types.ModuleType:
    """The exported data module; where LitGPT is not installed its two imports are given
    the bare bases they need (DataModule: a class with an __init__)."""
    try:
        import litgpt.data  # noqa: F401
    except ImportError:
        data = types.ModuleType("litgpt.data")
        data.DataModule = type("DataModule", (), {"__init__": lambda self: None})
        tok = types.ModuleType("litgpt.tokenizer")
        tok.Tokenizer = type("Tokenizer", (), {})
        monkeypatch.setitem(sys.modules, "litgpt", types.ModuleType("litgpt"))
        monkeypatch.setitem(sys.modules, "litgpt.data", data)
        monkeypatch.setitem(sys.modules, "litgpt.tokenizer", tok)
    spec = importlib.util.spec_from_file_location("assay_litgpt", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_litgpt_data_module_draws_by_the_weights(two_domains, tmp_path, monkeypatch):
    pytest.importorskip("litdata")
    export_mixture({"a": 0.8, "b": 0.2}, two_domains, tmp_path / "x", to="litgpt", seed=1)
    config = yaml.safe_load((tmp_path / "x" / "litgpt.yaml").read_text())
    module = _load_module(tmp_path / "x" / "assay_litgpt.py", monkeypatch)
    data = module.AssayMixture(**config["data"]["init_args"], num_workers=0)
    data.connect(batch_size=1, max_seq_length=15)
    loader = data.train_dataloader()
    domains = []
    for batch in itertools.islice(loader, 250):
        assert tuple(batch.shape) == (1, 16)
        ids = batch[0].tolist()
        assert all(i < 1000 for i in ids) or all(i >= 1000 for i in ids)  # one domain's block
        domains.append("a" if ids[0] < 1000 else "b")
    assert len(domains) == 250
    assert domains.count("a") / len(domains) == pytest.approx(0.8, abs=0.08)
