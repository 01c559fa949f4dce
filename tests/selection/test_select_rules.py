"""Richer selection rules: a filter expression before the policy, and stratified selection."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from conftest import write_select_keys

from assay.exec.runner import LocalRunner
from assay.io.corpus import Corpus
from assay.selection.decide import decide
from assay.selection.doc_stats import DocStatsScorer
from assay.selection.policies import cut_groups_owned, topk_mask
from assay.selection.score import score_corpus
from assay.selection.select import SelectConfig, select
from assay.selection.where import parse_where
from assay.util.hashing import mix64, stable_hash64

ROOT = Path(__file__).parent.parent.parent

# -- the expression language ---------------------------------------------------------------------

FRAME = pl.DataFrame(
    {
        "quality": [0.1, 0.7, float("nan"), None, 0.9, 0.65],
        "n_chars": [100, 300, 500, 600, 150, 200],
        "domain": ["news", "code", None, "math", "news", "code"],
        "dup": [True, False, True, None, False, False],
    },
    schema_overrides={"quality": pl.Float32},
)


@pytest.mark.parametrize(
    ("text", "reference"),
    [
        ("quality > 0.6 and n_chars >= 200", (pl.col("quality") > 0.6) & (pl.col("n_chars") >= 200)),
        ("quality > 0.6 and n_chars < 200 or domain == 'code'",
         ((pl.col("quality") > 0.6) & (pl.col("n_chars") < 200)) | (pl.col("domain") == "code")),
        ("not (quality <= 0.6)", ~(pl.col("quality") <= 0.6)),
        ("0.5 < quality <= 0.7", (pl.col("quality") > 0.5) & (pl.col("quality") <= 0.7)),
        ("domain in ('news', 'math')", pl.col("domain").is_in(["news", "math"])),
        ("domain not in ['news']", ~pl.col("domain").is_in(["news"])),
        ("domain is null", pl.col("domain").is_null()),
        ("domain is not null and n_chars != -1", pl.col("domain").is_not_null()),
        ("n_chars in (100, 150.0)", pl.col("n_chars").is_in([100, 150])),
        ("not dup", ~pl.col("dup")),
        ("dup == false", pl.col("dup") == False),  # noqa: E712
        ("n_chars >= quality", pl.col("n_chars") >= pl.col("quality")),
        ("true", pl.lit(True)),
    ],
)  # fmt: skip
def test_where_keeps_what_the_polars_expression_keeps(text: str, reference: pl.Expr) -> None:
    where = parse_where(text)
    got = FRAME.with_row_index().filter(where.compile(dict(FRAME.schema)))
    # a NaN score compares as unknown, like a null: it never passes
    clean = FRAME.with_row_index().with_columns(pl.col("quality").fill_nan(None))
    assert (
        got.get_column("index").to_list() == clean.filter(reference).get_column("index").to_list()
    )


def test_a_field_without_values_in_a_batch_compares_as_unknown() -> None:
    """A JSON field that is null throughout a batch has polars' Null type there."""
    frame = pl.DataFrame({"source": [None, None, None], "q": [0.1, 0.5, 0.9]})
    for text, kept in [
        ("source == 'web' or q > 0.4", 2),
        ("source in ('web', 'books') or q > 0.8", 1),
        ("source is null and q < 0.4", 1),
        ("not source or q > 0.8", 1),
        ("source", 0),
    ]:
        assert frame.filter(parse_where(text).compile(dict(frame.schema))).height == kept, text


def test_where_records_its_columns_and_normalises_its_text() -> None:
    where = parse_where("  quality > 0.6\n  and (n_chars >= 200 or quality > 0.9)  ")
    assert where.columns == ("quality", "n_chars")
    assert where.text == "quality > 0.6   and (n_chars >= 200 or quality > 0.9)"
    assert SelectConfig(column="q", keep=0.1, where=" q > 1 ").where == "q > 1"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("__import__('os').system('true')", "is a function call"),
        ("__import__('os')", "is a function call"),
        ("open('/etc/passwd') == 'x'", "is a function call"),
        ("quality.__class__ == 1", "is an attribute"),
        ("().__class__ == 1", "is an attribute"),
        ("quality[0] > 1", "is a subscript"),
        ("quality + 1 > 2", "is arithmetic"),
        ("-quality > 1", "a sign goes before a number"),
        ("[c for c in quality] == 1", "is not allowed"),
        ("(lambda: 1) == 1", "is not allowed"),
        ("f'{quality}' == 'a'", "is not allowed"),
        ("quality == None", "goes only after 'is'"),
        ("domain is 'news'", "use 'is null'"),
        ("domain in domain", "must be a list of values"),
        ("domain in ('a', n_chars)", "is not a literal value"),
        ("quality > 1; import os", "syntax error at position 12"),
        ("quality = 1", "syntax error at position 9"),
        ("quality > 0.5 and (n_chars", "syntax error at position 19"),
        ("not " * 1000 + "dup", "nested more than 64 deep"),
        ("(" * 300 + "dup" + ")" * 300, "syntax error"),
        ("x" * 5000, "longer than 4096"),
        ("", "empty"),
    ],
)
def test_where_refuses_what_is_not_in_the_language(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_where(text).compile(dict(FRAME.schema))


def test_where_explains_unknown_columns_and_types_with_their_position() -> None:
    schema = dict(FRAME.schema)
    with pytest.raises(ValueError) as e:
        parse_where("quality > 0.5 and qualty < 2").compile(schema)
    assert "qualty at position 19 is not a column; available: quality, n_chars, domain, dup" in str(
        e.value
    )
    assert str(e.value).endswith("\n  quality > 0.5 and qualty < 2\n                    ^")
    for text, message in [
        ("quality > 'high'", "'high' at position 11 is a text, compared with a number"),
        ("domain > 1", "1 at position 10 is a number, compared with a text"),
        ("domain in ('a', 1)", "1 at position 17 is a number, compared with a text"),
        ("quality", "quality at position 1 is a number, not a condition"),
        ("quality > 1 and n_chars", "n_chars at position 17 is a number, not a condition"),
        ("dup < true", "orders true/false with <"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_where(text).compile(schema)
    # a bad expression stops a recipe or a command when its settings are read
    with pytest.raises(ValueError, match="syntax error"):
        SelectConfig(column="q", keep=0.1, where="q >")


def test_settings_refuse_what_stratification_cannot_do() -> None:
    with pytest.raises(ValueError, match="stratify needs group_by"):
        SelectConfig(column="q", keep=0.1, stratify=True, group_by=None)
    with pytest.raises(ValueError, match="stratify needs the topk or gumbel policy"):
        SelectConfig(column="q", policy="threshold", threshold=0.1, stratify=True)
    with pytest.raises(ValueError, match="mode 'middle'"):
        SelectConfig(column="q", keep=0.1, mode="middle", stratify=True)
    with pytest.raises(ValueError, match="keep_of"):
        SelectConfig(column="q", keep=0.1, keep_of="all")  # type: ignore[arg-type]


# -- stratified cuts on arrays -------------------------------------------------------------------


def test_a_stratified_cut_is_the_cut_of_each_group_alone() -> None:
    rng = np.random.default_rng(0)
    n = 5000
    score = np.round(rng.normal(size=n), 1)  # many exact ties
    weight = rng.integers(1, 500, n).astype(np.float64)
    tb = rng.integers(0, 2**53, n).astype(np.float64)
    codes = rng.integers(0, 7, n).astype(np.int32)
    keep = np.array([0.1, 0.3, 0.5, 1.0, 0.25, 0.05, 0.7])
    mask = cut_groups_owned([score.copy(), tb.copy(), weight.copy()], [codes.copy()], keep)
    for c in range(7):
        g = codes == c
        alone = topk_mask(score[g], keep[c], weights=weight[g], tiebreak=tb[g])
        assert np.array_equal(mask[g], alone), c
    # one group: the global cut, bit for bit
    one = cut_groups_owned([score.copy(), tb.copy(), weight], [np.zeros(n, np.int32)], [0.3])
    assert np.array_equal(one, topk_mask(score, 0.3, weights=weight, tiebreak=tb))


# -- corpus-level --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory, demo_dir: Path) -> tuple[Corpus, Path]:
    out = tmp_path_factory.mktemp("scores")
    corpus = Corpus(demo_dir / "train")
    score_corpus(DocStatsScorer(), corpus, out)
    return corpus, out


def _docs(corpus: Corpus, scores: Path) -> pl.DataFrame:
    return pl.concat(list(corpus.iter_batches())).join(
        pl.concat([pl.read_parquet(p) for p in scores.glob("*.parquet")]), on="id"
    )


def _kept_ids(folder: Path) -> list[str]:
    batches = [b for p in folder.glob("[!._]*.jsonl.gz") for b in Corpus(p).iter_batches()]
    return sorted(pl.concat(batches).get_column("id"))


def _closest_k(cum: np.ndarray, target: float) -> int:
    k = min(int(np.searchsorted(cum, target, side="left")) + 1, len(cum))
    return k - 1 if k > 1 and abs(cum[k - 2] - target) <= abs(cum[k - 1] - target) else k


@pytest.mark.parametrize(
    ("keep_of", "by", "keep"),
    [("passed", "docs", 0.3), ("corpus", "chars", 0.1), ("corpus", "docs", 0.8)],
)
def test_filter_then_topk_keeps_what_polars_keeps(
    tmp_path: Path, scored: tuple[Corpus, Path], keep_of: str, by: str, keep: float
) -> None:
    corpus, scores = scored
    where = "alpha_frac > 0.6 and (n_chars >= 1000 or domain == 'math')"
    cfg = SelectConfig(
        column="unique_word_frac", keep=keep, by=by, where=where, keep_of=keep_of, seed=5
    )
    result = select(corpus, scores, tmp_path / "sel", cfg)
    # the reference, by hand: filter with polars, sort, cut where the weight is closest
    docs = _docs(corpus, scores).with_columns(
        weight=pl.col("text").str.len_chars().cast(pl.Float64) if by == "chars" else pl.lit(1.0),
        tb=pl.Series(mix64(stable_hash64(_docs(corpus, scores)["id"].to_list()), 5)).cast(
            pl.Float64
        ),
    )
    passed = docs.filter(
        (pl.col("alpha_frac") > 0.6) & ((pl.col("n_chars") >= 1000) | (pl.col("domain") == "math"))
    )
    assert 0 < passed.height < docs.height
    ranked = passed.sort(["unique_word_frac", "tb"], descending=True)
    cum = ranked.get_column("weight").cum_sum().to_numpy()
    whole = docs.get_column("weight").sum() if keep_of == "corpus" else cum[-1]
    k = _closest_k(cum, min(keep * whole, cum[-1]))
    expected = sorted(ranked.head(k).get_column("id"))
    assert _kept_ids(tmp_path / "sel") == expected
    assert (result.passed_docs, result.passed_weight) == (passed.height, cum[-1])
    assert (result.docs, result.kept_docs) == (docs.height, k)
    if keep == 0.8:  # more than all that passed: all that passed
        assert k == passed.height
    groups = passed.group_by("domain").len()
    for g, n in groups.iter_rows():
        assert result.groups[g]["passed_docs"] == n


@pytest.mark.parametrize(
    ("by", "policy", "keep_of"),
    [("docs", "topk", "corpus"), ("chars", "gumbel", "corpus"), ("chars", "topk", "passed")],
)
def test_stratified_keeps_the_same_fraction_of_every_group(
    tmp_path: Path, scored: tuple[Corpus, Path], by: str, policy: str, keep_of: str
) -> None:
    corpus, scores = scored
    filtered = keep_of == "passed"
    cfg = SelectConfig(
        column="alpha_frac", keep=0.3, by=by, policy=policy, stratify=True, seed=3,
        where="n_chars >= 500" if filtered else None, keep_of=keep_of,
    )  # fmt: skip
    result = select(corpus, scores, tmp_path / "sel", cfg)
    docs = _docs(corpus, scores).with_columns(
        pl.col("text").str.len_chars().alias("chars"),
        passed=pl.col("n_chars") >= 500 if filtered else pl.lit(True),
    )
    kept = set(_kept_ids(tmp_path / "sel"))
    assert len(result.groups) == 4
    for g, counts in result.groups.items():
        mine = docs.filter(pl.col("domain") == g)
        base = mine.filter("passed")
        weights = base.get_column("chars") if by == "chars" else pl.Series([1] * base.height)
        total = float(weights.sum())
        got = float(weights.filter(base.get_column("id").is_in(list(kept))).sum())
        assert counts["kept_weight"] == got
        # within rounding: the cut is whole documents, at most one off the target
        assert abs(got - 0.3 * total) <= max(weights) / 2 + 1e-9, g
        if by == "docs":
            assert counts["kept_docs"] == 27  # 30% of 90, in every domain
        assert not mine.filter(~pl.col("passed")).get_column("id").is_in(list(kept)).any()
    # top-k within each group: what a per-group topk over the same keys keeps
    if policy == "topk":
        for g in result.groups:
            mine = docs.filter((pl.col("domain") == g) & pl.col("passed"))
            w = mine.get_column("chars").to_numpy().astype(float) if by == "chars" else None
            tb = mix64(stable_hash64(mine.get_column("id").to_list()), 3)
            m = topk_mask(mine.get_column("alpha_frac").to_numpy(), 0.3, weights=w, tiebreak=tb)
            assert set(mine.get_column("id").filter(m)) == {i for i in kept if i.startswith(g)}


def test_stratified_gumbel_same_seed_same_ids(tmp_path: Path, scored: tuple[Corpus, Path]) -> None:
    corpus, scores = scored
    settings = {"column": "unique_word_frac", "policy": "gumbel", "keep": 0.3, "tau": 0.2}
    settings |= {"stratify": True, "where": "dup_line_frac < 0.2", "by": "chars"}
    a = select(corpus, scores, tmp_path / "a", SelectConfig(**settings, seed=7))
    b = select(
        corpus, scores, tmp_path / "b", SelectConfig(**settings, seed=7),
        runner=LocalRunner(workers=2),
    )  # fmt: skip
    c = select(corpus, scores, tmp_path / "c", SelectConfig(**settings, seed=8))
    assert _kept_ids(tmp_path / "a") == _kept_ids(tmp_path / "b")
    assert a.to_dict() | {"out_dir": ""} == b.to_dict() | {"out_dir": ""}
    assert _kept_ids(tmp_path / "a") != _kept_ids(tmp_path / "c")
    assert abs(c.kept_weight - a.kept_weight) / a.kept_weight < 0.05


def test_unset_rules_change_nothing_and_old_folders_resume(
    tmp_path: Path, scored: tuple[Corpus, Path]
) -> None:
    corpus, scores = scored
    plain = select(corpus, scores, tmp_path / "p", column="alpha_frac", keep=0.3, by="chars")
    # a filter that everything passes, its fraction of what passed: the same documents
    every = select(
        corpus, scores, tmp_path / "w", column="alpha_frac", keep=0.3, by="chars",
        where="n_chars > 0", keep_of="passed",
    )  # fmt: skip
    assert _kept_ids(tmp_path / "p") == _kept_ids(tmp_path / "w")
    assert (every.kept_docs, every.passed_docs) == (plain.kept_docs, plain.docs)
    assert plain.passed_docs is None
    # a folder written before these settings existed resumes without "other settings"
    config = tmp_path / "p" / "_select" / "config.json"
    old = {k: v for k, v in json.loads(config.read_text()).items()
           if k not in ("where", "keep_of", "stratify")}  # fmt: skip
    config.write_text(json.dumps(old))
    again = select(corpus, scores, tmp_path / "p", column="alpha_frac", keep=0.3, by="chars")
    assert again.to_dict() == plain.to_dict()
    with pytest.raises(ValueError, match=r"other settings \(stratify differ"):
        select(corpus, scores, tmp_path / "p", column="alpha_frac", keep=0.3, by="chars",
               stratify=True)  # fmt: skip


def test_columns_the_filter_and_groups_name(
    tmp_path: Path, scored: tuple[Corpus, Path], demo_dir: Path
) -> None:
    corpus, scores = scored
    with pytest.raises(ValueError, match=r"nope at position 1 is not a column; available: score "
                       r"columns n_chars, .*; fields of the corpus id, text, domain, source"):  # fmt: skip
        select(corpus, scores, tmp_path / "a", column="alpha_frac", keep=0.3, where="nope > 1")
    with pytest.raises(ValueError, match="'x' at position 11 is a text, compared with a number"):
        select(corpus, scores, tmp_path / "b", column="alpha_frac", keep=0.3, where="n_chars > 'x'")
    assert not (tmp_path / "b" / "_select").exists()  # refused before any work
    # a group column from a scores folder (a cluster label), not the corpus
    labels = tmp_path / "labels"
    labels.mkdir()
    for p in scores.glob("*.parquet"):
        ids = pl.read_parquet(p, columns=["id"])
        ids.with_columns(
            cluster=pl.col("id").str.len_chars().mod(3).cast(pl.String).str.replace("^", "c")
        ).write_parquet(labels / p.name)
    (labels / "_scores.json").write_text(json.dumps({"columns": ["cluster"]}))
    r = select(
        corpus, [scores, labels], tmp_path / "c", column="alpha_frac", keep=0.25,
        stratify=True, group_by="cluster",
    )  # fmt: skip
    assert set(r.groups) == {"c0", "c1", "c2"}
    for g in r.groups.values():
        assert abs(g["kept_docs"] - 0.25 * g["docs"]) <= 0.5
    with pytest.raises(ValueError, match="stratify: the group column 'topic' is neither"):
        select(corpus, scores, tmp_path / "d", column="alpha_frac", keep=0.3, stratify=True,
               group_by="topic")  # fmt: skip


# -- the decision's memory -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings",
    [
        {"stratify": True},
        {"stratify": True, "policy": "gumbel", "where": "q > 0", "keep_of": "passed"},
        {"where": "q > 0"},
    ],
)
def test_the_decision_with_rules_holds_a_few_dozen_bytes_per_document(
    tmp_path: Path, settings: dict
) -> None:
    files = write_select_keys(tmp_path, 60_000, 3, [f"g{i}" for i in range(20)], passed=True)
    cfg = SelectConfig(column="q", keep=0.3, by="chars", seed=1, **settings)
    tracemalloc.start()
    try:
        mask = decide(files, cfg)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak / 180_000 <= 56  # per document of the corpus; the bound is 64
    keys = pl.concat([pl.read_parquet(f) for f in files])
    if cfg.where is not None:
        assert len(mask) == keys.get_column("passed").sum()
        keys = keys.filter("passed")
    assert len(mask) == keys.height
    if not cfg.stratify or cfg.policy != "topk":
        return
    score, w, h = (keys.get_column(c).to_numpy() for c in ("score", "weight", "hash"))
    group = keys.get_column("group").to_numpy()
    for g in np.unique(group):
        in_g = group == g
        alone = topk_mask(score[in_g], 0.3, weights=w[in_g], tiebreak=mix64(h[in_g], 1))
        assert np.array_equal(mask[in_g], alone)


# -- the command line and the recipe -------------------------------------------------------------


def test_the_select_verb_takes_the_rules(
    tmp_path: Path, scored: tuple[Corpus, Path], demo_dir: Path
) -> None:
    from click.testing import CliRunner

    from assay.cli import app

    _, scores = scored
    help_text = " ".join(CliRunner().invoke(app, ["select", "--help"]).output.split())
    assert "--where" in help_text and "--keep-of" in help_text and "--stratify" in help_text
    args = [
        "select", str(demo_dir / "train"), "--scores", str(scores), "--column", "unique_word_frac",
        "--where", "n_chars >= 200 and alpha_frac >= 0.5", "--keep", "0.3", "--keep-of", "passed",
        "--stratify", "--out", str(tmp_path / "o"),
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "passed the filter" in result.output
    summary = json.loads((tmp_path / "o" / "selected" / "_selection.json").read_text())
    assert summary["config"]["where"] == "n_chars >= 200 and alpha_frac >= 0.5"
    for g in summary["groups"].values():
        assert abs(g["kept_docs"] - 0.3 * g["passed_docs"]) <= 0.5
    bad = CliRunner().invoke(app, [*args[:-1], str(tmp_path / "x"), "--where", "n_chars >"])
    assert bad.exit_code == 2 and "syntax error at position" in bad.output


def test_the_filter_stratify_recipe(tmp_path: Path, demo_dir: Path) -> None:
    from assay.recipe.pipeline import run_recipe
    from assay.recipe.recipe import parse_recipe

    data = yaml.safe_load((ROOT / "recipes" / "filter_stratify.yaml").read_text())
    data["corpus"] = {"paths": [str(demo_dir / "train")]}
    data["steps"] = [s for s in data["steps"] if "demo_corpus" not in s]
    recipe = parse_recipe(data, ["balanced.where=n_chars >= 300 and domain != 'code'"])
    outcome = run_recipe(recipe, run_dir=tmp_path / "run", progress=False)
    assert [s.status for s in outcome.steps] == ["ran", "ran"]
    summary = json.loads((tmp_path / "run" / "balanced" / "step.json").read_text())["summary"]
    groups = summary["groups"]
    assert groups["code"]["kept_docs"] == groups["code"]["passed_docs"] == 0
    for g in ("news", "math", "reference"):
        share = groups[g]["kept_weight"] / groups[g]["passed_weight"]
        assert abs(share - 0.3) < 0.05, (g, share)
