"""The `assay` command line. Each verb parses its options and calls one library function."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from assay.cli.common import (
    Address,
    IdField,
    MaxChars,
    NoProgress,
    OnError,
    Overwrite,
    Paths,
    RunnerKind,
    TextField,
    Workers,
    _corpus,
    _params,
    _runner,
    err,
    out,
)

app = typer.Typer(
    help="Score, select and mix language-model pretraining data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _fmt_pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _model_spec(item: str) -> dict[str, Any]:
    """`PATH[:SCORE]` as a family model: split on the last ':' only when the rest is a number."""
    path, sep, tail = item.rpartition(":")
    if sep and path:
        try:
            return {"path": path, "score": float(tail)}
        except ValueError:
            pass
    return {"path": item}


def _print_validation(fasttext_report: dict[str, Any]) -> None:
    val = fasttext_report.get("validation", {})
    if val:
        out.print(
            f"classifier held-out accuracy {val['accuracy']:.3f}, ROC AUC {val['auc']:.3f} (n={val['n']})"
        )
    else:
        out.print("too few documents for a held-out check of the classifier")


# -- verbs ---------------------------------------------------------------------------------------


@app.command("demo-corpus")
def demo_corpus(
    out_dir: Annotated[
        Path, typer.Argument(help="Folder to write train/ and heldout/ shards into.")
    ],
    size: Annotated[
        str,
        typer.Option(help="'full' (about 6k documents) or 'small' (100 per domain, for tests)."),
    ] = "full",
    heldout: Annotated[
        float, typer.Option(help="Share of each domain held out for evaluation.")
    ] = 0.1,
    seed: Annotated[
        int, typer.Option(help="Seed of the per-domain subsample and the held-out split.")
    ] = 0,
    overwrite: Overwrite = False,
) -> None:
    """Build the real-text demo corpus (news, math, code, reference) from pip-installed packages."""
    from assay.demo import build_demo_corpus

    manifest = build_demo_corpus(
        out_dir, size=size, heldout=heldout, seed=seed, overwrite=overwrite
    )
    table = Table(title=f"demo corpus in {out_dir}")
    for col in ("domain", "train docs", "held-out docs", "train chars", "sources"):
        table.add_column(col)
    for d, c in manifest["domains"].items():
        table.add_row(
            d,
            f"{c['train_docs']:,}",
            f"{c['heldout_docs']:,}",
            f"{c['train_chars']:,}",
            ", ".join(c["sources"])[:60],
        )
    out.print(table)


@app.command()
def stats(
    paths: Paths,
    group_by: Annotated[
        str, typer.Option("--group-by", help="Column to break counts down by ('' for none).")
    ] = "domain",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    text_field: TextField = "text",
    id_field: IdField = "id",
    on_error: OnError = "fail",
    max_chars: MaxChars = 10_000_000,
    runner: RunnerKind = "local",
    workers: Workers = None,
    address: Address = None,
    no_progress: NoProgress = False,
) -> None:
    """Count documents and characters of a corpus, per shard group and length bucket."""
    from assay.exec.stats import corpus_stats

    corpus = _corpus(paths, text_field, id_field, on_error, max_chars)
    result = corpus_stats(
        corpus,
        group_by=group_by or None,
        runner=_runner(runner, workers, address, no_progress or as_json),
    )
    if as_json:
        print(json.dumps(result, indent=2))
        return
    out.print(
        f"[bold]{result['docs']:,}[/] documents, {result['chars']:,} characters in {result['shards']} shards (mean {result['mean_chars']:,.0f} chars)"
    )
    if result["skipped"]:
        out.print(f"skipped: {result['skipped']}")
    if result["groups"]:
        t = Table(title=f"by {result['group_by']}")
        for c in (result["group_by"], "docs", "share of docs", "chars", "share of chars"):
            t.add_column(c)
        for g, v in result["groups"].items():
            t.add_row(
                g,
                f"{v['docs']:,}",
                _fmt_pct(v["docs"] / max(result["docs"], 1)),
                f"{v['chars']:,}",
                _fmt_pct(v["chars"] / max(result["chars"], 1)),
            )
        out.print(t)
    h = Table(title="document length (characters)")
    h.add_column("range")
    h.add_column("docs")
    for k, v in result["length_histogram"].items():
        h.add_row(k, f"{v:,}")
    out.print(h)


@app.command("train-classifier")
def train_classifier(
    positive: Annotated[
        list[str],
        typer.Option(
            "--positive",
            "-p",
            help="High-quality / target documents (files, folders, globs). Repeatable.",
        ),
    ],
    negative: Annotated[
        list[str],
        typer.Option(
            "--negative",
            "-n",
            help="Documents to contrast with, usually the pool itself. Repeatable.",
        ),
    ],
    model_out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder to save the classifier into.")
    ],
    n: Annotated[
        int,
        typer.Option(
            help="Documents sampled from each side (uniformly, by seeded hash of the id)."
        ),
    ] = 10_000,
    column: Annotated[
        str, typer.Option(help="Name of the score column the classifier writes.")
    ] = "quality",
    seed: Annotated[int, typer.Option(help="Seed for sampling and fastText.")] = 0,
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            help="fastText setting as key=value (lr, epoch, wordNgrams, dim, minCount, bucket, ...). Repeatable.",
        ),
    ] = None,
    no_balance: Annotated[
        bool, typer.Option("--no-balance", help="Do not down-sample the larger class.")
    ] = False,
    text_field: TextField = "text",
    id_field: IdField = "id",
    on_error: OnError = "fail",
    max_chars: MaxChars = 10_000_000,
) -> None:
    """Train a DCLM-style fastText quality classifier (score = P(positive))."""
    from assay.selection.fasttext import train_quality_classifier

    pos = _corpus(positive, text_field, id_field, on_error, max_chars)
    neg = _corpus(negative, text_field, id_field, on_error, max_chars)
    pos.check_output(model_out, "model folder")
    neg.check_output(model_out, "model folder")
    scorer = train_quality_classifier(
        pos, neg, n=n, seed=seed, column=column, params=_params(param), balance=not no_balance
    )
    scorer.save(model_out)
    rep = scorer.report
    val = rep.get("validation", {})
    out.print(
        f"trained on {rep['positive']:,} positive and {rep['negative']:,} negative documents in {rep['train_seconds']:.1f}s"
    )
    if val:
        out.print(
            f"held-out accuracy {val['accuracy']:.3f}, ROC AUC {val['auc']:.3f} (n={val['n']})"
        )
    else:
        out.print("too few documents for a held-out check (need 20 per class)")
    out.print(f"saved to {model_out}")


Targets = Annotated[
    str,
    typer.Option(
        "--targets",
        "-t",
        help="Target examples: a built-in benchmark (assay_champ, assay_mmlu_dev) or a .jsonl/.json/.parquet file of records.",
    ),
]
TargetFields = Annotated[
    list[str] | None,
    typer.Option(
        "--field",
        help="Record field joined into a target example, in order (default: text if the records have it, else question and answer). Repeatable.",
    ),
]
MaxTargets = Annotated[
    int | None,
    typer.Option("--max-targets", help="Use a seeded sample of at most this many target examples."),
]
PositiveFraction = Annotated[
    float,
    typer.Option(
        "--positive-fraction",
        help="Share of the ranked sample labelled positive for the classifier.",
    ),
]
FastTextParams = Annotated[
    list[str] | None,
    typer.Option(
        "--param",
        help="fastText setting as key=value (lr, epoch, wordNgrams, dim, minCount, bucket, ...). Repeatable.",
    ),
]


@app.command()
def betr(
    paths: Paths,
    targets: Targets,
    model_out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder to save the BETR scorer into.")
    ],
    field: TargetFields = None,
    max_targets: MaxTargets = None,
    sample: Annotated[
        int,
        typer.Option(
            help="Pool documents ranked against the targets (uniformly, by seeded hash of the id)."
        ),
    ] = 10_000,
    embedder: Annotated[
        str | None,
        typer.Option(
            help="Embedding model: a local sentence-transformers or model2vec folder, or 'static' (distilled from the bundled MiniLM once, cached); default all-MiniLM-L6-v2."
        ),
    ] = None,
    long_docs: Annotated[
        str,
        typer.Option(
            "--long-docs",
            help="Documents longer than the embedder's context: 'truncate' or 'mean' (average of chunk embeddings).",
        ),
    ] = "truncate",
    aggregation: Annotated[
        str,
        typer.Option(
            help="'max' (a document's best rank over target examples, as in the paper) or 'mean' (mean log inverse rank)."
        ),
    ] = "max",
    positive_fraction: PositiveFraction = 0.1,
    column: Annotated[
        str, typer.Option(help="Name of the score column the scorer writes.")
    ] = "betr",
    param: FastTextParams = None,
    seed: Annotated[int, typer.Option(help="Seed of the samples, labels and fastText.")] = 0,
    text_field: TextField = "text",
    id_field: IdField = "id",
    on_error: OnError = "fail",
    max_chars: MaxChars = 10_000_000,
    no_progress: NoProgress = False,
) -> None:
    """Fit BETR: rank a pool sample by embedding similarity to target examples, distil into fastText."""
    from assay.selection.betr import fit_betr

    corpus = _corpus(paths, text_field, id_field, on_error, max_chars)
    corpus.check_output(model_out, "model folder")
    scorer = fit_betr(
        corpus, targets, sample=sample, fields=field or None, max_targets=max_targets, seed=seed,
        progress=not no_progress, column=column, embedder={"model": embedder, "long_docs": long_docs},
        aggregation=aggregation, positive_fraction=positive_fraction, params=_params(param),
    )  # fmt: skip
    scorer.save(model_out)
    print_betr(scorer.report)
    out.print(
        f"saved to {model_out}; score the corpus with: assay score {' '.join(paths)} --model {model_out} --out SCORES",
        highlight=False,
        soft_wrap=True,
    )


def print_betr(rep: dict[str, Any]) -> None:
    out.print(
        f"{rep['targets']:,} target examples ranked {rep['sample']:,} sampled documents "
        f"({rep['aggregation']} aggregation); {rep['positives']:,} positives"
        + (
            f" (worst positive rank {rep['worst_positive_rank']:,})"
            if "worst_positive_rank" in rep
            else ""
        )
    )
    _print_validation(rep["fasttext"])


@app.command()
def preselect(
    paths: Paths,
    model: Annotated[
        list[str],
        typer.Option(
            "--model",
            "-m",
            help="A model of the family as PATH[:SCORE]: a local causal LM folder and, optionally, its benchmark score (higher is better). At least 3. Repeatable.",
        ),
    ],
    model_out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder to save the PreSelect scorer into.")
    ],
    targets: Annotated[
        str | None,
        typer.Option(
            "--targets",
            "-t",
            help="Target examples that give models without a SCORE one (minus bits per character on them): assay_champ, assay_mmlu_dev or a .jsonl/.json/.parquet file.",
        ),
    ] = None,
    field: TargetFields = None,
    max_targets: MaxTargets = None,
    calibration: Annotated[
        int,
        typer.Option(
            help="Pool documents every model scores (uniformly, by seeded hash of the id)."
        ),
    ] = 2_000,
    positive_fraction: Annotated[
        float,
        typer.Option(
            "--positive-fraction",
            help="Share labelled positive when too few documents have perfect predictive strength.",
        ),
    ] = 0.1,
    column: Annotated[
        str, typer.Option(help="Name of the score column the scorer writes.")
    ] = "preselect",
    param: FastTextParams = None,
    seed: Annotated[int, typer.Option(help="Seed of the samples, labels and fastText.")] = 0,
    text_field: TextField = "text",
    id_field: IdField = "id",
    on_error: OnError = "fail",
    max_chars: MaxChars = 10_000_000,
) -> None:
    """Fit PreSelect: keep text whose losses rank a model family as its benchmarks do, distil into fastText."""
    from assay.selection.preselect import MIN_MODELS
    from assay.workflows.preselect import fit_preselect

    if len(model) < MIN_MODELS:
        raise typer.BadParameter(
            f"PreSelect needs at least {MIN_MODELS} models (got {len(model)})",
            param_hint="'--model'",
        )
    corpus = _corpus(paths, text_field, id_field, on_error, max_chars)
    corpus.check_output(model_out, "model folder")
    scorer = fit_preselect(
        corpus, [_model_spec(m) for m in model], targets=targets, fields=field or None,
        max_targets=max_targets, calibration=calibration, seed=seed, column=column,
        positive_fraction=positive_fraction, params=_params(param),
    )  # fmt: skip
    scorer.save(model_out)
    print_preselect(scorer.report, scorer.family)
    out.print(
        f"saved to {model_out}; score the corpus with: assay score {' '.join(paths)} --model {model_out} --out SCORES",
        highlight=False,
        soft_wrap=True,
    )


def print_preselect(rep: dict[str, Any], family: dict[str, Any] | None = None) -> None:
    p = rep["preselect"]
    if family:
        t = Table(title="model family, worst to best")
        for c in ("model", "benchmark score", "bits per char (calibration)"):
            t.add_column(c)
        for m in sorted(family["models"], key=lambda m: m["rank"]):
            t.add_row(m["name"], f"{m['benchmark_score']:.4g}", f"{m['mean_bpc']:.3f}")
        out.print(t)
    else:
        out.print("model family, worst to best: " + ", ".join(p["order"]))
    out.print(
        f"{p['perfect']:,} of {p['usable_docs']:,} calibration documents have perfect predictive "
        f"strength ({p['pairs']}/{p['pairs']} model pairs); {p['positives']:,} positives "
        f"({p['positive_rule'].replace('_', ' ')}) and {p['negatives']:,} negatives"
    )
    _print_validation(rep["fasttext"])


@app.command()
def mass(
    paths: Paths,
    reference: Annotated[
        str,
        typer.Option(
            "--reference",
            "-r",
            help="Reference examples: a built-in benchmark (assay_champ, assay_mmlu_dev) or a .jsonl/.json/.parquet file.",
        ),
    ],
    model_out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder to save the MASS scorer into.")
    ],
    field: TargetFields = None,
    max_targets: MaxTargets = None,
    tags_field: Annotated[
        str | None,
        typer.Option("--tags-field", help="Record field holding each example's skill tags."),
    ] = None,
    skills: Annotated[
        str,
        typer.Option(
            help="Where skills come from: 'auto' (tags when the reference has them, e.g. the CHAMP concepts, else keyphrases), 'tags', 'keyphrase' or 'cluster'."
        ),
    ] = "auto",
    embedder: Annotated[
        str | None,
        typer.Option(
            help="Embedding model: a local folder, or 'static'; default all-MiniLM-L6-v2."
        ),
    ] = None,
    merge_threshold: Annotated[
        float, typer.Option("--merge-threshold", help="Skills more similar than this merge.")
    ] = 0.9,
    top_k: Annotated[
        int, typer.Option("--top-k", help="Skills kept per document before aggregation.")
    ] = 10,
    aggregation: Annotated[
        str, typer.Option(help="'quadratic' s^T(diag(w)+E)s (default) or 'linear' w^T s.")
    ] = "quadratic",
    column: Annotated[str, typer.Option(help="Name of the score column.")] = "mass",
    seed: Annotated[int, typer.Option(help="Seed of keyphrase/cluster skills.")] = 0,
    no_progress: NoProgress = False,
) -> None:
    """Fit MASS: a skill graph from a reference set; documents score by the skills they cover."""
    from assay.selection.mass import fit_mass

    scorer = fit_mass(
        reference, fields=field or None, tags_field=tags_field, skills=skills,
        max_items=max_targets, seed=seed, progress=not no_progress, column=column,
        embedder={"model": embedder}, merge_threshold=merge_threshold, top_k=top_k,
        aggregation=aggregation,
    )  # fmt: skip
    scorer.save(model_out)
    print_mass(scorer.report)
    out.print(
        f"saved to {model_out}; score a corpus with: assay score {' '.join(paths)} --model {model_out} --out SCORES",
        highlight=False,
        soft_wrap=True,
    )


def print_mass(rep: dict[str, Any]) -> None:
    out.print(
        f"{rep['reference_examples']:,} reference examples, skills from {rep['skills_source']}: "
        f"{rep['raw_skills']:,} skills merged into {rep['merged_skills']:,}, {rep['edges']:,} edges; "
        f"{rep['aggregation']} score over each document's top {rep['top_k']} skills"
    )
    top = ", ".join(f"{s['name']} ({s['weight']:.3f})" for s in rep["top_skills"][:8])
    out.print(f"heaviest skills: {top}", highlight=False, soft_wrap=True)


@app.command()
def mates(
    paths: Paths,
    reference: Annotated[
        str,
        typer.Option(
            "--reference",
            "-r",
            help="Reference (target) examples: a built-in benchmark (assay_champ, assay_mmlu_dev) or a .jsonl/.json/.parquet file.",
        ),
    ],
    run_out: Annotated[Path, typer.Option("--out", "-o", help="Run folder (resumes by stage).")],
    stage_tokens: Annotated[int, typer.Option("--stage-tokens", help="Training tokens per stage.")],
    stages: Annotated[int, typer.Option(help="Stages (consume-once pools of the corpus).")] = 2,
    keep: Annotated[float, typer.Option(help="Share of each stage's pool kept.")] = 0.2,
    tau: Annotated[float, typer.Option(help="Gumbel top-k temperature.")] = 0.5,
    probes: Annotated[int, typer.Option(help="Oracle probes per stage.")] = 300,
    max_reference: Annotated[
        int | None, typer.Option("--max-reference", help="Reference examples used (a sample).")
    ] = 1024,
    field: TargetFields = None,
    method: Annotated[
        str, typer.Option(help="'mates', or 'random' (the same staged run, random selection).")
    ] = "mates",
    group: Annotated[bool, typer.Option("--group", help="Group-MATES selection.")] = False,
    embedder: Annotated[
        str | None,
        typer.Option(help="Embedding model of the influence model: a folder, or 'static'."),
    ] = None,
    preset: Annotated[str, typer.Option(help="Proxy size: tiny, xs, s, ...")] = "tiny",
    tokenizer: Annotated[Path | None, typer.Option(help="Tokenizer folder.")] = None,
    heldout: Annotated[
        list[str] | None, typer.Option(help="Held-out corpus for bits per byte. Repeatable.")
    ] = None,
    eval_docs: Annotated[int, typer.Option("--eval-docs")] = 200,
    seed: Annotated[int, typer.Option(help="Seed of pools, probes, heads and training.")] = 0,
    workers: Workers = 1,
    text_field: TextField = "text",
    id_field: IdField = "id",
    on_error: OnError = "fail",
    max_chars: MaxChars = 10_000_000,
    no_progress: NoProgress = False,
) -> None:
    """Staged pretraining with MATES: probe the proxy's data influence, learn it, select by it."""
    from assay.workflows.mates import run_mates

    corpus = _corpus(paths, text_field, id_field, on_error, max_chars)
    held = _corpus(heldout, text_field, id_field, on_error, max_chars) if heldout else None
    result = run_mates(
        corpus, run_out, reference=reference, fields=field or None, max_reference=max_reference,
        stage_tokens=stage_tokens, stages=stages, keep=keep, tau=tau, probes=probes,
        preset=preset, seed=seed, tokenizer=tokenizer, heldout=held, eval_docs=eval_docs,
        embedder={"model": embedder}, method=method, group=group,
        runner=_runner("local", workers, None, no_progress), progress=not no_progress,
    )  # fmt: skip
    for st in result.stages:
        line = f"stage {st.stage} ({st.method}): kept {st.kept_docs:,} docs, {st.kept_tokens:,} tokens; reference loss {st.reference_loss:.4f}"  # fmt: skip
        if st.probing:
            line += f"; {st.probing.get('probes', 0):,} probes at {st.probing.get('probes_per_second', 0):.1f}/s"  # fmt: skip
        if st.influence_model:
            line += f"; influence model held-out Spearman {st.influence_model.get('spearman', float('nan')):.3f}"  # fmt: skip
        out.print(line, highlight=False, soft_wrap=True)
    if result.heldout_bpb:
        out.print("held-out bits per byte: " + ", ".join(f"{d} {v:.4f}" for d, v in sorted(result.heldout_bpb.items())))  # fmt: skip
    out.print(f"final model: {result.model_dir}", highlight=False)


@app.command()
def scorers() -> None:
    """List the registered scorers."""
    from assay.selection.base import available_scorers

    for name in available_scorers():
        out.print(name)


@app.command()
def score(
    paths: Paths,
    scores_out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="Folder for the side-car score parquet files (one per shard)."
        ),
    ],
    model: Annotated[
        Path | None,
        typer.Option(
            "--model", "-m", help="A saved scorer folder (from train-classifier or a recipe)."
        ),
    ] = None,
    scorer: Annotated[
        str | None,
        typer.Option(
            "--scorer",
            "-s",
            help="A stateless registered scorer instead of --model, e.g. doc_stats.",
        ),
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", help="Scorer parameter key=value for --scorer. Repeatable."),
    ] = None,
    text_field: TextField = "text",
    id_field: IdField = "id",
    on_error: OnError = "fail",
    max_chars: MaxChars = 10_000_000,
    runner: RunnerKind = "local",
    workers: Workers = None,
    address: Address = None,
    overwrite: Overwrite = False,
    no_progress: NoProgress = False,
) -> None:
    """Score every document; scores go beside the data, keyed by id."""
    from assay.selection.base import load_scorer, make_scorer
    from assay.selection.score import score_corpus

    if (model is None) == (scorer is None):
        raise typer.BadParameter("give exactly one of --model or --scorer")
    sc = load_scorer(model) if model is not None else make_scorer(scorer, **_params(param))  # type: ignore[arg-type]
    corpus = _corpus(paths, text_field, id_field, on_error, max_chars)
    result = score_corpus(
        sc,
        corpus,
        scores_out,
        runner=_runner(runner, workers, address, no_progress),
        overwrite=overwrite,
    )
    d = result.to_dict()
    out.print(
        f"scored {d['docs_out']:,} documents into {scores_out} (columns: {', '.join(sc.columns)}); "
        f"{d['ran']} shards ran, {d['resumed']} were already done"
        + (f" ({d['stale']} redone: their input changed)" if d["stale"] else "")
        + (f"; skipped {d['skipped']}" if d["skipped"] else "")
    )


@app.command("select")
def select_cmd(
    paths: Paths,
    scores: Annotated[
        list[Path],
        typer.Option("--scores", help="Scores folder(s) from `assay score`. Repeatable."),
    ],
    column: Annotated[str, typer.Option("--column", "-c", help="Score column to select by.")],
    selected_out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="Folder for the selected shards (same names as the input)."
        ),
    ],
    policy: Annotated[
        str,
        typer.Option(
            help="'topk' (exact, global), 'gumbel' (top-k of score/tau + Gumbel noise: sampling without replacement) or 'threshold' (score >= --threshold)."
        ),
    ] = "topk",
    keep: Annotated[
        float | None, typer.Option(help="Fraction to keep (topk, gumbel), measured by --by.")
    ] = None,
    by: Annotated[
        str, typer.Option(help="Measure of the kept fraction: docs, chars or tokens.")
    ] = "docs",
    mode: Annotated[
        str,
        typer.Option(
            help="'top' (or 'high') keeps high scores, 'bottom' ('low') low ones, 'middle' ('medium') the band around the median (topk only)."
        ),
    ] = "top",
    threshold: Annotated[
        float | None, typer.Option(help="Score threshold for --policy threshold.")
    ] = None,
    tau: Annotated[
        float, typer.Option(help="Gumbel temperature: lower is closer to plain top-k.")
    ] = 1.0,
    seed: Annotated[int, typer.Option(help="Seed for Gumbel noise and tie-breaking.")] = 0,
    tokenizer: Annotated[
        str | None,
        typer.Option(
            help="Local tokenizer (folder or tokenizer.json) for exact --by tokens; default estimates tokens."
        ),
    ] = None,
    group_by: Annotated[
        str, typer.Option("--group-by", help="Column to report kept fractions by ('' for none).")
    ] = "domain",
    with_scores: Annotated[
        bool,
        typer.Option("--with-scores", help="Add every score column to the selected documents."),
    ] = False,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="Output format (parquet, jsonl, jsonl.gz, jsonl.zst); default: same as input.",
        ),
    ] = None,
    text_field: TextField = "text",
    id_field: IdField = "id",
    on_error: OnError = "fail",
    max_chars: MaxChars = 10_000_000,
    runner: RunnerKind = "local",
    workers: Workers = None,
    address: Address = None,
    overwrite: Overwrite = False,
    no_progress: NoProgress = False,
) -> None:
    """Keep the best documents by a score column; write them as shards with the input names."""
    from assay.selection.select import SelectConfig, select

    cfg = SelectConfig(
        column=column,
        policy=policy,
        keep=keep,
        by=by,
        mode=mode,
        threshold=threshold,
        tau=tau,
        seed=seed,  # type: ignore[arg-type]
        tokenizer=tokenizer,
        group_by=group_by or None,
        with_scores=with_scores,
        format=fmt,
    )
    corpus = _corpus(paths, text_field, id_field, on_error, max_chars)
    result = select(
        corpus,
        [str(s) for s in scores],
        selected_out,
        cfg,
        runner=_runner(runner, workers, address, no_progress),
        overwrite=overwrite,
    )
    print_selection(result.to_dict())


def print_selection(r: dict[str, Any]) -> None:
    by = r["config"]["by"]
    out.print(
        f"kept [bold]{r['kept_docs']:,}[/] of {r['docs']:,} documents = {_fmt_pct(r['kept_fraction'])} of {by}"
        + (f" (score cutoff {r['score_cutoff']:.4g})" if r.get("score_cutoff") is not None else "")
        + f" -> {r['out_dir']}"
    )
    if r["skipped"]:
        out.print(f"skipped: {r['skipped']}")
    if r["groups"] and len(r["groups"]) > 1:
        t = Table(title=f"kept per {r['config'].get('group_by') or 'group'}")
        cols = ["group", "docs", "kept docs", "kept % docs"] + (
            [] if by == "docs" else [f"kept % {by}"]
        )
        for c in cols:
            t.add_column(c)
        for g, v in r["groups"].items():
            row = [
                g,
                f"{v['docs']:,}",
                f"{v['kept_docs']:,}",
                _fmt_pct(v["kept_docs"] / max(v["docs"], 1)),
            ]
            if by != "docs":
                row.append(_fmt_pct(v["kept_weight"] / max(v["weight"], 1e-12)))
            t.add_row(*row)
        out.print(t)


@app.command("train-tokenizer")
def train_tokenizer_cmd(
    paths: Paths,
    tok_out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder to save the tokenizer into.")
    ],
    vocab_size: Annotated[
        int,
        typer.Option(
            "--vocab-size", help="Vocabulary size (small vocabularies keep CPU proxies fast)."
        ),
    ] = 2048,
    sample_docs: Annotated[
        int, typer.Option("--sample-docs", help="Documents sampled uniformly to train on.")
    ] = 20_000,
    seed: Annotated[int, typer.Option(help="Seed of the sample.")] = 0,
    text_field: TextField = "text",
    id_field: IdField = "id",
    on_error: OnError = "fail",
    max_chars: MaxChars = 10_000_000,
) -> None:
    """Train a byte-level BPE tokenizer on a sample of a corpus."""
    from assay.common.tokenizer import train_tokenizer

    corpus = _corpus(paths, text_field, id_field, on_error, max_chars)
    tok = train_tokenizer(corpus, vocab_size, tok_out, sample_docs=sample_docs, seed=seed)
    out.print(f"trained a {len(tok):,}-token byte-level BPE tokenizer -> {tok_out}")


@app.command("train-proxy")
def train_proxy_cmd(
    paths: Paths,
    run_out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="Run folder: model/, run.json, tokens/ (resumes if interrupted)."
        ),
    ],
    tokens: Annotated[int, typer.Option(help="Training tokens (rounded down to whole batches).")],
    mixture: Annotated[
        str,
        typer.Option(
            help="'natural' (token-proportional), 'uniform', 'news=0.5,code=0.5', or a YAML/JSON file."
        ),
    ] = "natural",
    preset: Annotated[
        str, typer.Option(help="Model size: tiny (1M), xs (5M), s (36M), m (82M), l (138M).")
    ] = "tiny",
    seed: Annotated[
        int, typer.Option(help="Seed of the model initialisation and the data order.")
    ] = 0,
    tokenizer: Annotated[
        Path | None,
        typer.Option(help="Tokenizer folder (default: train one at the preset's vocabulary size)."),
    ] = None,
    heldout: Annotated[
        list[str] | None,
        typer.Option(
            help="Held-out corpus with the same domains, for per-domain bits per byte. Repeatable."
        ),
    ] = None,
    eval_docs: Annotated[
        int, typer.Option("--eval-docs", help="Held-out documents per domain (a seeded sample).")
    ] = 200,
    tasks: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated lm-eval tasks to run at the end, e.g. assay_mmlu_dev,assay_champ."
        ),
    ] = None,
    runs_table: Annotated[
        Path | None,
        typer.Option("--runs-table", help="Parquet runs table to append this run to."),
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            help="Training setting key=value: lr, batch_size, seq_len, grad_accum, schedule (cosine|wsd|constant), warmup, eval_every, checkpoint_every, max_epochs, on_cap, arch. Repeatable.",
        ),
    ] = None,
    text_field: TextField = "text",
    id_field: IdField = "id",
    on_error: OnError = "fail",
    max_chars: MaxChars = 10_000_000,
    no_progress: NoProgress = False,
) -> None:
    """Train a proxy LM on a mixture of the corpus' domains (by its `domain` field) and measure it."""
    from assay.proxies.train import TrainConfig, train_proxy

    corpus = _corpus(paths, text_field, id_field, on_error, max_chars)
    held = _corpus(heldout, text_field, id_field, on_error, max_chars) if heldout else None
    run_result = train_proxy(
        corpus, mixture, tokens, preset, seed, out_dir=run_out, tokenizer=tokenizer, heldout=held, eval_docs=eval_docs,
        config=TrainConfig(**_params(param)), tasks=[t for t in (tasks or "").split(",") if t] or None,
        runs_table=runs_table, progress=not no_progress,
    )  # fmt: skip
    print_proxy_run(run_result.to_dict())


def print_proxy_run(r: dict[str, Any]) -> None:
    out.print(
        f"trained {r['preset']} ({r['params']['total']:,} parameters) on {r['tokens']:,} tokens in {r['steps']} steps "
        f"at {r['tokens_per_second']:,.0f} tokens/s; final train loss {r['train_loss']:.3f} -> {r['out_dir']}"
    )
    if r["data"].get("cap_note"):
        out.print(f"[yellow]{r['data']['cap_note']}[/]")
    if r["bpb"]:
        t = Table(title="held-out bits per byte")
        for c in ("domain", "weight", "bits per byte"):
            t.add_column(c)
        for d, b in r["bpb"].items():
            t.add_row(d, f"{r['effective_mixture'].get(d, 0.0):.3f}", f"{b:.3f}")
        out.print(t)
    for task, m in r.get("tasks", {}).items():
        out.print(f"{task}: " + ", ".join(f"{k} {v:.4g}" for k, v in m.items()))


@app.command("eval")
def eval_cmd(
    model: Annotated[
        Path,
        typer.Argument(
            help="A local model folder (safetensors), or a folder holding one .gguf file."
        ),
    ],
    heldout: Annotated[
        list[str] | None,
        typer.Option(help="Held-out corpus for per-domain bits per byte. Repeatable."),
    ] = None,
    tasks: Annotated[
        str | None,
        typer.Option(help="Comma-separated lm-eval tasks (assay_mmlu_dev, assay_champ)."),
    ] = None,
    gguf_file: Annotated[
        str | None, typer.Option("--gguf-file", help="GGUF file inside the model folder.")
    ] = None,
    eval_docs: Annotated[
        int, typer.Option("--eval-docs", help="Held-out documents per domain.")
    ] = 200,
    limit: Annotated[int | None, typer.Option(help="At most this many items per task.")] = None,
    seq_len: Annotated[
        int, typer.Option("--seq-len", help="Context for bits per byte (capped by the model's).")
    ] = 256,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    text_field: TextField = "text",
    id_field: IdField = "id",
    on_error: OnError = "fail",
    max_chars: MaxChars = 10_000_000,
) -> None:
    """Measure a model: held-out bits per byte per domain, and benchmark tasks through lm-eval."""
    from assay.eval import evaluate_model

    if not heldout and not tasks:
        raise typer.BadParameter("give --heldout and/or --tasks")
    held = _corpus(heldout, text_field, id_field, on_error, max_chars) if heldout else None
    result = evaluate_model(
        model, heldout=held, tasks=[t for t in (tasks or "").split(",") if t], gguf_file=gguf_file,
        eval_docs=eval_docs, limit=limit, seq_len=seq_len,
    )  # fmt: skip
    if as_json:
        print(json.dumps(result, indent=2))
        return
    print_eval(result)


def print_eval(r: dict[str, Any]) -> None:
    out.print(f"{r['model']}: {r['params']['total']:,} parameters")
    if "bpb" in r:
        t = Table(title=f"held-out bits per byte (mean {r['bpb_mean']:.3f})")
        for c in ("domain", "bits per byte", "loss per token", "docs"):
            t.add_column(c)
        for d, v in r["heldout"].items():
            t.add_row(d, f"{v['bpb']:.3f}", f"{v['loss']:.3f}", f"{v['docs']}")
        out.print(t)
    for task, m in r.get("tasks", {}).items():
        out.print(f"{task}: " + ", ".join(f"{k} {v:.4g}" for k, v in m.items()))


@app.command()
def run(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML file.")],
    overrides: Annotated[
        list[str] | None,
        typer.Argument(help="Dotted overrides such as select.keep=0.2 or runner.workers=2."),
    ] = None,
    run_dir: Annotated[
        Path | None,
        typer.Option("--run-dir", help="Run directory (default: runs/<recipe name>)."),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Redo every step (default: reuse finished work).")
    ] = False,
    no_progress: NoProgress = False,
) -> None:
    """Run a recipe end to end in a self-describing run directory."""
    from assay.recipe.pipeline import run_recipe

    result = run_recipe(
        recipe,
        list(overrides or []),
        run_dir=run_dir,
        overwrite=overwrite,
        progress=not no_progress,
    )
    t = Table(title=f"recipe {result.recipe.name} in {result.run_dir}")
    for c in ("step", "kind", "status", "seconds"):
        t.add_column(c)
    for s in result.steps:
        t.add_row(s.name, s.kind, s.status, f"{s.seconds:.1f}")
    out.print(t)
    for s in result.steps:
        for k, v in s.outputs.items():
            out.print(f"  {s.name}.{k}: {v}", highlight=False, soft_wrap=True)
    for s in result.steps:
        if s.kind == "demo_corpus":
            d = s.summary["domains"]
            out.print(
                "demo corpus: " + ", ".join(f"{k} {v['train_docs']:,} docs" for k, v in d.items())
            )
        if s.kind == "score" and "fit" in s.summary and "validation" in s.summary["fit"]:
            v = s.summary["fit"]["validation"]
            out.print(
                f"{s.name}: classifier held-out accuracy {v['accuracy']:.3f}, ROC AUC {v['auc']:.3f}"
            )
        if s.kind == "select":
            out.print(f"[bold]{s.name}[/]:", end=" ")
            print_selection(s.summary)
        if s.kind == "train_proxy":
            from assay.proxies.train import ProxyRun

            out.print(f"[bold]{s.name}[/]:", end=" ")
            print_proxy_run(ProxyRun.load(s.outputs["run"]).to_dict())
        if s.kind == "eval":
            out.print(f"[bold]{s.name}[/]:", end=" ")
            print_eval(s.summary)
        if s.kind == "betr":
            out.print(f"[bold]{s.name}[/]:", end=" ")
            print_betr(s.summary["fit"])
        if s.kind == "preselect":
            out.print(f"[bold]{s.name}[/]:", end=" ")
            print_preselect(s.summary["fit"])
        if s.kind == "mates":
            for st in s.summary["stages"]:
                rho = st.get("spearman")
                out.print(
                    f"  {s.name} stage {st['stage']} ({st['method']}): reference loss "
                    f"{st['reference_loss']:.4f}"
                    + (f", influence Spearman {rho:.3f}" if rho is not None else "")
                    + (
                        f", {st['probes_per_second']:.1f} probes/s"
                        if st.get("probes_per_second")
                        else ""
                    )
                )
        if s.kind == "mass":
            out.print(f"[bold]{s.name}[/]:", end=" ")
            print_mass(s.summary["fit"])
        if s.kind == "compare":
            print_compare(s.name, s.summary)
        if s.kind == "cluster":
            for d, info in s.summary["domains"].items():
                out.print(f"  {d}: {info['docs']:,} docs; {', '.join(info['top_terms'][:6])}")
        if s.kind in ("search", "bimix", "mixture"):
            mix = ", ".join(f"{d} {w:.3f}" for d, w in s.summary["mixture"].items())
            out.print(f"[bold]{s.name}[/] mixture: {mix}", highlight=False)
        if s.kind == "search":
            sp = ", ".join(f"{k} {v:.2f}" for k, v in s.summary["spearman"].items())
            out.print(f"  predictor held-out Spearman: {sp}")
        if s.kind == "bimix":
            err_ = s.summary["extrapolation_mean_rel_error"]
            out.print(
                "  law extrapolation error: " + ", ".join(f"{d} {v:.2%}" for d, v in err_.items())
            )


def print_compare(name: str, r: dict[str, Any]) -> None:
    cols = sorted(
        {k for row in r["runs"].values() for k in row}, key=lambda c: (c == "bpb.domain_mean", c)
    )
    t = Table(
        title=f"{name}: held-out bits per byte"
        + (f", target {r['target']}" if r.get("target") else "")
    )
    t.add_column("run")
    for c in cols:
        t.add_column(c.removeprefix("bpb."))
    for run_name, row in r["runs"].items():
        label = f"{run_name} (best)" if run_name == r.get("best") else run_name
        t.add_row(label, *(f"{row[c]:.4g}" if c in row else "" for c in cols))
    out.print(t)


def main() -> None:
    from assay.io.shards import CorpusError
    from assay.recipe.model import RecipeError

    try:
        app()
    except (CorpusError, RecipeError, ValueError, FileNotFoundError, ImportError) as e:
        err.print(f"[bold red]error:[/] {e}", highlight=False)
        sys.exit(2)


# the mixing verbs live in their own module
from assay.cli.mixing import register as _register_mixing  # noqa: E402

_register_mixing(app)

if __name__ == "__main__":
    main()
