"""Materializing and exporting a mixture: budgets and epoch caps, Megatron's indexed format read
back (by an independent reader, and by megatron-core's own when it is installed), and each
trainer's configuration parsed as that trainer's code reads it."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from assay.common.budget import allocate_tokens
from assay.common.mixture import Mixture
from assay.errors import ConfigError, StateError
from assay.export import IndexedFile, IndexedWriter, export_mixture, materialize_mixture
from assay.export.raw import read_datatrove
from assay.io.corpus import Corpus

MIX = {"math": 0.5, "news": 0.3, "code": 0.2}


def test_allocation_caps_and_redistributes():
    tokens = {"a": 1000, "b": 100, "c": 5000}
    mix = Mixture({"a": 0.3, "b": 0.5, "c": 0.2})
    alloc = allocate_tokens(mix, tokens, 2000, max_epochs=2.0)
    assert alloc.budget == 2000
    assert alloc.tokens["b"] == 200 and alloc.capped == ["b"]  # 2 epochs of b, not 1000
    # the 800 tokens b could not take went to a and c in their 3:2 proportion
    assert alloc.tokens["a"] == 1080 and alloc.tokens["c"] == 720
    with pytest.raises(ConfigError, match="binds"):
        allocate_tokens(mix, tokens, 2000, max_epochs=2.0, on_cap="error")
    with pytest.raises(ConfigError, match="needs more than"):
        allocate_tokens(mix, tokens, 12_500, max_epochs=2.0)
    # a cap may bind only after another domain's excess reached it (a cascade)
    cascade = allocate_tokens(Mixture({"a": 0.5, "b": 0.5}), {"a": 10, "b": 1000}, 100, 2.0)
    assert cascade.tokens == {"a": 20, "b": 80}


@pytest.fixture(scope="module")
def sample(tmp_path_factory, demo_dir, token_cache):
    """Math needs 1.5 passes for its half of the budget; the cap is 2."""
    budget = int(token_cache.domains["math"].n_tokens * 1.5 / MIX["math"])
    out = tmp_path_factory.mktemp("mat") / "sample"
    manifest = materialize_mixture(
        Corpus(demo_dir / "train"),
        token_cache,
        MIX,
        out,
        budget=budget,
        max_epochs=2.0,
        formats=["text", "megatron", "datatrove"],
        seed=3,
    )
    return out, manifest, budget


def test_materialize_spends_the_budget_within_a_document(sample, token_cache):
    _, manifest, budget = sample
    assert set(manifest["domains"]) == set(MIX) and manifest["capped_domains"] == []
    for d, info in manifest["domains"].items():
        target = manifest["tokens_per_domain"][d]
        longest = int(np.diff(token_cache.domains[d].offsets).max())
        assert 0 <= info["tokens"] - target < longest, d
    assert abs(manifest["tokens_per_domain"]["math"] - budget * MIX["math"]) <= 1
    math = manifest["domains"]["math"]
    # one and a half passes: every document once, then about half of them again
    assert len(math["files"]) == 2
    assert math["files"][0]["documents"] == token_cache.domains["math"].n_docs
    assert 0 < math["files"][1]["documents"] < token_cache.domains["math"].n_docs
    assert all(len(manifest["domains"][d]["files"]) == 1 for d in ("news", "code"))


def test_materialized_tokens_are_the_selected_documents(sample, proxy_tokenizer, token_cache):
    """Each part's .bin/.idx (read by a reader written from the layout) and .ds hold exactly
    the tokens of its text shard's records, tokenized again, each followed by EOS."""
    root, manifest, _ = sample
    eos = token_cache.eos_id
    for info in manifest["domains"].values():
        for part in info["files"]:
            texts = [
                r["text"] for b in Corpus(root / part["text"]).iter_batches() for r in b.to_dicts()
            ]
            assert len(texts) == part["documents"]
            expected = [
                [*e.ids, eos] for e in proxy_tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False)
            ]  # fmt: skip
            indexed = IndexedFile(root / part["megatron"])
            assert indexed.dtype == np.uint16 and len(indexed) == len(texts)
            assert list(indexed.document_indices) == list(range(len(texts) + 1))
            assert [indexed[i].tolist() for i in range(len(indexed))] == expected
            assert indexed.tokens == part["tokens"]
            ids, ends = read_datatrove(root / part["datatrove"], 2)
            assert ids.tolist() == [t for doc in expected for t in doc]
            assert ends.tolist() == np.cumsum([len(e) for e in expected]).tolist()
            assert (root / (part["datatrove"] + ".metadata")).read_text().splitlines()[1] == str(
                part["tokens"]
            )


def test_megatron_core_reads_the_materialized_files(sample):
    """megatron-core's own reader, where it is installed (it imports with torch on a CPU)."""
    indexed_dataset = pytest.importorskip("megatron.core.datasets.indexed_dataset")
    root, manifest, _ = sample
    for info in manifest["domains"].values():
        for part in info["files"]:
            theirs = indexed_dataset.IndexedDataset(str(root / part["megatron"]))
            ours = IndexedFile(root / part["megatron"])
            assert len(theirs) == len(ours)
            assert all(np.array_equal(theirs[i], ours[i]) for i in range(len(ours)))


def test_megatron_core_draws_the_blend(tree, tmp_path):
    """megatron-core's own blended GPT dataset, where it is installed: it reads the exported
    --data-path and draws each file's sequences in proportion to its weight."""
    pytest.importorskip("megatron.core.datasets.gpt_dataset")
    import torch.distributed as dist
    from megatron.core.datasets.blended_megatron_dataset_builder import (
        BlendedMegatronDatasetBuilder,
    )
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
    from megatron.core.datasets.utils import get_blend_from_list

    export_mixture(MIX, tree, tmp_path / "m", to="megatron")
    blend = get_blend_from_list((tmp_path / "m" / "data_args.txt").read_text().split())

    class Tokenizer:  # what GPTDataset reads of one
        def __init__(self) -> None:
            self.eod, self.pad, self.bos, self.vocab_size = 0, 1, None, 1024
            self.unique_identifiers = {"class": "Tokenizer"}

    config = GPTDatasetConfig(
        random_seed=1, sequence_length=64, blend=blend, split="100,0,0", tokenizer=Tokenizer(),
        reset_position_ids=False, reset_attention_mask=False, eod_mask_loss=False,
        path_to_cache=str(tmp_path / "cache"), mid_level_dataset_surplus=0.005,
    )  # fmt: skip
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/pg", rank=0, world_size=1)
    try:
        n = 2000
        train, _, _ = BlendedMegatronDatasetBuilder(
            GPTDataset, [n, 0, 0], lambda: True, config
        ).build()
        drawn = np.bincount(np.asarray(train.dataset_index[:n]), minlength=len(blend[0])) / n
        assert drawn == pytest.approx(np.array(blend[1]) / sum(blend[1]), abs=0.01)
        assert len(train[0]["tokens"]) == 64
    finally:
        dist.destroy_process_group()


def test_materialize_is_seeded_and_resumes(sample, demo_dir, token_cache, tmp_path):
    root, manifest, budget = sample
    corpus = Corpus(demo_dir / "train")
    args = dict(budget=budget, max_epochs=2.0, formats=["megatron"])
    same = materialize_mixture(corpus, token_cache, MIX, tmp_path / "a", seed=3, **args)
    other = materialize_mixture(corpus, token_cache, MIX, tmp_path / "b", seed=4, **args)
    part = manifest["domains"]["news"]["files"][0]["megatron"]
    assert (tmp_path / "a" / (part + ".bin")).read_bytes() == (root / (part + ".bin")).read_bytes()
    assert (tmp_path / "b" / (part + ".bin")).read_bytes() != (root / (part + ".bin")).read_bytes()
    assert same["domains"] == {
        d: {**info, "files": [{k: f[k] for k in ("documents", "tokens", "megatron")} for f in info["files"]]}
        for d, info in manifest["domains"].items()
    }  # fmt: skip
    assert other["tokens_per_domain"] == same["tokens_per_domain"]
    stamp = (tmp_path / "a" / (part + ".bin")).stat().st_mtime_ns
    materialize_mixture(corpus, token_cache, MIX, tmp_path / "a", seed=3, **args)
    assert (tmp_path / "a" / (part + ".bin")).stat().st_mtime_ns == stamp  # reused, not redone
    # another request in the same folder: math's second pass is gone, not left behind
    materialize_mixture(corpus, token_cache, MIX, tmp_path / "a", seed=3, formats=["megatron"])
    assert sorted(p.name for p in (tmp_path / "a" / "megatron" / "math").iterdir()) == [
        "part-00000.bin", "part-00000.idx"
    ]  # fmt: skip


def test_materialize_without_a_budget_takes_every_document_once(demo_dir, token_cache, tmp_path):
    corpus = Corpus(demo_dir / "train")
    manifest = materialize_mixture(
        corpus, token_cache, "uniform", tmp_path / "all", formats=["megatron"]
    )
    for d, info in manifest["domains"].items():
        assert info["documents"] == info["unique_documents"] == token_cache.domains[d].n_docs
        assert info["tokens"] == token_cache.domains[d].n_tokens
        (part,) = info["files"]
        assert IndexedFile(tmp_path / "all" / part["megatron"]).tokens == info["tokens"]


def test_materialize_refuses_a_cache_of_another_corpus(demo_dir, token_cache, tmp_path):
    with pytest.raises(StateError, match="not built from this corpus"):
        materialize_mixture(Corpus(demo_dir / "heldout"), token_cache, MIX, tmp_path / "x")


@pytest.fixture(scope="module")
def tree(tmp_path_factory, token_cache):
    """Megatron files in domain folders as preprocess_data.py would leave them: news in two
    files of unequal size, math and code in one each."""
    root = tmp_path_factory.mktemp("tree")
    for d in MIX:
        dom = token_cache.domains[d]
        cuts = [0, dom.n_docs // 3, dom.n_docs] if d == "news" else [0, dom.n_docs]
        for i, (a, b) in enumerate(itertools.pairwise(cuts)):
            with IndexedWriter(root / d / f"shard{i}_text_document", np.uint16) as w:
                lo, hi = dom.offsets[a], dom.offsets[b]
                w.add_many(np.asarray(dom.tokens[lo:hi]), np.diff(dom.offsets[a : b + 1]))
    return root


def _blend(path: Path) -> list[tuple[float, str]]:
    """`--data-path` words as Megatron's get_blend_from_list pairs them: weight, prefix."""
    words = path.read_text().split()
    assert len(words) % 2 == 0
    return [(float(words[i]), words[i + 1]) for i in range(0, len(words), 2)]


def test_megatron_blend_weights_per_file(tree, token_cache, tmp_path):
    summary = export_mixture(MIX, tree, tmp_path / "m", to="megatron")
    blend = _blend(tmp_path / "m" / "data_args.txt")
    assert len(blend) == 4 and abs(sum(w for w, _ in blend) - 1) < 1e-9
    for weight, prefix in blend:
        domain = Path(prefix).parent.name
        file_tokens = IndexedFile(prefix).tokens
        share = MIX[domain] * file_tokens / token_cache.domains[domain].n_tokens
        assert weight == pytest.approx(share, rel=1e-9)
    assert (
        json.loads((tmp_path / "m" / "megatron.json").read_text())["data_path"]
        == (tmp_path / "m" / "data_args.txt").read_text().split()
    )
    assert summary["shares"] == MIX


def test_megatron_blend_respects_the_epoch_cap(tree, token_cache, tmp_path):
    """Math's half of this budget is two passes; at one it is cut to its tokens, and the rest
    goes to news and code 3:2."""
    n = {d: token_cache.domains[d].n_tokens for d in MIX}
    budget = 4 * n["math"]
    summary = export_mixture(MIX, tree, tmp_path / "m", to="megatron", budget=budget)
    assert summary["capped_domains"] == ["math"]
    weights = {}
    for w, prefix in _blend(tmp_path / "m" / "data_args.txt"):
        weights[Path(prefix).parent.name] = weights.get(Path(prefix).parent.name, 0) + w
    assert weights["math"] == pytest.approx(n["math"] / budget, rel=1e-6)
    assert weights["news"] / weights["code"] == pytest.approx(0.3 / 0.2, rel=1e-4)
    with pytest.raises(ConfigError, match="binds"):
        export_mixture(MIX, tree, tmp_path / "e", to="megatron", budget=budget, on_cap="error")


def test_olmo_core_source_mixture(tree, token_cache, tmp_path):
    budget = 4 * token_cache.domains["math"].n_tokens
    export_mixture(
        MIX, tree, tmp_path / "o", to="olmo-core", budget=budget, max_epochs=1.5,
        global_batch_size=4096,
    )  # fmt: skip
    config = yaml.safe_load((tmp_path / "o" / "olmo_core.yaml").read_text())
    assert set(config) == {"source_list", "requested_tokens", "global_batch_size"}
    assert config["requested_tokens"] == budget and config["global_batch_size"] == 4096
    sources = config["source_list"]["sources"]
    assert sum(s["target_ratio"] for s in sources) == pytest.approx(1.0)
    for s in sources:
        assert set(s) == {
            "source_name", "target_ratio", "paths", "max_repetition_ratio", "max_source_fraction"
        }  # fmt: skip
        assert s["max_repetition_ratio"] == 1.5 and s["max_source_fraction"] == 1.0
        # OLMo-core counts a source's tokens from its raw files' sizes, and refuses a
        # target above what repetition allows (SourceMixtureDatasetConfig.build)
        population = sum(Path(p).stat().st_size // 2 for p in s["paths"])
        assert population == token_cache.domains[s["source_name"]].n_tokens
        needed = int(config["requested_tokens"] * s["target_ratio"])
        assert int(population * s["max_source_fraction"] * s["max_repetition_ratio"]) >= needed
    with pytest.raises(ConfigError, match="global-batch-size"):
        export_mixture(MIX, tree, tmp_path / "x", to="olmo-core")


def test_nanotron_dataset_folders(sample, tmp_path):
    root, manifest, _ = sample
    export_mixture(None, root, tmp_path / "n", to="nanotron")
    stage = yaml.safe_load((tmp_path / "n" / "nanotron.yaml").read_text())["data_stages"][0]
    folders = stage["data"]["dataset"]["dataset_folder"]
    assert isinstance(folders, dict) and sum(folders.values()) == pytest.approx(1.0)
    total = sum(info["tokens"] for info in manifest["domains"].values())
    for folder, weight in folders.items():
        ds = sorted(Path(folder).glob("*.ds"))
        assert ds and weight == pytest.approx(sum(p.stat().st_size for p in ds) / 2 / total)


def test_hf_interleave_probabilities(sample, tmp_path):
    datasets = pytest.importorskip("datasets")
    root, manifest, _ = sample
    export_mixture(None, root, tmp_path / "h", to="hf")
    spec = json.loads((tmp_path / "h" / "hf_interleave.json").read_text())
    parts = [
        datasets.load_dataset(d["builder"], data_files=d["data_files"], split="train")
        for d in spec["datasets"]
    ]
    mixed = datasets.interleave_datasets(
        parts,
        probabilities=spec["probabilities"],
        seed=spec["seed"],
        stopping_strategy=spec["stopping_strategy"],
    )
    # first_exhausted: it stops when the first domain runs out (a hundred-odd documents here)
    drawn = mixed["domain"]
    assert len(drawn) > 50
    for d, p in zip(spec["datasets"], spec["probabilities"], strict=True):
        assert drawn.count(d["domain"]) / len(drawn) == pytest.approx(p, abs=0.12)
    # a document's probability is its domain's token share over its mean length
    # (here the source's own proportions: a domain's share is its tokens, so its documents)
    doc_share = {d: info["documents"] for d, info in manifest["domains"].items()}
    total = sum(doc_share.values())
    for d, p in zip(spec["datasets"], spec["probabilities"], strict=True):
        assert p == pytest.approx(doc_share[d["domain"]] / total)


def test_export_verb(sample, tmp_path):
    from click.testing import CliRunner

    from assay.cli import app

    root, _, _ = sample
    out = tmp_path / "v"
    result = CliRunner().invoke(
        app,
        ["export", "math=0.4,news=0.4,code=0.2", "--source", str(root), "--to", "megatron",
         "--out", str(out)],
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    blend = _blend(out / "export" / "data_args.txt")
    shares = {Path(p).parent.name: 0.0 for _, p in blend}
    for w, p in blend:
        shares[Path(p).parent.name] += w
    assert shares == pytest.approx({"math": 0.4, "news": 0.4, "code": 0.2})
