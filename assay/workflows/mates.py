"""MATES' staged training: consume-once stage pools, oracle probes, an influence model, Gumbel
top-k (each stage's pool and selection are in `assay.workflows.mates_selection`)."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from assay.errors import ConfigError, InputError, StateError
from assay.proxies.train import TrainConfig
from assay.selection.mates import MIN_PROBES
from assay.util.files import read_json, write_json
from assay.util.hashing import config_hash
from assay.workflows.mates_probing import (
    MIN_REFERENCE,
    ReferenceSet,
    default_ref_batch_size,
    reference_loss,
)
from assay.workflows.mates_selection import (
    fit_stage_scorer,
    group_stage,
    select_mates,
    select_random,
    stage_pools,
)
from assay.workflows.mates_settings import GROUP_FIELDS, MatesSettings
from assay.workflows.proxy_batch import settings_with

STAGE_FILE = "stage.json"


SUMMARY_FILE = "mates.json"


CONFIG_FILE = "mates_config.json"

#: Group-MATES' settings in a run's identity besides trajectory_length and docs_per_cluster
BOOTSTRAP_FIELDS = [k for k in GROUP_FIELDS if k.startswith("bootstrap_")]


@dataclass
class StageResult:
    stage: int
    method: str  # "random" or "mates" / "group-mates"
    pool_docs: int
    pool_tokens: int
    kept_docs: int
    kept_tokens: int
    run: dict[str, Any]  # the stage's ProxyRun summary
    reference_loss: float  # L_ref at the end of the stage
    probing: dict[str, Any] = field(default_factory=dict)
    influence_model: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class MatesResult:
    out_dir: str
    config: dict[str, Any]
    stages: list[StageResult]
    final_run: dict[str, Any]
    heldout_bpb: dict[str, float]
    reference_loss: float

    @property
    def model_dir(self) -> str:
        return str(Path(self.final_run["out_dir"]) / "model")

    def proxy_run(self) -> Any:
        """The last stage's `ProxyRun` (its model, curve and held-out losses)."""
        from assay.proxies.train import ProxyRun

        return ProxyRun.load(self.final_run["out_dir"])

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "stages": [s.to_dict() for s in self.stages]}


def _run_summary(run: Any) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "out_dir": run.out_dir,
        "steps": run.steps,
        "tokens": run.tokens,
        "train_loss": run.train_loss,
        "bpb": run.bpb,
        "loss": run.loss,
        "tokens_per_second": run.tokens_per_second,
        "wall_seconds": run.wall_seconds,
    }


def run_mates(
    corpus: Any,
    out_dir: str | os.PathLike,
    settings: MatesSettings | None = None,
    *,
    targets: str | os.PathLike | Sequence[str],
    fields: Sequence[str] | None = None,
    max_targets: int | None = None,
    tokenizer: Any = None,
    heldout: Any = None,
    runner: Any = None,
    progress: bool = True,
    context_fields: Sequence[str] | None = None,
    continuation_fields: Sequence[str] | None = None,
    **options: Any,
) -> MatesResult:
    """Staged pretraining with MATES data selection; returns every stage's figures.

    `settings` (or keyword arguments such as stage_tokens=, stages=, keep=, probes=; those given
    apply over `settings`) say how: see `MatesSettings`. `corpus` is split into `stages`
    consume-once candidate pools (a seeded hash of the id). Stage 0 trains on a random `keep`
    fraction of its pool; each later stage probes the previous stage's final state on `probes`
    documents of its own pool against `targets` (the target examples: a file, a built-in
    benchmark such as 'assay_champ', or a list of texts, with `fields` and at most `max_targets`
    of them; see `load_targets`), fits the influence model, scores its pool with it
    (`score_corpus`) and keeps `keep` of it by Gumbel top-k at temperature `tau` (`select`).
    Each stage trains `stage_tokens` tokens, continuing the previous stage's weights and
    optimizer state under one schedule over all stages (`train`, default
    `mates_train_config()`).

    The reference loss scores only each target example's continuation when the targets have a
    split (`context_fields` and `continuation_fields`, or a built-in benchmark's own: question,
    then answer; see `target_split`) and `reference_scoring` is 'continuation' (the default,
    as the official code); 'whole' scores every token of each example (context and
    continuation fields joined, as `load_targets` joins fields: assay's oracle before 2026-11-30).

    `method='random'` makes every stage random (the baseline with the same pools, budget and
    schedule). `group=True` uses Group-MATES (rollouts, relational model, cluster-wise greedy
    selection). Everything is written under `out_dir` (`mates.json`, `stage-<s>/`); a finished
    stage is never redone, and an interrupted one resumes from its last finished step.
    """
    from assay.exec.runner import LocalRunner

    t_start = time.perf_counter()
    run = _MatesRun(
        out=Path(out_dir),
        settings=settings_with(MatesSettings, settings, options),
        runner=runner or LocalRunner(workers=1, progress=progress),
        heldout=heldout,
        progress=progress,
    )
    split, fields = _reference_split(run, targets, fields, context_fields, continuation_fields)
    ref_texts, tok = _prepare_folder(run, corpus, targets, fields, max_targets, tokenizer, split)
    identity = _claim_folder(run, corpus, tok, ref_texts)
    ref = (
        ReferenceSet.from_texts(ref_texts, tok, run.cfg.seq_len)
        if split is None
        else ReferenceSet.from_pairs(ref_texts, tok, run.cfg.seq_len)
    )
    # Pools and the checks that need their sizes, before any training.
    pools = stage_pools(corpus, run.out, run.settings.stages, run.seed, tok, run.runner)
    steps_per_stage, need = _check_pools(run, pools)
    results, prev_run_dir, final_run = _run_stages(run, pools, ref, tok, steps_per_stage, need)
    return _write_summary(run.out, identity, results, prev_run_dir, final_run, t_start)


@dataclass
class _MatesRun:
    """One `run_mates` call: its settings (checked when made) and what it runs with."""

    out: Path
    settings: MatesSettings
    runner: Any
    heldout: Any
    progress: bool

    @property
    def cfg(self) -> TrainConfig:
        return self.settings.train

    @property
    def seed(self) -> int:
        return self.settings.seed or 0

    def __post_init__(self) -> None:
        s = self.settings
        probes, T = s.probes, s.trajectory_length
        if s.method == "mates" and s.stages > 1 and probes < MIN_PROBES:
            raise ConfigError(f"probe at least {MIN_PROBES} documents per stage, not {probes}")
        if s.group and s.selection != "gumbel":
            raise ConfigError(
                "selection='gumbel_official' is MATES' Gumbel top-k; Group-MATES selects "
                "greedily within clusters"
            )
        if s.group and (T < 1 or probes // max(T, 1) < 5):
            raise ConfigError(
                f"Group-MATES needs at least 5 rollouts of trajectory_length={T} "
                f"documents per stage; {probes} probes make {probes // max(T, 1)}"
            )
        if s.group and s.bootstrap_rounds and (s.bootstrap_candidates or T) < T:
            raise ConfigError(
                f"bootstrap rollouts of {T} documents need at least {T} bootstrap_candidates"
            )


def _reference_split(
    run: _MatesRun,
    targets: str | os.PathLike | Sequence[str],
    fields: Sequence[str] | None,
    context_fields: Sequence[str] | None,
    continuation_fields: Sequence[str] | None,
) -> tuple[tuple[tuple[str, ...], tuple[str, ...]] | None, Sequence[str] | None]:
    """The (context, continuation) fields the reference loss splits the targets by, or None
    (every token scored): none with `reference_scoring='whole'`; a built-in benchmark's own
    split only when `fields` is not given. And the fields of whole examples (a split named but
    not used: its fields, joined)."""
    from assay.common.targets import target_split

    explicit = continuation_fields is not None or context_fields is not None
    split = target_split(targets, context_fields, continuation_fields)
    if (
        split is not None
        and explicit
        and fields is not None
        and list(fields) != [*split[0], *split[1]]
    ):
        raise ConfigError(
            f"fields {list(fields)} are not context_fields + continuation_fields "
            f"{[*split[0], *split[1]]}: give the split alone"
        )
    if run.settings.reference_scoring == "whole" or (not explicit and fields is not None):
        if explicit and fields is None and split is not None:
            fields = [*split[0], *split[1]]
        return None, fields
    return split, fields


def _prepare_folder(
    run: _MatesRun,
    corpus: Any,
    targets: str | os.PathLike | Sequence[str],
    fields: Sequence[str] | None,
    max_targets: int | None,
    tokenizer: Any,
    split: tuple[tuple[str, ...], tuple[str, ...]] | None = None,
) -> tuple[list[Any], Any]:
    """Check the folder against the inputs and make it; the target examples (checked before any
    work: texts, or (context, continuation) pairs with a `split`) and the tokenizer (given, or
    trained on the corpus into `out/tokenizer`)."""
    from assay.common.targets import load_target_pairs, load_targets
    from assay.common.tokenizer import load_tokenizer, train_tokenizer
    from assay.proxies.model import get_preset

    out = run.out
    corpus.check_output(out, "MATES folder")
    if run.heldout is not None:
        run.heldout.check_output(out, "MATES folder")
    out.mkdir(parents=True, exist_ok=True)

    if split is None:
        ref_texts: list[Any] = load_targets(targets, fields, max_items=max_targets, seed=run.seed)
    else:
        assert isinstance(targets, str | os.PathLike)
        ref_texts = load_target_pairs(targets, *split, max_items=max_targets, seed=run.seed)
    if len(ref_texts) < MIN_REFERENCE:
        raise InputError(
            f"the targets have {len(ref_texts)} examples; MATES needs at least "
            f"{MIN_REFERENCE} (the paper uses 1,024)"
        )

    if tokenizer is None:
        tdir = out / "tokenizer"
        tok = (
            load_tokenizer(tdir)
            if (tdir / "tokenizer.json").exists()
            else train_tokenizer(
                corpus, get_preset(run.settings.preset).vocab_size, tdir, seed=run.seed
            )
        )
    elif isinstance(tokenizer, str | os.PathLike):
        tok = load_tokenizer(tokenizer)
    else:
        tok = tokenizer
    return ref_texts, tok


def _claim_folder(run: _MatesRun, corpus: Any, tok: Any, ref_texts: list[Any]) -> dict[str, Any]:
    """The run's identity, written to `out/mates_config.json`; a folder that holds a run with
    other settings is refused. A run scoring whole reference examples keeps the identity it had
    before continuations were scored; one scoring continuations records its pairs and says so."""
    from assay.common.tokens import tokenizer_fingerprint

    s = run.settings
    identity = {
        "corpus": [shard.name for shard in corpus.shards],
        "content": config_hash([shard.identity() for shard in corpus.shards]),
        "tokenizer": tokenizer_fingerprint(tok),
        "reference": config_hash([list(r) if isinstance(r, tuple) else r for r in ref_texts]),
        "stage_tokens": s.stage_tokens,
        "stages": s.stages,
        "keep": s.keep,
        "tau": s.tau,
        "probes": s.probes,
        "preset": s.preset,
        "seed": run.seed,
        "config": run.cfg.model_dump(),
        "embedder": s.embedder,
        "heads": list(s.heads),
        "alphas": [float(a) for a in s.alphas],
        "holdout": s.holdout,
        **(
            {"influence_model": "finetune", "finetune": s.finetune.model_dump()}
            if s.influence_model == "finetune"
            else {}
        ),
        "method": s.method,
        "group": s.group,
        **(
            {"trajectory_length": s.trajectory_length, "docs_per_cluster": s.docs_per_cluster}
            if s.group
            else {}
        ),
        **({k: getattr(s, k) for k in BOOTSTRAP_FIELDS} if s.group else {}),
        "heldout": None if run.heldout is None else [shard.name for shard in run.heldout.shards],
        **(
            {"reference_scoring": "continuation"}
            if ref_texts and isinstance(ref_texts[0], tuple)
            else {}
        ),
        **({"selection": s.selection} if s.selection != "gumbel" else {}),
    }
    cfg_path = run.out / CONFIG_FILE
    if cfg_path.exists():
        old = read_json(cfg_path)
        if old != identity:
            diff = sorted(k for k in set(old) | set(identity) if old.get(k) != identity.get(k))
            raise StateError(
                f"{run.out} holds a MATES run with other settings ({', '.join(diff)} differ); "
                "use another folder"
            )
    write_json(cfg_path, identity)
    return identity


def _check_pools(run: _MatesRun, pools: list[tuple[Any, int, int]]) -> tuple[int, int]:
    """Steps per stage and the tokens a stage trains on; refuses pools too small for them."""
    cfg, keep = run.cfg, run.settings.keep
    per_step = cfg.batch_size * cfg.grad_accum
    steps_per_stage = (run.settings.stage_tokens // cfg.seq_len) // per_step
    if steps_per_stage < 1:
        raise ConfigError(
            f"stage_tokens={run.settings.stage_tokens:,} make fewer than one step of {per_step} sequences "
            f"x {cfg.seq_len} tokens"
        )
    need = steps_per_stage * per_step * cfg.seq_len
    for s, (_, docs, tokens) in enumerate(pools):
        supply = tokens * keep * cfg.max_epochs
        if docs == 0 or supply < need:
            raise InputError(
                f"the stage-{s} candidate pool is too small: {docs:,} documents of {tokens:,} "
                f"tokens; keeping {keep:.0%} of it (each token used at most "
                f"{cfg.max_epochs:g} times) gives about {int(supply):,} tokens, less than the "
                f"{need:,} tokens a stage trains on. Give a larger corpus, fewer stages, fewer "
                "stage_tokens or a larger keep fraction"
            )
        if s > 0 and run.settings.method == "mates" and run.settings.probes > docs:
            raise ConfigError(
                f"the probe set ({run.settings.probes:,} documents) is larger than the stage-{s} "
                f"candidate pool ({docs:,} documents); probe fewer documents or give a larger "
                "corpus"
            )
    return steps_per_stage, need


def _run_stages(
    run: _MatesRun,
    pools: list[tuple[Any, int, int]],
    ref: ReferenceSet,
    tok: Any,
    steps_per_stage: int,
    need: int,
) -> tuple[list[StageResult], Path, Any]:
    """Every stage in turn (a finished one read back); returns their results, the last stage's
    proxy folder and its run (None when every stage was finished before)."""
    results: list[StageResult] = []
    prev_run_dir: Path | None = None
    final_run: Any = None
    for s in range(run.settings.stages):
        stage_dir = run.out / f"stage-{s}"
        done = stage_dir / STAGE_FILE
        if done.exists():
            saved = read_json(done)
            results.append(StageResult(**saved))
            prev_run_dir = stage_dir / "proxy"
            continue
        result, final_run = _run_stage(
            run, s, pools[s], prev_run_dir, ref, tok, steps_per_stage, need
        )
        write_json(done, result.to_dict())
        results.append(result)
        prev_run_dir = stage_dir / "proxy"
    assert prev_run_dir is not None
    return results, prev_run_dir, final_run


def _run_stage(
    run: _MatesRun,
    s: int,
    pool_info: tuple[Any, int, int],
    prev_run_dir: Path | None,
    ref: ReferenceSet,
    tok: Any,
    steps_per_stage: int,
    need: int,
) -> tuple[StageResult, Any]:
    """Stage `s`: select from its pool, tokenize what was kept, train the proxy on it
    (continuing the previous stage's), measure the reference loss."""
    from assay.common.tokens import TokenCache
    from assay.io.corpus import Corpus
    from assay.proxies.train import train_proxy

    t_stage = time.perf_counter()
    cfg, stage_dir = run.cfg, run.out / f"stage-{s}"
    pool, pool_docs, pool_tokens = pool_info
    stage_method, selected, probing, model_report = _select_stage(
        run, s, pool, stage_dir, prev_run_dir, ref, tok
    )
    cache = TokenCache.build(
        Corpus(selected), tok, stage_dir / "tokens", domain_column=None, runner=run.runner
    )
    kept_docs = sum(d.n_docs for d in cache.domains.values())
    kept_tokens = sum(d.n_tokens for d in cache.domains.values())
    if kept_tokens * cfg.max_epochs < need:
        raise InputError(
            f"stage {s} kept {kept_docs:,} documents of {kept_tokens:,} tokens, less than the "
            f"{need:,} tokens the stage trains on (each used at most {cfg.max_epochs:g} "
            "times); raise keep or lower stage_tokens"
        )
    proxy = train_proxy(
        cache,
        "natural",
        run.settings.stage_tokens,
        run.settings.preset,
        run.seed + s,
        out_dir=stage_dir / "proxy",
        tokenizer=tok,
        heldout=run.heldout,
        eval_docs=run.settings.eval_docs,
        config=cfg,
        progress=run.progress,
        init_from=prev_run_dir,
        keep_optimizer=True,
        schedule_offset=s * steps_per_stage,
        schedule_total=run.settings.stages * steps_per_stage,
    )
    ref_loss = _run_reference_loss(
        stage_dir / "proxy", ref, run.settings.ref_batch_size, run.settings.device
    )
    result = StageResult(
        stage=s,
        method=stage_method,
        pool_docs=pool_docs,
        pool_tokens=pool_tokens,
        kept_docs=kept_docs,
        kept_tokens=kept_tokens,
        run=_run_summary(proxy),
        reference_loss=ref_loss,
        probing=probing,
        influence_model=_compact_model_report(model_report),
        seconds=round(time.perf_counter() - t_stage, 3),
    )
    return result, proxy


def _select_stage(
    run: _MatesRun,
    s: int,
    pool: Any,
    stage_dir: Path,
    prev_run_dir: Path | None,
    ref: ReferenceSet,
    tok: Any,
) -> tuple[str, Path, dict[str, Any], dict[str, Any]]:
    """Stage `s`'s selection from its pool: (method, selected folder, probing, influence model
    report); random at stage 0 and with method 'random'."""
    seed = run.seed + s
    if s == 0 or run.settings.method == "random":
        return "random", select_random(pool, stage_dir, run.settings.keep, seed, run.runner), {}, {}
    assert prev_run_dir is not None
    if run.settings.group:
        selected, probing, model_report = group_stage(
            pool, stage_dir, prev_run_dir, ref, tok, run.cfg, run.settings,
            seed=seed, runner=run.runner, progress=run.progress,
        )  # fmt: skip
        return "group-mates", selected, probing, model_report
    scorer, probing = fit_stage_scorer(
        pool, stage_dir, prev_run_dir, ref, tok, run.cfg, run.settings,
        seed=seed, runner=run.runner, progress=run.progress,
    )  # fmt: skip
    model_report = scorer.report
    selected = select_mates(
        pool, stage_dir, scorer, run.settings.keep, run.settings.tau, seed, run.runner,
        run.settings.selection,
    )  # fmt: skip
    return run.settings.method, selected, probing, model_report


def _write_summary(
    out: Path,
    identity: dict[str, Any],
    results: list[StageResult],
    prev_run_dir: Path,
    final_run: Any,
    t_start: float,
) -> MatesResult:
    """`out/mates.json`: the settings, every stage's figures and the final run's."""
    from assay.proxies.train import ProxyRun

    final_run = final_run or ProxyRun.load(prev_run_dir)
    summary = MatesResult(
        out_dir=str(out),
        config=identity,
        stages=results,
        final_run=_run_summary(final_run),
        heldout_bpb=dict(final_run.bpb),
        reference_loss=results[-1].reference_loss,
    )
    payload = summary.to_dict()
    payload["seconds"] = round(time.perf_counter() - t_start, 3)
    write_json(out / SUMMARY_FILE, payload)
    return summary


def _compact_model_report(report: dict[str, Any]) -> dict[str, Any]:
    keep = (
        "probes",
        "train",
        "holdout",
        "head",
        "spearman",
        "candidates",
        "target_mean",
        "target_std",
        "alpha",
        "tau",
        "individual",
        "rollouts",
        "initial",
        "bootstrap",
    )
    return {k: v for k, v in report.items() if k in keep}


def _run_reference_loss(
    run_dir: Path, ref: ReferenceSet, batch_size: int | None, device: str | None = None
) -> float:
    """The mean reference loss of a run's final model on `device`, in float32 (as probes
    measure it)."""
    from assay.common.lm import load_causal_lm

    model = load_causal_lm(run_dir / "model", dtype="float32", device=device)
    device = next(model.parameters()).device
    return reference_loss(model, ref.batches(batch_size or default_ref_batch_size(device), device))
