"""The mixing verbs of the `assay` command line: cluster, search, bimix, mixture.

Kept beside cli.py, which registers them with `register(app)`, so that neither file grows
past reading. Each verb
parses its options and calls one library function, like every other verb.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from assay.cli.common import (
    IdField,
    MaxChars,
    NoProgress,
    OnError,
    Paths,
    TextField,
    _corpus,
    _params,
    _runner,
    out,
)

OutDir = Annotated[Path, typer.Option("--out", "-o", help="Output folder (resumes if it exists).")]
Tokenizer = Annotated[
    Path | None,
    typer.Option(help="Tokenizer folder (default: train one at the preset's vocabulary size)."),
]
Heldout = Annotated[
    list[str] | None,
    typer.Option(
        help="Held-out corpus labelled with the same domains (per-domain bits per byte). Repeatable."
    ),
]
Preset = Annotated[str, typer.Option(help="Proxy size: tiny (1M), xs (5M), s (36M), ...")]
EvalDocs = Annotated[
    int, typer.Option("--eval-docs", help="Held-out documents per domain (a seeded sample).")
]
TrainParam = Annotated[
    list[str] | None,
    typer.Option(
        "--param", help="Proxy training setting key=value (lr, batch_size, seq_len, ...)."
    ),
]
Workers = Annotated[
    int | None, typer.Option("--workers", "-j", help="Proxies trained at once (local processes).")
]
Seed = Annotated[int, typer.Option(help="Seed of proposals, proxies and predictors.")]


def _vocab(preset: str) -> int:
    from assay.proxies.model import get_preset

    return get_preset(preset).vocab_size


def _held_paths(heldout: list[str] | None) -> list[str] | None:
    return list(heldout) if heldout else None


def cluster(
    paths: Paths,
    out_dir: OutDir,
    heldout: Annotated[
        list[str] | None,
        typer.Option(help="Also label this corpus (e.g. a held-out split) with the domains."),
    ] = None,
    embedder: Annotated[
        str | None,
        typer.Option(
            help="Embedding model: a local folder, or 'static'; default all-MiniLM-L6-v2."
        ),
    ] = None,
    k_init: Annotated[
        int | None, typer.Option("--k-init", help="k-means clusters (default ~sqrt(sample/2)).")
    ] = None,
    sample: Annotated[int, typer.Option(help="Documents the centroids are fitted on.")] = 20_000,
    merge_distance: Annotated[
        float | None,
        typer.Option("--merge-distance", help="Merge clusters whose centroids are this close."),
    ] = None,
    n_domains: Annotated[
        int | None,
        typer.Option("--n-domains", help="Merge clusters (Ward) down to this many domains."),
    ] = None,
    min_cluster_share: Annotated[
        float,
        typer.Option(
            "--min-cluster-share",
            help="Clusters with less than this share of the sample join their nearest larger one.",
        ),
    ] = 0.0,
    prune_scores: Annotated[
        Path | None, typer.Option("--prune-scores", help="Scores folder to prune clusters by.")
    ] = None,
    prune_column: Annotated[str | None, typer.Option("--prune-column")] = None,
    prune_below: Annotated[
        float | None,
        typer.Option("--prune-below", help="Drop clusters whose mean score is below this."),
    ] = None,
    seed: Seed = 0,
    workers: Workers = 1,
    text_field: TextField = "text",
    id_field: IdField = "id",
    on_error: OnError = "fail",
    max_chars: MaxChars = 10_000_000,
    no_progress: NoProgress = False,
) -> None:
    """Discover domains in an unlabeled corpus: embed, k-means, prune, merge (CLIMB stage A)."""
    from assay.mixing.cluster import assign_domains, cluster_corpus

    corpus = _corpus(paths, text_field, id_field, on_error, max_chars)
    runner = _runner("local", workers, None, no_progress)
    result = cluster_corpus(
        corpus, out_dir, embedder={"model": embedder}, k_init=k_init, sample=sample,
        merge_distance=merge_distance, n_domains=n_domains, min_cluster_share=min_cluster_share,
        prune_scores=prune_scores,
        prune_column=prune_column, prune_below=prune_below, seed=seed, runner=runner,
    )  # fmt: skip
    t = Table(title=f"{len(result.domains)} domains from {result.k_init} clusters")
    for c in ("domain", "docs", "tokens (est.)", "top terms"):
        t.add_column(c)
    for name, d in result.domains.items():
        t.add_row(name, f"{d['docs']:,}", f"{d['tokens_estimate']:,}", ", ".join(d["top_terms"][:8]))  # fmt: skip
    out.print(t)
    out.print(f"relabelled corpus: {result.corpus}", highlight=False)
    if heldout:
        held = _corpus(heldout, text_field, id_field, on_error, max_chars)
        where = assign_domains(held, out_dir, Path(out_dir) / "heldout", runner=runner)
        out.print(f"relabelled held-out corpus: {where}", highlight=False)


def search(
    paths: Paths,
    out_dir: OutDir,
    tokens: Annotated[int, typer.Option(help="Training tokens of each proxy.")],
    method: Annotated[
        str, typer.Option(help="'climb' (iterative) or 'regmix' (one round).")
    ] = "climb",
    objective: Annotated[
        str,
        typer.Option(
            help="Runs-table column to minimise: bpb.domain_mean, bpb.<domain>, bpb.mean, or -task.<task>.<metric>."
        ),
    ] = "bpb.domain_mean",
    runs: Annotated[int, typer.Option(help="Proxy runs in all.")] = 14,
    split: Annotated[
        str, typer.Option(help="Share of the runs per iteration (CLIMB's 4:2:1).")
    ] = "4,2,1",
    predictor: Annotated[
        str,
        typer.Option(
            help="'lightgbm' (CLIMB/RegMix), 'linear', or 'auto': whichever ranks the runs so far better (k-fold Spearman)."
        ),
    ] = "auto",
    candidates: Annotated[int, typer.Option(help="Mixtures the predictor ranks.")] = 10_000,
    regmix_top_k: Annotated[
        int, typer.Option("--regmix-top-k", help="RegMix: average the predictor's top k.")
    ] = 16,
    max_epochs: Annotated[
        float | None, typer.Option("--max-epochs", help="No proposal repeats a domain more.")
    ] = None,
    heldout: Heldout = None,
    tokenizer: Tokenizer = None,
    preset: Preset = "tiny",
    eval_docs: EvalDocs = 200,
    param: TrainParam = None,
    seed: Seed = 0,
    workers: Workers = 1,
    text_field: TextField = "text",
    id_field: IdField = "id",
    on_error: OnError = "fail",
    max_chars: MaxChars = 10_000_000,
    no_progress: NoProgress = False,
) -> None:
    """Search a mixture of the corpus' domains with proxies and a predictor (CLIMB / RegMix)."""
    from assay.workflows.proxy_batch import token_cache_for
    from assay.workflows.search import search_mixture

    corpus = _corpus(paths, text_field, id_field, on_error, max_chars)
    cache, tok = token_cache_for(corpus, out_dir, tokenizer=tokenizer, vocab_size=_vocab(preset), seed=seed)  # fmt: skip
    result = search_mixture(
        cache.root, out_dir, objective=objective, tokenizer=tok, tokens=tokens, runs=runs,
        split=[float(x) for x in split.split(",")], method=method, preset=preset,
        heldout=_held_paths(heldout), eval_docs=eval_docs, train=_params(param),
        predictor=predictor, candidates=candidates, regmix_top_k=regmix_top_k, seed=seed,
        runner=_runner("local", workers, None, no_progress), max_epochs=max_epochs,
    )  # fmt: skip
    print_search(result.to_dict())
    out.print(f"mixture: {Path(out_dir) / 'mixture.yaml'}", highlight=False)


def print_search(r: dict[str, Any]) -> None:
    metrics = [x["metric"] for x in r["runs"]]
    sp = ", ".join(f"{k} {v:.2f}" for k, v in r["spearman"].items())
    out.print(
        f"{len(metrics)} proxies over iterations {r['iterations']}; {r['objective']}: best run "
        f"{min(metrics):.4f}, median {sorted(metrics)[len(metrics) // 2]:.4f}; predictor "
        f"held-out Spearman: {sp}; used {r.get('predictor', '?')}"
    )
    out.print("best mixture: " + ", ".join(f"{d} {w:.3f}" for d, w in r["best"].items()))


def bimix(
    paths: Paths,
    out_dir: OutDir,
    tokens: Annotated[int, typer.Option(help="Training tokens of each fitting run.")],
    heldout: Heldout = None,
    runs: Annotated[int, typer.Option(help="Fitting runs (different mixtures).")] = 5,
    evals: Annotated[int, typer.Option(help="Evaluations along each run.")] = 8,
    budget: Annotated[
        float | None, typer.Option(help="Token budget to optimise for (default: --tokens).")
    ] = None,
    weight: Annotated[
        list[str] | None, typer.Option(help="Domain weight in the objective, domain=w. Repeatable.")
    ] = None,
    min_share: Annotated[
        float, typer.Option("--min-share", help="Floor of every domain in the optimum.")
    ] = 0.01,
    tokenizer: Tokenizer = None,
    preset: Preset = "tiny",
    eval_docs: EvalDocs = 200,
    param: TrainParam = None,
    seed: Seed = 0,
    workers: Workers = 1,
    text_field: TextField = "text",
    id_field: IdField = "id",
    on_error: OnError = "fail",
    max_chars: MaxChars = 10_000_000,
    no_progress: NoProgress = False,
) -> None:
    """Fit BiMix's bivariate scaling law on a few proxy runs; print the optimal mixture."""
    from assay.workflows.bimix import fit_bimix
    from assay.workflows.proxy_batch import token_cache_for

    if not heldout:
        raise ValueError("bimix fits per-domain held-out losses: give --heldout")
    corpus = _corpus(paths, text_field, id_field, on_error, max_chars)
    cache, tok = token_cache_for(corpus, out_dir, tokenizer=tokenizer, vocab_size=_vocab(preset), seed=seed)  # fmt: skip
    weights = {k: float(v) for k, v in _params(weight).items()} if weight else None
    fit = fit_bimix(
        cache.root, out_dir, tokenizer=tok, tokens=tokens, heldout=list(heldout), runs=runs,
        evals=evals, budget=budget, weights=weights, preset=preset, eval_docs=eval_docs,
        train=_params(param), min_share=min_share, seed=seed,
        runner=_runner("local", workers, None, no_progress),
    )  # fmt: skip
    print_bimix(fit.to_dict())
    out.print(f"mixture: {Path(out_dir) / 'mixture.yaml'}", highlight=False)


def print_bimix(r: dict[str, Any]) -> None:
    t = Table(title=f"BiMix law, optimum at {r['budget']:,.0f} tokens")
    for c in ("domain", "alpha", "beta", "B", "C", "extrap. error", "held-out R2", "share"):
        t.add_column(c)
    q = r["quality"]
    for d, law in r["law"].items():
        r2 = (q.get("heldout_r2") or {}).get(d)
        t.add_row(
            d, f"{law['alpha']:.3f}", f"{law['beta']:.3f}", f"{law['B']:.3g}", f"{law['C']:.3f}",
            f"{q['extrapolation'][d]['mean_rel_error']:.2%}", "" if r2 is None else f"{r2:.3f}",
            f"{r['mixture'][d]:.3f}",
        )  # fmt: skip
    out.print(t)
    out.print(
        "predicted total loss by budget: "
        + ", ".join(f"{c['s']:,.0f}: {c['total']:.3f}" for c in r["budget_curve"])
    )


def mixture(
    method: Annotated[
        str, typer.Argument(help="natural, uniform, temperature, unimax or entropy.")
    ],
    paths: Paths,
    out_file: Annotated[Path, typer.Option("--out", "-o", help="Mixture file (.yaml or .json).")],
    tokenizer: Tokenizer = None,
    t: Annotated[float, typer.Option("--t", help="temperature: p ~ n^(1/t).")] = 2.0,
    budget: Annotated[float | None, typer.Option(help="unimax: the token budget.")] = None,
    max_epochs: Annotated[float, typer.Option("--max-epochs", help="unimax: epoch cap.")] = 1.0,
    entropy: Annotated[
        str, typer.Option(help="entropy: unigram, joint or conditional (BiMix's choice).")
    ] = "conditional",
    vocab_size: Annotated[int, typer.Option("--vocab-size")] = 2048,
    seed: Seed = 0,
    text_field: TextField = "text",
    id_field: IdField = "id",
    on_error: OnError = "fail",
    max_chars: MaxChars = 10_000_000,
) -> None:
    """A training-free mixture of the corpus' domains (the baselines every search must beat).

    Token counts (and entropies) come from the corpus tokenized once into a hidden folder
    beside the output file, `.<name>-tokens/`, reused on the next call."""
    import json

    from assay.mixing.baselines import baseline_mixture
    from assay.workflows.proxy_batch import token_cache_for

    corpus = _corpus(paths, text_field, id_field, on_error, max_chars)
    corpus.check_output(out_file, "mixture file")
    cache, _ = token_cache_for(corpus, out_file.parent / f".{out_file.stem}-tokens", tokenizer=tokenizer, vocab_size=vocab_size, seed=seed)  # fmt: skip
    mix, info = baseline_mixture(method, cache, temperature_t=t, budget=budget, max_epochs=max_epochs, entropy=entropy, seed=seed)  # fmt: skip
    mix.save(out_file)
    out.print(f"{method}: " + ", ".join(f"{d} {w:.3f}" for d, w in mix.items()))
    if "entropies" in info:
        out.print(json.dumps(info["entropies"], indent=1))
    out.print(f"saved to {out_file}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add the mixing verbs to the `assay` app."""
    for verb in (cluster, search, bimix, mixture):
        app.command()(verb)
