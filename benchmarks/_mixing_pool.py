"""The mixing benchmark's pool and target, built once under `<work>/pool` from installed text.

- pool (`train/`, one file per domain): the demo corpus' training split with its source labels,
  news, math (sympy docstrings and some champ problems), code (the CPython standard library)
  and reference (pydoc topics), plus two domains a real crawl has:
  - `tables`: CPython's codec tables (`encodings/*.py`: one line per character with its
    Unicode name), cut out of code; off-target, repetitive and very learnable;
  - `junk`: `assay.demo.make_junk` copies of a seeded fifth of the pool's documents, a third
    each word-shuffled, character-noised and boilerplate-repeated.
- `heldout/`: the demo's held-out split labelled the same way (with its own junk), for BiMix,
  whose law is per training domain.
- `target/`: the external target, competition math: the champ problems with solutions and
  concepts the pool never sampled (`assay.demo` writes them as `targets/`), none of the pool's
  documents; split by a seeded hash into `target_dev` (what searches minimise) and
  `target_test` (what the table reports), so a search is not scored on the text it tuned on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
from _common import CACHE

from assay.demo import JUNK_KINDS, build_demo_corpus, make_junk
from assay.io.corpus import Corpus
from assay.io.write import write_shard
from assay.util.hashing import stable_hash64

JUNK, TABLES = "junk", "tables"
DEV, TEST = "target_dev", "target_test"
COLUMNS = ["id", "text", "domain", "source"]


def _frame(path: str | Path) -> pl.DataFrame:
    return pl.concat(list(Corpus(path).iter_batches()), how="diagonal_relaxed")


def _labelled(frame: pl.DataFrame, junk_every: int, seed: int) -> pl.DataFrame:
    """`tables` cut out of code, and a junk copy of every `junk_every`-th document (by hash)."""
    is_table = (pl.col("domain") == "code") & pl.col("id").str.starts_with("code/stdlib/encodings/")
    frame = frame.with_columns(
        pl.when(is_table).then(pl.lit(TABLES)).otherwise(pl.col("domain")).alias("domain")
    ).select(COLUMNS)
    h = stable_hash64(frame.get_column("id").to_list(), seed)
    picked = frame.filter(pl.Series(h % junk_every == 0))
    kind = stable_hash64(picked.get_column("id").to_list(), seed + 1) % len(JUNK_KINDS)
    junk = []
    for k, name in enumerate(JUNK_KINDS):
        rows = picked.filter(pl.Series(kind == k)).to_dicts()
        junk += [{c: r[c] for c in COLUMNS} | {"domain": JUNK} for r in make_junk(rows, name)]
    return pl.concat([frame, pl.DataFrame(junk, schema=dict.fromkeys(COLUMNS, pl.String))])


def _write_by_domain(frame: pl.DataFrame, folder: Path) -> None:
    for (domain,), part in frame.group_by("domain", maintain_order=True):
        write_shard(folder / f"{domain}.jsonl.gz", [part])


def build_pool(work: Path, *, junk_every: int = 5, seed: int = 0) -> dict[str, Path]:
    """The labelled pool, its held-out split and the target (dev/test), built once."""
    root = work / "pool"
    folders = {"train": root / "train", "heldout": root / "heldout", "target": root / "target"}
    if (root / "_done").exists():
        return folders
    manifest = build_demo_corpus(CACHE / "demo", size="full")
    _write_by_domain(_labelled(_frame(manifest["train"]), junk_every, seed), folders["train"])
    _write_by_domain(_labelled(_frame(manifest["heldout"]), junk_every, seed), folders["heldout"])
    target = _frame(manifest["targets"]).select(COLUMNS)
    dev = pl.Series(stable_hash64(target.get_column("id").to_list(), seed + 2) % 2 == 0)
    write_shard(folders["target"] / f"{DEV}.jsonl.gz", [target.filter(dev).with_columns(pl.lit(DEV).alias("domain"))])  # fmt: skip
    write_shard(folders["target"] / f"{TEST}.jsonl.gz", [target.filter(~dev).with_columns(pl.lit(TEST).alias("domain"))])  # fmt: skip
    (root / "_done").write_text("")
    return folders


def junk_fraction(corpus: Corpus) -> dict[str, float]:
    """Per domain of `corpus` (labelled or a cluster view), the share of its characters that
    are junk documents (ids `junk/...`)."""
    chars: dict[str, np.ndarray] = {}
    for batch in corpus.iter_batches():
        n = batch.get_column("text").str.len_chars().cast(pl.Float64)
        junk = batch.get_column("id").str.starts_with("junk/")
        part = pl.DataFrame({"domain": batch.get_column("domain"), "n": n, "j": n * junk})
        for row in part.group_by("domain").agg(pl.col("n").sum(), pl.col("j").sum()).iter_rows():
            chars[row[0]] = chars.get(row[0], np.zeros(2)) + np.array(row[1:])
    return {d: float(v[1] / v[0]) if v[0] else 0.0 for d, v in sorted(chars.items())}


def junk_share(mixture: dict[str, float], fraction: dict[str, float]) -> float:
    """The share of a mixture's training text that is junk (approximately: by characters)."""
    return float(sum(w * fraction.get(d, 0.0) for d, w in mixture.items()))
