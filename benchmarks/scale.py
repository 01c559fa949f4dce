"""Cost of every stage at real corpus sizes: wall time, docs/s and peak memory at N documents.

Builds a corpus of N documents from the demo corpus' real text by deterministic recombination
(each document joins 2-9 sentences drawn, by a seeded generator, from the whole demo corpus;
its domain is that of its first sentence; ids are unique), in `.jsonl.zst` shards of 25,000
documents, and runs each stage in a fresh process:

    read          stream every document (Corpus.iter_batches)
    doc_stats     score_corpus(DocStatsScorer)
    fasttext      score_corpus with a fastText classifier fitted once on demo text
    betr_fit      fit_betr on a sample of 100,000 documents (the static embedder)
    betr_score    score_corpus with that BETR scorer
    cluster       cluster_corpus: k-means on a 20,000-document sample, every document assigned
    mass_score    score_corpus with MASS fitted on the CHAMP targets (static embedder)
    mates_score   score_corpus with a MATES influence model (static embedder; fitted once)
    select        select 50% of the characters by unique_word_frac (doc_stats), top-k
    token_cache   TokenCache.build with a tokenizer trained once on demo text

Each stage runs in its own process (`--stage`, started from a parent that imports nothing
large), so its memory is its own: `peak_mib` is the peak of the resident memory of its whole
process tree (the stage's process and its workers, summed, sampled every 0.1 s),
`largest_process_mib` the kernel's peak of its largest process, `main_process_mib` the peak of
the stage's own process (where select makes its decision). The report gives, per stage,
seconds, docs/s and these peaks at every N, time(N_max) / time(N_min) and the ratio of
`peak_mib`; for select, how the main process' peak grows per document between the sizes
(`bytes_per_doc`) and what the decision alone allocates per document (`decision_bytes_per_doc`,
measured with tracemalloc after the timed run, on the keys it wrote). `projection` scales the
measurements to `--project` documents (see `project`).

    python benchmarks/scale.py [--sizes 100000,1000000] [--workers 2] [--stages read,select]

Prints JSON. The corpora and fitted models are cached under $ASSAY_BENCH_DIR/scale; every stage
runs with an empty assay cache (only the distilled static model is shared), so no embedding is
ever found computed by another stage or size.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

# the parent process stays small (no numpy, polars or assay): a child's peak memory is measured
# from the kernel, and a child started from a large parent would inherit the parent's figure
ROOT = Path(os.environ.get("ASSAY_BENCH_DIR", "/tmp/assay-bench")) / "scale"
SHARD_DOCS = 25_000
STAGES = (
    "read",
    "doc_stats",
    "fasttext",
    "betr_fit",
    "betr_score",
    "cluster",
    "mass_score",
    "mates_score",
    "select",
    "token_cache",
)
#: stages that work on a fixed sample in one process, whatever the corpus' size
FIXED = {"betr_fit"}
#: the seconds of a stage spent in one process after its parallel part (select's decision, the
#: token cache's per-domain files), reported with the stage
SERIAL: dict[str, float] = {}
#: stages whose memory must not grow with the corpus (the others hold a bounded sample)
STREAMING = {"read", "doc_stats", "fasttext", "betr_score", "mass_score", "mates_score"}


# --------------------------------------------------------------------------------------------
# the corpus


def _sentences() -> tuple[list[str], list[str]]:
    """Every sentence of the demo corpus' training documents, with its document's domain."""
    from _common import demo_texts

    frame = demo_texts()
    sents, domains = [], []
    for text, domain in zip(frame["text"].to_list(), frame["domain"].to_list(), strict=True):
        for part in text.replace("\n", " ").split(". "):
            part = part.strip()
            if len(part) >= 20:
                sents.append(part if part.endswith(".") else part + ".")
                domains.append(domain)
    return sents, domains


def build_corpus(n_docs: int) -> Path:
    """N documents recombined from demo sentences; the same N always gives the same corpus."""
    import itertools

    import numpy as np
    import polars as pl

    from assay.io.write import write_shard

    folder = ROOT / f"corpus-{n_docs}"
    if (folder / "_done").exists():
        return folder
    sents, domains = _sentences()
    sent_arr = np.array(sents, dtype=object)
    dom_arr = np.array(domains, dtype=object)
    for k, start in enumerate(range(0, n_docs, SHARD_DOCS)):
        n = min(SHARD_DOCS, n_docs - start)
        # seeded per shard: in whole shards, a larger N extends a smaller one
        rng = np.random.default_rng([7, k])
        lengths = rng.integers(2, 10, size=n)
        picks = rng.integers(0, len(sents), size=int(lengths.sum()))
        bounds = np.concatenate([[0], np.cumsum(lengths)])
        texts = [" ".join(sent_arr[picks[a:b]]) for a, b in itertools.pairwise(bounds)]
        frame = pl.DataFrame(
            {
                "id": [f"doc-{start + i:09d}" for i in range(n)],
                "text": texts,
                "domain": dom_arr[picks[bounds[:-1]]].tolist(),
            }
        )
        write_shard(folder / f"part-{k:05d}.jsonl.zst", [frame])
    (folder / "_done").write_text("")
    return folder


# --------------------------------------------------------------------------------------------
# what the stages share, fitted once on demo text (not on the corpus being measured)


def _setup() -> Path:
    """The tokenizer, fastText classifier, MASS and MATES scorers the stages load."""
    from _common import demo_texts

    from assay.common.tokenizer import train_tokenizer
    from assay.io.corpus import Corpus
    from assay.selection.fasttext import FastTextScorer
    from assay.selection.mass import fit_mass
    from assay.selection.mates import MatesScorer

    setup = ROOT / "setup"
    if (setup / "_done").exists():
        return setup
    setup.mkdir(parents=True, exist_ok=True)
    demo = demo_texts()
    texts, domains = demo["text"].to_list(), demo["domain"].to_list()
    build_corpus(SHARD_DOCS)  # the tokenizer is trained on the first shard
    train_tokenizer(Corpus(ROOT / f"corpus-{SHARD_DOCS}"), 4096, setup / "tokenizer")
    pos = [t for t, d in zip(texts, domains, strict=True) if d == "math"]
    neg = [t for t, d in zip(texts, domains, strict=True) if d != "math"]
    ft = FastTextScorer(column="fasttext").fit(pos, neg, seed=0)
    ft.save(setup / "fasttext")
    fit_mass("assay_champ", skills="tags", embedder="static", column="mass").save(setup / "mass")
    # MATES' head learns any per-document target at the same cost; the benchmark uses the
    # fastText score of 400 demo documents as one (probing a proxy is not what is measured)
    probes = texts[:400]
    y = ft.score(probes)
    MatesScorer(embedder="static", column="mates").fit(probes, y, seed=0).save(setup / "mates")
    (setup / "_done").write_text("")
    return setup


# --------------------------------------------------------------------------------------------
# the stages (each in its own process)


def _score(scorer: Any, corpus: Any, out: Path, workers: int) -> int:
    from assay.exec.runner import LocalRunner
    from assay.selection.score import score_corpus

    return score_corpus(
        scorer, corpus, out, runner=LocalRunner(workers=workers, progress=False)
    ).docs_out


def _reset_peak() -> None:
    """Start this process' peak resident memory (VmHWM) again from its current size."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _own_peak() -> int:
    """This process' peak resident bytes (VmHWM; not its workers')."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def decision_memory(n_docs: int) -> dict[str, float]:
    """select's global step alone, on the keys the timed run wrote: its seconds, and the peak
    of what it allocates (tracemalloc sees numpy's arrays) per document."""
    import tracemalloc

    from assay.selection.select import SELECT_DIR, SelectConfig, _decide

    keys = sorted((ROOT / f"work-{n_docs}" / "select" / SELECT_DIR / "keys").glob("*.parquet"))
    cfg = SelectConfig(column="unique_word_frac", keep=0.5, by="chars")
    t0 = time.perf_counter()
    kept = _decide(keys, cfg)
    seconds = time.perf_counter() - t0
    del kept
    tracemalloc.start()
    _decide(keys, cfg)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {
        "decision_seconds": round(seconds, 2),
        "decision_bytes_per_doc": round(peak / n_docs, 1),
    }


def run_stage(stage: str, n_docs: int, workers: int) -> int:
    """Run one stage on the N-document corpus; the number of documents it handled."""
    from assay.io.corpus import Corpus
    from assay.selection.base import load_scorer

    corpus = Corpus(build_corpus(n_docs))
    setup = _setup()
    work = ROOT / f"work-{n_docs}"
    out = work / stage
    _reset_peak()  # this process' peak from here on: the stage's own
    if stage == "read":
        return sum(b.height for b in corpus.iter_batches())
    if stage == "doc_stats":
        from assay.selection.doc_stats import DocStatsScorer

        return _score(DocStatsScorer(), corpus, out, workers)
    if stage in ("fasttext", "mass_score", "mates_score"):
        name = stage.removesuffix("_score")
        return _score(load_scorer(setup / name), corpus, out, workers)
    if stage == "betr_fit":
        from assay.selection.betr import fit_betr

        fit_betr(corpus, "assay_champ", sample=100_000, embedder="static", seed=0).save(out)
        return min(n_docs, 100_000)
    if stage == "betr_score":
        return _score(load_scorer(work / "betr_fit"), corpus, out, workers)
    if stage == "cluster":
        from assay.exec.runner import LocalRunner
        from assay.mixing.cluster import cluster_corpus

        runner = LocalRunner(workers=workers, progress=False)
        cluster_corpus(corpus, out, embedder="static", sample=20_000, seed=0, runner=runner)
        return n_docs
    if stage == "select":
        from assay.exec.runner import LocalRunner
        from assay.selection.select import select

        runner = LocalRunner(workers=workers, progress=False)
        res = select(
            corpus, work / "doc_stats", out, column="unique_word_frac", keep=0.5, by="chars",
            runner=runner,
        )  # fmt: skip
        return res.docs
    if stage == "token_cache":
        from assay.common.tokenizer import load_tokenizer
        from assay.common.tokens import TokenCache
        from assay.exec.runner import LocalRunner

        runner = LocalRunner(workers=workers, progress=False)
        from assay.common import tokens

        write_domains = tokens._write_domains

        def timed(*args: Any) -> Any:  # the per-domain files are written by this process alone
            t0 = time.perf_counter()
            result = write_domains(*args)
            SERIAL["serial_seconds"] = round(time.perf_counter() - t0, 2)
            return result

        tokens._write_domains = timed
        TokenCache.build(corpus, load_tokenizer(setup / "tokenizer"), out, runner=runner)
        return n_docs
    raise SystemExit(f"unknown stage {stage!r}")


def _tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants (0 once it has gone)."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += proc.memory_info().rss
    return total


def _fresh_cache() -> Path:
    """An empty assay cache for one child, so that no stage finds embeddings another one (or
    the same stage at another N) computed; only the static model, distilled once, is shared."""
    import shutil

    shared = ROOT / "cache-shared"
    (shared / "static").mkdir(parents=True, exist_ok=True)
    fresh = ROOT / "cache-run"
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir(parents=True)
    (fresh / "static").symlink_to(shared / "static")
    return fresh


def _child(args: list[str]) -> tuple[float, int, int, str]:
    """Run this script with `args` in a fresh process: seconds, the peak resident memory of its
    whole process tree (sampled every 0.1 s), that of its largest process (the kernel's figure)
    and its stdout."""
    import tempfile
    import threading

    cmd = [sys.executable, __file__, *args]
    env = {**os.environ, "ASSAY_PROGRESS": "0", "TOKENIZERS_PARALLELISM": "false"}
    env["ASSAY_CACHE"] = str(_fresh_cache())
    with tempfile.TemporaryFile() as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, env=env)
        peak, done = [0], threading.Event()

        def sample() -> None:
            while not done.wait(0.1):
                peak[0] = max(peak[0], _tree_rss(proc.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        done.set()
        sampler.join()
        out.seek(0)
        text = out.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(args)} failed")
    return seconds, peak[0], usage.ru_maxrss * 1024, text  # ru_maxrss is in KiB on Linux


def measure(stage: str, n_docs: int, workers: int) -> dict[str, Any]:
    """Run `stage` on N documents in a fresh process; its seconds, docs/s and peak memory."""
    import shutil

    out = ROOT / f"work-{n_docs}" / stage
    shutil.rmtree(out, ignore_errors=True)
    args = ["--stage", stage, "--sizes", str(n_docs), "--workers", str(workers)]
    seconds, tree, largest, text = _child(args)
    report = json.loads(text.strip().splitlines()[-1])
    docs = report.pop("docs")
    return {
        "seconds": round(seconds, 2),
        "docs": docs,
        "docs_per_s": round(docs / seconds),
        "peak_mib": round(tree / 2**20, 1),
        "largest_process_mib": round(largest / 2**20, 1),
        "main_process_mib": round(report.pop("own_peak") / 2**20, 1),
        **report,
    }


def project(
    rows: dict[str, dict[str, Any]], sizes: list[int], workers: int, n: int, cores: int, nodes: int
) -> dict[str, Any]:
    """Each stage's time for `n` documents on one machine of `cores` cores and on `nodes` such
    machines, from a line through its two measured sizes: a fixed part (loading models, a
    sample's fit) plus a per-document part that the measured `workers` shared, spread over every
    core. What one process does after the parallel part (select's decision, the token cache's
    per-domain files: `serial_seconds`) stays serial, and a fit on a fixed sample (`FIXED`)
    takes what it took. The memory of one machine is `cores` workers each as large as the
    largest measured process, plus select's decision state. Assumes every core as fast as one here, storage that keeps up, and shards enough to
    keep every core busy (25,000-document shards: 4,000 tasks)."""
    lo_n, hi_n = sizes[0], sizes[-1]
    out: dict[str, Any] = {"documents": n, "cores": cores, "nodes": nodes, "stages": {}}
    for stage, r in rows.items():
        lo, hi = r[str(lo_n)], r[str(hi_n)]
        if stage in FIXED:  # the same work at any size, in one process
            minutes = round(hi["seconds"] / 60, 1)
            memory = hi["largest_process_mib"] / 1024
            out["stages"][stage] = {
                "one_machine_minutes": minutes,
                "cluster_minutes": minutes,
                "one_machine_memory_gib": round(memory, 1),
            }
            continue
        serial_per_doc = hi.get("serial_seconds", 0.0) / hi_n
        per_doc = (hi["seconds"] - lo["seconds"]) / (hi_n - lo_n) - serial_per_doc
        fixed = max(hi["seconds"] - (per_doc + serial_per_doc) * hi_n, 0.0)
        work = max(per_doc, 0.0) * n * workers  # core-seconds
        machine_s = fixed + serial_per_doc * n + work / cores
        cluster_s = fixed + serial_per_doc * n + work / (cores * nodes)
        decision = hi.get("decision_bytes_per_doc", 0.0) * n / 2**30
        out["stages"][stage] = {
            "one_machine_minutes": round(machine_s / 60, 1),
            "cluster_minutes": round(cluster_s / 60, 1),
            "one_machine_memory_gib": round(hi["largest_process_mib"] * cores / 1024 + decision, 1),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--project", type=int, default=100_000_000, help="documents to project to")
    ap.add_argument("--cores", type=int, default=64, help="cores of one projected machine")
    ap.add_argument("--nodes", type=int, default=4, help="machines of the projected cluster")
    ap.add_argument("--stage", help=argparse.SUPPRESS)  # internal: run one stage here
    ap.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)  # internal
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.stage:
        docs = run_stage(args.stage, sizes[0], args.workers)
        report = {"docs": docs, "own_peak": _own_peak(), **SERIAL}
        if args.stage == "select":
            report.update(decision_memory(sizes[0]))
        print(json.dumps(report))
        return
    if args.prepare:
        from _common import machine

        _setup()
        for n in sizes:
            build_corpus(n)
        print(json.dumps(machine()))
        return
    _, _, _, text = _child(["--prepare", "--sizes", args.sizes])
    machine = json.loads(text.strip().splitlines()[-1])
    stages = [s for s in args.stages.split(",") if s]
    if "select" in stages and "doc_stats" not in stages:
        stages.insert(0, "doc_stats")  # select reads its scores
    if "betr_score" in stages and "betr_fit" not in stages:
        stages.insert(0, "betr_fit")
    rows: dict[str, dict[str, Any]] = {}
    for stage in stages:
        rows[stage] = {str(n): measure(stage, n, args.workers) for n in sizes}
        lo, hi = rows[stage][str(sizes[0])], rows[stage][str(sizes[-1])]
        rows[stage]["time_ratio"] = round(hi["seconds"] / lo["seconds"], 2)
        rows[stage]["memory_ratio"] = round(hi["peak_mib"] / lo["peak_mib"], 2)
        if stage == "select" and sizes[-1] > sizes[0]:
            # the decision is made in the main process: how its peak grows per document
            extra = (hi["main_process_mib"] - lo["main_process_mib"]) * 2**20
            rows[stage]["bytes_per_doc"] = round(max(extra / (sizes[-1] - sizes[0]), 0.0), 1)
            rows[stage]["decision_bytes_per_doc"] = hi["decision_bytes_per_doc"]
        print(json.dumps({stage: rows[stage]}), file=sys.stderr, flush=True)
    size_ratio = sizes[-1] / sizes[0]
    checks = {
        s: {
            "time": r["time_ratio"] <= 1.1 * size_ratio,
            **({"memory": r["memory_ratio"] <= 1.3} if s in STREAMING else {}),
            **(
                {"bytes_per_doc": max(r["bytes_per_doc"], r["decision_bytes_per_doc"]) <= 64}
                if s == "select" and "bytes_per_doc" in r
                else {}
            ),
        }
        for s, r in rows.items()
    }
    report = {"machine": machine, "sizes": sizes, "workers": args.workers, "stages": rows}
    report["targets_met"] = checks
    report["projection"] = project(rows, sizes, args.workers, args.project, args.cores, args.nodes)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
