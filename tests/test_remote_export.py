"""recipes/remote_export.yaml against a local S3 server: the corpus read from a bucket, the run
directory there too, and the mixture's sample exported for Megatron-LM, OLMo-core and LitGPT,
each naming the materialized files on the bucket with the sample's shares."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import upload

from assay.recipe.pipeline import run_recipe
from assay.recipe.recipe import load_recipe

pytest.importorskip("moto.server")
pytest.importorskip("s3fs")

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "remote_export.yaml"
RUN = "s3://bkt/runs/rx"
OVERRIDES = [
    "corpus.paths=[s3://bkt/demo/train]",
    f"run_dir={RUN}",
    "tokenizer.vocab_size=300",
    "tokenizer.sample_docs=200",
    "mixture.vocab_size=300",
    "materialize.budget=60000",
    "olmo_core.global_batch_size=2048",
]


def _yaml(fs, url: str):
    return yaml.safe_load(fs.cat_file(url))


def test_remote_corpus_exported_for_megatron_olmo_core_and_litgpt(s3, demo_dir):
    upload(s3, demo_dir / "train", "bkt/demo/train")
    outcome = run_recipe(load_recipe(RECIPE, OVERRIDES), progress=False)
    assert [s.status for s in outcome.steps] == ["ran"] * 6

    data = f"{RUN}/materialize/data"
    manifest = json.loads(s3.cat_file(f"{data}/materialize.json"))
    tokens = {d: info["tokens"] for d, info in manifest["domains"].items()}
    total = sum(tokens.values())
    assert total >= 60_000 and set(tokens) == {"code", "math", "news", "reference"}
    # the sample is the mixture's shares of the budget (to within a document, none capped here)
    mixture = _yaml(s3, f"{RUN}/mixture/mixture.yaml")
    weights = mixture.get("weights", mixture)
    assert not manifest.get("capped_domains")
    for d, n in tokens.items():
        assert n / total == pytest.approx(weights[d], abs=0.02)
    part_tokens = {
        f"{data}/{part['megatron']}": part["tokens"]
        for info in manifest["domains"].values()
        for part in info["files"]
    }

    # Megatron: "weight prefix" per materialized file, on the bucket, weight = its tokens' share
    words = s3.cat_file(f"{RUN}/megatron/export/data_args.txt").decode().split()
    blend = {words[i + 1]: float(words[i]) for i in range(0, len(words), 2)}
    assert set(blend) == set(part_tokens)
    for prefix, weight in blend.items():
        assert s3.exists(prefix + ".bin") and s3.exists(prefix + ".idx")
        assert weight == pytest.approx(part_tokens[prefix] / total, rel=1e-9)

    # OLMo-core: a source per domain, its raw .bin files on the bucket, the domain's share
    olmo = _yaml(s3, f"{RUN}/olmo_core/export/olmo_core.yaml")
    assert olmo["global_batch_size"] == 2048
    for source in olmo["source_list"]["sources"]:
        d = source["source_name"]
        assert source["target_ratio"] == pytest.approx(tokens[d] / total, rel=1e-9)
        assert all(p.startswith(f"{data}/megatron/{d}/") for p in source["paths"])
        assert sum(part_tokens[p.removesuffix(".bin")] for p in source["paths"]) == tokens[d]
        assert all(s3.exists(p) for p in source["paths"])

    # LitGPT: the data module streams the export's litdata datasets from the bucket
    lit = _yaml(s3, f"{RUN}/litgpt/export/litgpt.yaml")["data"]
    args = lit["init_args"]
    assert lit["class_path"] == "assay_litgpt.AssayMixture"
    assert args["data_path"] == f"{RUN}/litgpt/export"
    assert dict(zip(args["domains"], args["weights"], strict=True)) == pytest.approx(
        {d: n / total for d, n in tokens.items()}
    )
    for d in args["domains"]:
        index = json.loads(s3.cat_file(f"{RUN}/litgpt/export/{d}/index.json"))
        assert sum(c["dim"] for c in index["chunks"]) == tokens[d]
        assert all(s3.exists(f"{RUN}/litgpt/export/{d}/{c['filename']}") for c in index["chunks"])
    assert s3.exists(f"{RUN}/litgpt/export/assay_litgpt.py")

    # another machine (no mirror) finds every step done on the bucket
    shutil.rmtree(os.environ["ASSAY_REMOTE_CACHE"])
    again = run_recipe(load_recipe(RECIPE, OVERRIDES), progress=False)
    assert [s.status for s in again.steps] == ["reused"] * 6
