"""Reading a corpus from S3 (and a saved Hugging Face dataset) with assay vs the raw libraries.

A local S3-compatible server (moto's server mode on 127.0.0.1) holds the benchmark corpus;
assay's remote reader (listing, streaming blocks, strict parsing, validation) is timed against
polars reading each object through s3fs (`fs.open` + `pl.read_ndjson`/`pl.read_parquet`, whole,
no checks) in the same run. The same corpus saved with `datasets.save_to_disk` is read by assay
(memory-mapped Arrow shards) and by `datasets.load_from_disk(...).with_format("arrow")`.
The local server makes these CPU figures, not network ones.

    python benchmarks/remote_read.py [--docs 40000] [--shards 8]
"""

from __future__ import annotations

import argparse
import os
import tempfile

import polars as pl
from _common import bench_corpus, best_of, emit

from assay.io.corpus import Corpus


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=40_000)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    import boto3
    import datasets
    import fsspec
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL=f"http://{host}:{port}",
    )  # fmt: skip
    boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"]).create_bucket(Bucket="bench")
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    rows: dict[str, dict[str, float]] = {}
    try:
        for fmt in ("jsonl.zst", "parquet"):
            folder = bench_corpus("read", args.docs, args.shards, fmt)
            files = sorted(folder.glob(f"*.{fmt}"))
            for f in files:
                fs.put_file(str(f), f"bench/{fmt}/{f.name}")

            def raw(fmt: str = fmt) -> int:
                n = 0
                for key in sorted(fs.find(f"bench/{fmt}")):
                    with fs.open(key, "rb") as fh:
                        data = fh.read()
                    if fmt == "parquet":
                        n += pl.read_parquet(data).height
                    else:
                        import zstandard

                        plain = zstandard.ZstdDecompressor().decompressobj().decompress(data)
                        n += pl.read_ndjson(plain).height
                return n

            def ours(fmt: str = fmt) -> int:
                return sum(b.height for b in Corpus(f"s3://bench/{fmt}").iter_batches())

            t_raw, n_raw = best_of(raw, args.repeats)
            t_ours, n_ours = best_of(ours, args.repeats)
            assert n_raw == n_ours == args.docs, (n_raw, n_ours)
            rows[f"s3 {fmt}"] = {
                "raw_docs_per_s": round(n_raw / t_raw), "assay_docs_per_s": round(n_ours / t_ours),
                "ratio": round(t_raw / t_ours, 3),
            }  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            folder = bench_corpus("read", args.docs, args.shards, "parquet")
            ds = datasets.Dataset.from_parquet([str(p) for p in sorted(folder.glob("*.parquet"))])
            ds.save_to_disk(f"{tmp}/saved", num_shards=args.shards)

            def raw_hf() -> int:
                d = datasets.load_from_disk(f"{tmp}/saved").with_format("arrow")
                return sum(d[i : i + 8192].num_rows for i in range(0, len(d), 8192))

            def ours_hf() -> int:
                return sum(b.height for b in Corpus(f"{tmp}/saved").iter_batches())

            t_raw, n_raw = best_of(raw_hf, args.repeats)
            t_ours, n_ours = best_of(ours_hf, args.repeats)
            assert n_raw == n_ours == args.docs, (n_raw, n_ours)
            rows["hf save_to_disk"] = {
                "raw_docs_per_s": round(n_raw / t_raw), "assay_docs_per_s": round(n_ours / t_ours),
                "ratio": round(t_raw / t_ours, 3),
            }  # fmt: skip
    finally:
        server.stop()
    emit({"benchmark": "remote_read", "docs": args.docs, "shards": args.shards, "formats": rows})


if __name__ == "__main__":
    main()
