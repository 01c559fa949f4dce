"""Deduplication: exact copies (id, case and whitespace changed) and near copies (words edited,
a sentence appended) of real demo documents, planted across shards, are found; real distinct
documents are not paired; marks do not depend on workers or shard order; select keeps one of
each group."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner
from conftest import write_jsonl

from assay.errors import StateError
from assay.exec.runner import LocalRunner
from assay.io.corpus import Corpus
from assay.io.scores import ScoreSet
from assay.selection.decontam import normalize
from assay.selection.dedup import DedupSettings, dedup_corpus
from assay.selection.minhash import optimal_bands, signatures
from assay.selection.select import select

EXACT_EDITS = [
    lambda t: t,
    lambda t: t.upper(),
    lambda t: "  " + "   ".join(t.split()) + "\n",
    lambda t: "\n" + t.title() + "  \t",
]


def _near_edit(text: str, k: int) -> str:
    words = text.split()
    if k % 2 == 0:  # three words replaced
        for at in (len(words) // 4, len(words) // 2, 3 * len(words) // 4):
            words[at] = "zebra"
        return " ".join(words)
    return text + " This sentence was appended to the end of the document by the test."


def _shingles(text: str) -> set[tuple[str, ...]]:
    w = normalize(text).split()
    return {tuple(w[i : i + 5]) for i in range(max(1, len(w) - 4))}


def _jaccard(a: str, b: str) -> float:
    x, y = _shingles(a), _shingles(b)
    return len(x & y) / len(x | y)


@pytest.fixture(scope="module")
def planted(demo_records: list[dict], tmp_path_factory: pytest.TempPathFactory):
    """The demo corpus in three shards and a fourth with 8 exact and 10 near copies of
    documents of the other shards: (root, records, {copy id: source id} exact, near)."""
    records = [dict(r) for r in demo_records]
    lengths = [len(r["text"].split()) for r in records]
    long = [i for i, n in enumerate(lengths) if 150 <= n <= 1500]
    exact_src = [i for i, n in enumerate(lengths) if n >= 20][7::41][:8]
    near_src = [i for i in long if i not in exact_src][3::23][:10]
    assert len(exact_src) == 8 and len(near_src) == 10
    copies, exact, near = [], {}, {}
    for k, i in enumerate(exact_src):
        src = records[i]
        copies.append({**src, "id": f"copy-exact-{k}", "text": EXACT_EDITS[k % 4](src["text"])})
        exact[f"copy-exact-{k}"] = src["id"]
    for k, i in enumerate(near_src):
        src = records[i]
        copies.append({**src, "id": f"copy-near-{k}", "text": _near_edit(src["text"], k)})
        near[f"copy-near-{k}"] = src["id"]
    third = len(records) // 3
    parts = [records[:third], records[third : 2 * third], records[2 * third :], copies[::-1]]
    root = tmp_path_factory.mktemp("dedup")
    for name, part in zip("abcd", parts, strict=True):
        write_jsonl(root / "corpus" / f"{name}.jsonl", part)
    # the same documents under names that sort the shards the other way round
    for name, part in zip("zyxw", parts, strict=True):
        write_jsonl(root / "reordered" / f"{name}.jsonl", part)
    return root, records + copies, exact, near


def _marks(folder: Path, corpus: Corpus) -> pl.DataFrame:
    return ScoreSet(folder).read_all(corpus.shards).drop("shard").sort("id")


@pytest.fixture(scope="module")
def marked(planted, tmp_path_factory: pytest.TempPathFactory):
    root = planted[0]
    out = tmp_path_factory.mktemp("marked") / "dup"
    summary = dedup_corpus(Corpus(root / "corpus"), out)
    return out, summary, _marks(out, Corpus(root / "corpus"))


def test_exact_finds_every_plant_and_nothing_else(planted, marked) -> None:
    _, records, exact, _ = planted
    _, summary, marks = marked
    # the oracle: documents whose lower-cased, whitespace-collapsed texts are equal
    by_text: dict[str, list[str]] = {}
    for r in records:
        by_text.setdefault(" ".join(r["text"].lower().split()), []).append(r["id"])
    expected = sorted(sorted(g) for g in by_text.values() if len(g) > 1)
    groups = marks.group_by("dup_group").agg(pl.col("id").sort(), pl.col("dup_exact").sum())
    found = groups.filter(pl.col("id").list.len() > 1)
    assert sorted(found.get_column("id").to_list()) == expected
    assert all(s == len(g) - 1 for s, g in zip(found["dup_exact"], found["id"], strict=True))
    assert all(sorted([c, s]) in expected for c, s in exact.items())
    n_real = len(expected) - len(exact)  # the demo corpus holds one real pair of equal lines
    assert n_real == 1 and summary["exact_duplicates"] == len(exact) + n_real
    assert marks.filter(pl.col("dup_exact") > 0).height == summary["exact_duplicates"]


def test_near_finds_the_plants_and_no_false_pairs(planted, marked) -> None:
    _, records, exact, near = planted
    _, summary, marks = marked
    assert (summary["bands"], summary["rows"]) == (9, 13)
    cluster = dict(zip(marks["id"], marks["dup_cluster"], strict=True))
    found = sum(cluster[c] == cluster[s] for c, s in near.items())
    assert found / len(near) >= 0.9
    assert all(cluster[c] == cluster[s] for c, s in exact.items())  # exact copies are near too
    text = {r["id"]: r["text"] for r in records}
    for ids in marks.group_by("dup_cluster").agg("id").get_column("id"):
        for other in ids[1:]:  # every pair put together is similar (no chance pairs)
            assert _jaccard(text[ids[0]], text[other]) >= 0.7, (ids[0], other)
    # one kept per cluster
    per = marks.group_by("dup_cluster").agg((pl.col("dup_near") == 0).sum().alias("kept"))
    assert per["kept"].to_list() == [1] * per.height
    assert marks.filter(pl.col("dup_near") > 0).height == summary["near_duplicates"]


def test_no_near_pairs_among_distinct_real_documents(demo_records: list[dict]) -> None:
    """Pairs of real documents below the threshold (all but three) are never in one bucket."""
    texts = [r["text"] for r in demo_records]
    from assay.selection.minhash import band_hashes

    bands = band_hashes(signatures(texts), 9, 13)
    for b in range(9):
        _, inverse, counts = np.unique(bands[:, b], return_inverse=True, return_counts=True)
        for i in np.flatnonzero(counts[inverse] > 1):
            mates = np.flatnonzero(inverse == inverse[i])
            assert all(_jaccard(texts[i], texts[j]) > 0.9 for j in mates)


def test_signatures_estimate_jaccard(real_texts: list[str]) -> None:
    a = real_texts[10]
    words = a.split()
    b = " ".join(words[: len(words) // 2] + ["x"] * 3 + words[len(words) // 2 :])
    c = " ".join(words[: 2 * len(words) // 3])
    sig = signatures([a, b, c], num_perm=256)
    for x, y in ((a, b), (a, c)):
        i, j = [a, b, c].index(x), [a, b, c].index(y)
        assert abs((sig[i] == sig[j]).mean() - _jaccard(x, y)) < 0.1
    assert optimal_bands(0.8, 128) == (9, 13)  # datasketch's MinHashLSH(0.8, 128)


def test_same_marks_with_workers_and_any_shard_order(planted, marked, tmp_path: Path) -> None:
    root = planted[0]
    _, summary, marks = marked
    out2 = tmp_path / "w2"
    two = dedup_corpus(Corpus(root / "corpus"), out2, runner=LocalRunner(workers=2))
    assert {k: v for k, v in two.items() if k != "keys"} == {
        k: v for k, v in summary.items() if k != "keys"
    }
    assert _marks(out2, Corpus(root / "corpus")).equals(marks)
    rev = Corpus(root / "reordered")
    assert [s.name[0] for s in rev.shards] == list("wxyz")  # the copies' shard comes first
    dedup_corpus(rev, tmp_path / "rev")
    assert _marks(tmp_path / "rev", rev).equals(marks)


def test_resume_reuses_finished_shards(planted, tmp_path: Path) -> None:
    root, records, _, _ = planted
    folder = tmp_path / "corpus"
    for f in (root / "corpus").iterdir():
        (folder / f.name).parent.mkdir(exist_ok=True)
        (folder / f.name).write_bytes(f.read_bytes())
    out = tmp_path / "dup"
    first = dedup_corpus(Corpus(folder), out, exact=True, near=False)
    keys = out / "_dedup" / "keys"
    stamp = {f.name: f.stat().st_mtime_ns for f in keys.glob("*.parquet")}
    sidecar = (out / "a.parquet").stat().st_mtime_ns
    assert dedup_corpus(Corpus(folder), out, exact=True, near=False) == first
    assert (out / "a.parquet").stat().st_mtime_ns == sidecar  # nothing redone
    # a new copy in shard d: only d's keys are made again, and the decision is redone
    extra = {**records[0], "id": "late-copy"}
    d_records = [r for b in Corpus(folder / "d.jsonl").iter_batches() for r in b.to_dicts()]
    write_jsonl(folder / "d.jsonl", [*d_records, extra])
    again = dedup_corpus(Corpus(folder), out, exact=True, near=False)
    assert again["exact_duplicates"] == first["exact_duplicates"] + 1
    now = {f.name: f.stat().st_mtime_ns for f in keys.glob("*.parquet")}
    assert [n for n in sorted(now) if now[n] != stamp[n]] == ["d.parquet"]
    with pytest.raises(StateError, match="other settings"):
        dedup_corpus(Corpus(folder), out, near=True)


def test_cli_dedup_then_select_keeps_one_per_group(planted, marked, tmp_path: Path) -> None:
    from assay.cli import app

    root = planted[0]
    _, _, marks = marked
    cli = CliRunner()
    res = cli.invoke(
        app, ["dedup", str(root / "corpus"), "--out", str(tmp_path / "d")], catch_exceptions=False
    )
    assert res.exit_code == 0, res.output
    assert "exact copies" in res.output and "near copies" in res.output
    scores = tmp_path / "d" / "scores"
    for column, group in (("dup_exact", "dup_group"), ("dup_near", "dup_cluster")):
        args = [
            "select", str(root / "corpus"), "--scores", str(scores), "--column", column,
            "--policy", "threshold", "--threshold", "0", "--mode", "bottom",
            "--out", str(tmp_path / f"sel-{column}"),
        ]  # fmt: skip
        sel = cli.invoke(app, args, catch_exceptions=False)
        assert sel.exit_code == 0, sel.output
        kept = Corpus(tmp_path / f"sel-{column}" / "selected")
        kept_ids = {i for b in kept.iter_batches() for i in b.get_column("id")}
        assert kept_ids == set(marks.filter(pl.col(column) == 0)["id"])
        kept_groups = marks.filter(pl.col("id").is_in(kept_ids))[group]
        assert kept_groups.n_unique() == kept_groups.len() == marks[group].n_unique()
    res = select(
        Corpus(root / "corpus"), scores, tmp_path / "sel2", column="dup_exact",
        policy="threshold", threshold=0, mode="bottom",
    )  # fmt: skip
    assert res.kept_docs == res.docs - int(marks["dup_exact"].sum())


def test_recipe_dedup_then_select(planted, marked, tmp_path: Path) -> None:
    from assay.recipe.pipeline import run_recipe

    root = planted[0]
    _, _, marks = marked
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"name: dedup\nseed: 0\ncorpus: {{paths: [{root / 'corpus'}]}}\nsteps:\n"
        "  - dedup: {}\n"
        "  - select: {scores: [dedup], column: dup_near, policy: threshold,"
        " threshold: 0, mode: bottom}\n"
    )
    run_recipe(recipe, run_dir=tmp_path / "run")
    kept = Corpus(tmp_path / "run" / "select" / "selected")
    ids = {i for b in kept.iter_batches() for i in b.get_column("id")}
    assert ids == set(marks.filter(pl.col("dup_near") == 0)["id"])


def test_documents_without_words_are_no_near_copies(tmp_path: Path) -> None:
    docs = ["Hello   world", "!!!", "?? ..", "hello world", "!!!"]
    write_jsonl(
        tmp_path / "c" / "a.jsonl", [{"id": f"d{i}", "text": t} for i, t in enumerate(docs)]
    )
    corpus = Corpus(tmp_path / "c")
    summary = dedup_corpus(corpus, tmp_path / "o")
    marks = _marks(tmp_path / "o", corpus)
    exact, group = marks["dup_exact"].to_list(), marks["dup_group"].to_list()
    near, cluster = marks["dup_near"].to_list(), marks["dup_cluster"].to_list()
    assert group[0] == group[3] and group[1] == group[4] and len(set(group)) == 3
    assert exact[0] + exact[3] == exact[1] + exact[4] == 1 and exact[2] == 0
    # only "hello world" is near another: the documents without words stay apart
    assert cluster[0] == cluster[3] and len(set(cluster)) == 4
    assert near[0] + near[3] == 1 and near[1] == near[2] == near[4] == 0
    assert (summary["exact_duplicates"], summary["near_duplicates"]) == (2, 1)


def test_verify_drops_candidates_below_the_threshold(planted, tmp_path: Path) -> None:
    """Loose bands (32 x 4) make a pair at Jaccard ~0.6 a candidate; verification at 0.8
    rejects it and keeps the planted near copies (Jaccard >= 0.85)."""
    _, records, _, near = planted
    fresh = [r for r in records if r["id"] not in near.values()]
    source = next(r for r in fresh if 300 <= len(r["text"].split()) <= 600)
    words = source["text"].split()
    for at in range(10, len(words), 20):
        words[at] = "zebra"
    loose = {**source, "id": "loose", "text": " ".join(words)}
    assert 0.5 < _jaccard(source["text"], loose["text"]) < 0.7
    text = {r["id"]: r for r in records}
    pairs = [p for c, s in near.items() for p in (text[c], text[s])]
    write_jsonl(tmp_path / "c" / "a.jsonl", [source, loose, *pairs])
    corpus = Corpus(tmp_path / "c")
    kw = {"exact": False, "bands": 32, "rows": 4}
    clusters = {}
    for verify in (False, True):
        dedup_corpus(corpus, tmp_path / f"o{verify}", verify=verify, **kw)
        marks = _marks(tmp_path / f"o{verify}", corpus)
        clusters[verify] = dict(zip(marks["id"], marks["dup_cluster"], strict=True))
    assert clusters[False]["loose"] == clusters[False][source["id"]]
    assert clusters[True]["loose"] != clusters[True][source["id"]]
    assert all(clusters[True][c] == clusters[True][s] for c, s in near.items())


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="exact or near"):
        DedupSettings(exact=False, near=False)
    with pytest.raises(ValueError, match="both bands and rows"):
        DedupSettings(bands=4)
    with pytest.raises(ValueError, match="at most num_perm"):
        DedupSettings(bands=20, rows=10)
    assert DedupSettings(bands=16, rows=8).banding() == (16, 8)
