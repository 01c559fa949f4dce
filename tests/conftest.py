"""Shared fixtures: a small real-text demo corpus, and helpers that write shards by hand."""

from __future__ import annotations

import json
import os
from pathlib import Path

import polars as pl
import pytest

os.environ.setdefault("ASSAY_PROGRESS", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


#: fastText's default 2M hash buckets make every saved classifier ~800 MB; the suite's small
#: fixtures have far fewer distinct n-grams, so tests train with 200k (80 MB) unless marked
#: `fasttext_defaults`. Workers started by spawn still see the real default.
TEST_FASTTEXT_BUCKETS = 200_000


@pytest.fixture(autouse=True)
def _small_fasttext_models(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if request.node.get_closest_marker("fasttext_defaults") is None:
        from assay.selection.fasttext import DEFAULT_PARAMS

        monkeypatch.setitem(DEFAULT_PARAMS, "bucket", TEST_FASTTEXT_BUCKETS)


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small demo corpus (90 train + 10 held-out real documents per domain)."""
    from assay.demo import build_demo_corpus

    root = tmp_path_factory.mktemp("demo")
    build_demo_corpus(root, size="small")
    return root


@pytest.fixture(scope="session")
def demo_records(demo_dir: Path) -> list[dict]:
    """All training records of the small demo corpus, in shard order."""
    from assay.io.corpus import Corpus

    return [r for b in Corpus(demo_dir / "train").iter_batches() for r in b.to_dicts()]


@pytest.fixture(scope="session")
def real_texts(demo_records: list[dict]) -> list[str]:
    return [r["text"] for r in demo_records]


def write_jsonl(path: Path, records: list[dict], raw_lines: dict[int, bytes] | None = None) -> Path:
    """Write records as JSON lines; `raw_lines` replaces line i (0-based) by raw bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(r).encode() for r in records]
    for i, raw in (raw_lines or {}).items():
        lines[i] = raw
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def write_parquet(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(records).write_parquet(path)
    return path


def write_select_keys(
    root: Path, n: int, shards: int, groups: list[str], passed: bool = False
) -> list[Path]:
    """Synthetic `select` key files (KEYS_SCHEMA; with `passed`, a rule's Boolean column too):
    `shards` parquet files of `n` rows each, seeded, scores rounded so that exact ties abound."""
    import numpy as np

    from assay.selection.select import KEYS_SCHEMA

    rng = np.random.default_rng(0)
    files = []
    for k in range(shards):
        files.append(root / f"s{k}.parquet")
        data = {
            "id": [f"d{k}-{i}" for i in range(n)],
            "row": np.arange(n),
            "score": np.round(rng.normal(size=n), 2),
            "weight": rng.integers(1, 2000, n).astype(np.float64),
            "hash": rng.integers(0, 2**63, n, dtype=np.uint64) * np.uint64(2),
            "group": rng.choice(groups, n),
        }
        schema = dict(KEYS_SCHEMA)
        if passed:
            data["passed"] = rng.random(n) < 0.7
            schema["passed"] = pl.Boolean
        pl.DataFrame(data, schema=schema).write_parquet(files[-1], row_group_size=8192)
    return files


def read_all(corpus) -> pl.DataFrame:
    return pl.concat(list(corpus.iter_batches()), how="diagonal_relaxed")


# -- proxies ---------------------------------------------------------------------------------------

PROXY_SETTINGS = {"batch_size": 8, "seq_len": 128}


@pytest.fixture(scope="session")
def proxy_tokenizer(tmp_path_factory: pytest.TempPathFactory, demo_dir: Path):
    """A 1,024-token byte-level BPE trained on the small demo corpus."""
    from assay.common.tokenizer import train_tokenizer
    from assay.io.corpus import Corpus

    return train_tokenizer(
        Corpus(demo_dir / "train"), 1024, tmp_path_factory.mktemp("tok") / "tokenizer"
    )


@pytest.fixture(scope="session")
def token_cache(tmp_path_factory: pytest.TempPathFactory, demo_dir: Path, proxy_tokenizer):
    from assay.common.tokens import TokenCache
    from assay.io.corpus import Corpus

    return TokenCache.build(
        Corpus(demo_dir / "train"), proxy_tokenizer, tmp_path_factory.mktemp("cache")
    )


@pytest.fixture(scope="session")
def trained_proxy(
    tmp_path_factory: pytest.TempPathFactory, demo_dir: Path, token_cache, proxy_tokenizer
):
    """A tiny proxy trained for 200 steps on the natural mix (a model that knows something)."""
    from assay.io.corpus import Corpus
    from assay.proxies.train import train_proxy

    return train_proxy(
        token_cache, "natural", 200 * 8 * 128, "tiny", 0, out_dir=tmp_path_factory.mktemp("proxy") / "run",
        tokenizer=proxy_tokenizer, heldout=Corpus(demo_dir / "heldout"), progress=False, **PROXY_SETTINGS,
    )  # fmt: skip


# -- embeddings ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def static_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A static (model2vec-format) embedder distilled from the bundled MiniLM (~15 s)."""
    from assay.common.embed import distill_static

    return distill_static(None, tmp_path_factory.mktemp("static") / "minilm-static")


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory):
    """A bucket ("bkt") on a local S3 server (moto's server mode on 127.0.0.1, one per test
    module); the environment points boto at it and mirrors into a temporary folder. fsspec's
    cached filesystems (which keep the endpoint they were made with) are dropped before and
    after, so each module's server is the one used."""
    moto_server = pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "ASSAY_REMOTE_CACHE": str(tmp_path_factory.mktemp("mirrors")),
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import boto3

    boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"]).create_bucket(Bucket="bkt")
    import fsspec

    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    type(fs).clear_instance_cache()
    try:
        yield fs
    finally:
        type(fs).clear_instance_cache()
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def upload(fs, local: Path, url: str) -> None:
    """Put a local folder's files under a bucket path (`fs`: the `s3` fixture)."""
    for f in sorted(local.rglob("*")):
        if f.is_file():
            fs.put_file(str(f), f"{url}/{f.relative_to(local).as_posix()}")
