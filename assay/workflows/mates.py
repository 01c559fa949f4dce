"""MATES' staged training: consume-once stage pools, oracle probes, an influence model, Gumbel top-k."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from assay.common.tokens import _backend
from assay.selection.group_mates import RelationalInfluenceModel, group_select
from assay.selection.mates import DEFAULT_ALPHAS, HEADS, MIN_PROBES, MatesScorer
from assay.util.files import atomic_path, host_name, read_json, write_json
from assay.util.hashing import config_hash, stable_hash64
from assay.workflows.mates_probing import (
    MIN_REFERENCE,
    ReferenceSet,
    default_ref_batch_size,
    encode_documents,
    probe_run,
    reference_loss,
)

STAGE_FILE = "stage.json"


SUMMARY_FILE = "mates.json"


CONFIG_FILE = "mates_config.json"


def mates_train_config(**overrides: Any) -> Any:
    """Training settings for staged MATES runs: one WSD schedule with 4% warmup over all stages
    (the paper's), every selected token seen at most once per stage (consume-once)."""
    from assay.proxies.train import TrainConfig

    base = {"schedule": "wsd", "warmup": 0.04, "decay_fraction": 0.1, "max_epochs": 1.0}
    return TrainConfig(**{**base, **overrides})


@dataclass
class PoolTask:
    """Per shard: the documents of one stage's candidate pool (seeded hash of the id modulo the
    number of stages), and their exact proxy-token count in the shard's stats."""

    stage: int
    stages: int
    seed: int
    tokenizer: Any  # tokenizers.Tokenizer (picklable)
    options: Any

    def output_name(self, shard: Any) -> str:
        return f"{shard.stem}.parquet"

    def __call__(self, shard: Any, out: Path | None) -> Any:
        import polars as pl

        from assay.exec.runner import report_progress
        from assay.io.shards import ShardStats
        from assay.io.write import ShardWriter

        assert out is not None
        stats = ShardStats(shard.name)
        writer = ShardWriter(out, fmt="parquet")
        tokens = 0
        for batch in shard.read(self.options, stats):
            h = stable_hash64(batch.get_column("id").to_list(), self.seed)
            mine = batch.filter(pl.Series((h % np.uint64(self.stages)) == self.stage))
            if mine.height:
                enc = self.tokenizer.encode_batch(
                    mine.get_column("text").to_list(), add_special_tokens=False
                )
                tokens += sum(len(e.ids) + 1 for e in enc)  # + EOS, as in a TokenCache
                writer.write(mine)
            stats.docs_out += mine.height
            report_progress(batch.height)
        writer.close()
        stats.extra["tokens"] = tokens
        return stats


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


def _pools(
    corpus: Any, out: Path, stages: int, seed: int, tokenizer: Any, runner: Any
) -> list[tuple[Any, int, int]]:
    """(pool corpus, documents, tokens) per stage: consume-once pools written under out/pools."""
    from assay.io.corpus import Corpus

    pools = []
    for s in range(stages):
        folder = out / "pools" / f"stage-{s}"
        result = runner.run(
            PoolTask(s, stages, seed, _backend(tokenizer), corpus.options),
            corpus.shards,
            folder,
            label=f"mates:pool-{s}",
        )
        tokens = sum(int(st.extra.get("tokens", 0)) for st in result.shards)
        pools.append((Corpus(folder), result.docs_out, tokens))
    return pools


def run_mates(
    corpus: Any,
    out_dir: str | os.PathLike,
    *,
    reference: str | os.PathLike | Sequence[str],
    stage_tokens: int,
    stages: int = 5,
    keep: float = 0.2,
    tau: float = 0.5,
    probes: int = 1000,
    preset: str = "tiny",
    seed: int = 0,
    fields: Sequence[str] | None = None,
    max_reference: int | None = 1024,
    tokenizer: Any = None,
    heldout: Any = None,
    eval_docs: int | None = 200,
    config: Any = None,
    embedder: dict[str, Any] | str | None = None,
    heads: Sequence[str] = HEADS,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    holdout: float = 0.2,
    ref_batch_size: int | None = None,
    method: str = "mates",
    group: bool = False,
    trajectory_length: int = 4,
    docs_per_cluster: int = 200,
    runner: Any = None,
    progress: bool = False,
) -> MatesResult:
    """Staged pretraining with MATES data selection; returns every stage's figures.

    `corpus` is split into `stages` consume-once candidate pools (a seeded hash of the id).
    Stage 0 trains on a random `keep` fraction of its pool; each later stage probes the previous
    stage's final state on `probes` documents of its own pool against `reference` (target
    examples: a file, a built-in benchmark such as 'assay_champ', or a list of texts; see
    `load_targets`), fits the influence model, scores its pool with it (`score_corpus`) and keeps
    `keep` of it by Gumbel top-k at temperature `tau` (`select`). Each stage trains
    `stage_tokens` tokens, continuing the previous stage's weights and optimizer state under one
    schedule over all stages (`config`, default `mates_train_config()`).

    `method='random'` makes every stage random (the baseline with the same pools, budget and
    schedule). `group=True` uses Group-MATES (rollouts, relational model, cluster-wise greedy
    selection). Everything is written under `out_dir` (`mates.json`, `stage-<s>/`); a finished
    stage is never redone, and an interrupted one resumes from its last finished step.
    """
    from assay.common.targets import load_targets
    from assay.common.tokenizer import load_tokenizer, train_tokenizer
    from assay.common.tokens import TokenCache, tokenizer_fingerprint
    from assay.exec.runner import LocalRunner
    from assay.io.corpus import Corpus
    from assay.proxies.model import get_preset
    from assay.proxies.train import train_proxy

    t_start = time.perf_counter()
    if method not in ("mates", "random"):
        raise ValueError(f"method must be 'mates' or 'random', not {method!r}")
    if stages < 1:
        raise ValueError("stages must be >= 1")
    if not 0 < keep <= 1:
        raise ValueError(f"keep must be a fraction in (0, 1], not {keep}")
    if tau <= 0:
        raise ValueError("tau must be positive")
    if method == "mates" and stages > 1 and probes < MIN_PROBES:
        raise ValueError(f"probe at least {MIN_PROBES} documents per stage, not {probes}")
    if group and (trajectory_length < 1 or probes // max(trajectory_length, 1) < 5):
        raise ValueError(
            f"Group-MATES needs at least 5 rollouts of trajectory_length={trajectory_length} "
            f"documents per stage; {probes} probes make {probes // max(trajectory_length, 1)}"
        )
    get_preset(preset)
    cfg = config if config is not None else mates_train_config()
    runner = runner or LocalRunner(workers=1, progress=progress)
    out = Path(out_dir)
    corpus.check_output(out, "MATES folder")
    if heldout is not None:
        heldout.check_output(out, "MATES folder")
    out.mkdir(parents=True, exist_ok=True)

    # Reference set: checked before any work.
    ref_texts = load_targets(reference, fields, max_items=max_reference, seed=seed)
    if len(ref_texts) < MIN_REFERENCE:
        raise ValueError(
            f"the reference set has {len(ref_texts)} examples; MATES needs at least "
            f"{MIN_REFERENCE} (the paper uses 1,024)"
        )

    if tokenizer is None:
        tdir = out / "tokenizer"
        tok = (
            load_tokenizer(tdir)
            if (tdir / "tokenizer.json").exists()
            else train_tokenizer(corpus, get_preset(preset).vocab_size, tdir, seed=seed)
        )
    elif isinstance(tokenizer, str | os.PathLike):
        tok = load_tokenizer(tokenizer)
    else:
        tok = tokenizer

    identity = {
        "corpus": [s.name for s in corpus.shards],
        "content": config_hash([s.identity() for s in corpus.shards]),
        "tokenizer": tokenizer_fingerprint(tok),
        "reference": config_hash(ref_texts),
        "stage_tokens": stage_tokens,
        "stages": stages,
        "keep": keep,
        "tau": tau,
        "probes": probes,
        "preset": preset,
        "seed": seed,
        "config": cfg.model_dump(),
        "embedder": embedder,
        "heads": list(heads),
        "alphas": [float(a) for a in alphas],
        "holdout": holdout,
        "method": method,
        "group": group,
        **(
            {"trajectory_length": trajectory_length, "docs_per_cluster": docs_per_cluster}
            if group
            else {}
        ),
        "heldout": None if heldout is None else [s.name for s in heldout.shards],
    }
    cfg_path = out / CONFIG_FILE
    if cfg_path.exists():
        old = read_json(cfg_path)
        if old != identity:
            diff = sorted(k for k in set(old) | set(identity) if old.get(k) != identity.get(k))
            raise ValueError(
                f"{out} holds a MATES run with other settings ({', '.join(diff)} differ); "
                "use another folder"
            )
    write_json(cfg_path, identity)

    ref = ReferenceSet.from_texts(ref_texts, tok, cfg.seq_len)

    # Pools and the checks that need their sizes, before any training.
    pools = _pools(corpus, out, stages, seed, tok, runner)
    per_step = cfg.batch_size * cfg.grad_accum
    steps_per_stage = (stage_tokens // cfg.seq_len) // per_step
    if steps_per_stage < 1:
        raise ValueError(
            f"stage_tokens={stage_tokens:,} make fewer than one step of {per_step} sequences "
            f"x {cfg.seq_len} tokens"
        )
    need = steps_per_stage * per_step * cfg.seq_len
    for s, (_, docs, tokens) in enumerate(pools):
        supply = tokens * keep * cfg.max_epochs
        if docs == 0 or supply < need:
            raise ValueError(
                f"the stage-{s} candidate pool is too small: {docs:,} documents of {tokens:,} "
                f"tokens; keeping {keep:.0%} of it (each token used at most "
                f"{cfg.max_epochs:g} times) gives about {int(supply):,} tokens, less than the "
                f"{need:,} tokens a stage trains on. Give a larger corpus, fewer stages, fewer "
                "stage_tokens or a larger keep fraction"
            )
        if s > 0 and method == "mates" and probes > docs:
            raise ValueError(
                f"the probe set ({probes:,} documents) is larger than the stage-{s} candidate "
                f"pool ({docs:,} documents); probe fewer documents or give a larger corpus"
            )

    results: list[StageResult] = []
    prev_run_dir: Path | None = None
    final_run: Any = None
    for s in range(stages):
        stage_dir = out / f"stage-{s}"
        done = stage_dir / STAGE_FILE
        if done.exists():
            saved = read_json(done)
            results.append(StageResult(**saved))
            prev_run_dir = stage_dir / "proxy"
            continue
        t_stage = time.perf_counter()
        pool, pool_docs, pool_tokens = pools[s]
        probing: dict[str, Any] = {}
        model_report: dict[str, Any] = {}
        stage_method = "random" if s == 0 or method == "random" else method
        if stage_method == "random":
            selected = _select_random(pool, stage_dir, keep, seed + s, runner)
        else:
            assert prev_run_dir is not None
            if group:
                selected, probing, model_report = _group_stage(
                    pool, stage_dir, prev_run_dir, ref, tok, cfg, probes=probes, keep=keep,
                    seed=seed + s, embedder=embedder, holdout=holdout,
                    trajectory_length=trajectory_length, docs_per_cluster=docs_per_cluster,
                    runner=runner, ref_batch_size=ref_batch_size, progress=progress,
                )  # fmt: skip
                stage_method = "group-mates"
            else:
                scorer, probing = _fit_stage_scorer(
                    pool, stage_dir, prev_run_dir, ref, tok, cfg, probes=probes, seed=seed + s,
                    embedder=embedder, heads=heads, alphas=alphas, holdout=holdout,
                    runner=runner, ref_batch_size=ref_batch_size, progress=progress,
                )  # fmt: skip
                model_report = scorer.report
                selected = _select_mates(pool, stage_dir, scorer, keep, tau, seed + s, runner)
        cache = TokenCache.build(
            Corpus(selected), tok, stage_dir / "tokens", domain_column=None, runner=runner
        )
        kept_docs = sum(d.n_docs for d in cache.domains.values())
        kept_tokens = sum(d.n_tokens for d in cache.domains.values())
        if kept_tokens * cfg.max_epochs < need:
            raise ValueError(
                f"stage {s} kept {kept_docs:,} documents of {kept_tokens:,} tokens, less than the "
                f"{need:,} tokens the stage trains on (each used at most {cfg.max_epochs:g} "
                "times); raise keep or lower stage_tokens"
            )
        run = train_proxy(
            cache,
            "natural",
            stage_tokens,
            preset,
            seed + s,
            out_dir=stage_dir / "proxy",
            tokenizer=tok,
            heldout=heldout,
            eval_docs=eval_docs,
            config=cfg,
            progress=progress,
            init_from=prev_run_dir,
            keep_optimizer=True,
            schedule_offset=s * steps_per_stage,
            schedule_total=stages * steps_per_stage,
        )
        ref_loss = _run_reference_loss(stage_dir / "proxy", ref, ref_batch_size)
        result = StageResult(
            stage=s,
            method=stage_method,
            pool_docs=pool_docs,
            pool_tokens=pool_tokens,
            kept_docs=kept_docs,
            kept_tokens=kept_tokens,
            run=_run_summary(run),
            reference_loss=ref_loss,
            probing=probing,
            influence_model=_compact_model_report(model_report),
            seconds=round(time.perf_counter() - t_stage, 3),
        )
        write_json(done, result.to_dict())
        results.append(result)
        prev_run_dir = stage_dir / "proxy"
        final_run = run

    from assay.proxies.train import ProxyRun

    assert prev_run_dir is not None
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
    keep = ("probes", "train", "holdout", "head", "spearman", "candidates", "target_mean",
            "target_std", "alpha", "tau", "individual")  # fmt: skip
    return {k: v for k, v in report.items() if k in keep}


def _run_reference_loss(run_dir: Path, ref: ReferenceSet, batch_size: int | None) -> float:
    from assay.common.lm import load_causal_lm

    model = load_causal_lm(run_dir / "model")
    device = next(model.parameters()).device
    return reference_loss(model, ref.batches(batch_size or default_ref_batch_size(device), device))


def _select_random(pool: Any, stage_dir: Path, keep: float, seed: int, runner: Any) -> Path:
    from assay.selection.random_scorer import RandomScorer
    from assay.selection.score import score_corpus
    from assay.selection.select import select

    score_corpus(RandomScorer(seed=seed), pool, stage_dir / "scores", runner=runner)
    select(
        pool, stage_dir / "scores", stage_dir / "selected", runner=runner,
        column="random", policy="topk", keep=keep, by="docs", seed=seed, group_by=None,
    )  # fmt: skip
    return stage_dir / "selected"


def _select_mates(
    pool: Any, stage_dir: Path, scorer: MatesScorer, keep: float, tau: float, seed: int, runner: Any
) -> Path:
    from assay.selection.score import score_corpus
    from assay.selection.select import select

    score_corpus(scorer, pool, stage_dir / "scores", runner=runner)
    # score = -predicted influence, so Gumbel top-k on it is argtopk(-pred / tau + G)
    select(
        pool, stage_dir / "scores", stage_dir / "selected", runner=runner,
        column=scorer.column, policy="gumbel", keep=keep, tau=tau, by="docs", seed=seed,
        group_by=None,
    )  # fmt: skip
    return stage_dir / "selected"


def _probe_sample(pool: Any, n: int, seed: int) -> tuple[list[str], list[str]]:
    frame = pool.sample(n, seed=seed, columns=["id", "text"])
    # a fixed order (by id hash), whatever the order the sample came in
    ids = frame.get_column("id").to_list()
    texts = frame.get_column("text").to_list()
    order = np.argsort(stable_hash64(ids, seed), kind="stable")
    return [ids[i] for i in order], [texts[i] for i in order]


def _oracle(
    pool: Any,
    stage_dir: Path,
    prev_run_dir: Path,
    ref: ReferenceSet,
    tok: Any,
    cfg: Any,
    *,
    probes: int,
    seed: int,
    runner: Any,
    ref_batch_size: int | None,
    progress: bool,
    trajectory_length: int = 1,
) -> tuple[list[str], list[str], np.ndarray, dict[str, Any]]:
    """Probe a sample of the pool (or read the probes of an interrupted stage back); with
    `trajectory_length` > 1, consecutive documents of the sample form the rollouts."""
    import polars as pl

    path = stage_dir / "oracle.parquet"
    if path.exists():
        frame = pl.read_parquet(path)
        return (
            frame.get_column("id").to_list(),
            frame.get_column("text").to_list(),
            frame.get_column("influence").to_numpy(),
            read_json(stage_dir / "probing.json"),
        )
    ids, texts = _probe_sample(pool, probes, seed)
    seqs = encode_documents(texts, tok, cfg.seq_len)
    T = trajectory_length
    result = probe_run(
        prev_run_dir, seqs, ref, runner=runner, ref_batch_size=ref_batch_size,
        trajectory_length=T, progress=progress,
    )  # fmt: skip
    frame = pl.DataFrame(
        {
            "id": ids,
            "text": texts,
            "trajectory": np.arange(len(ids)) // T,
            "position": np.arange(len(ids)) % T,
            "tokens": [len(x) for x in seqs],
            "influence": result.influence,
            "loss_after": result.loss_after,
        }
    )
    info = result.summary()
    write_json(stage_dir / "probing.json", info)
    with atomic_path(path) as tmp:
        frame.write_parquet(tmp)
    return ids, texts, result.influence, info


def _fit_stage_scorer(
    pool: Any,
    stage_dir: Path,
    prev_run_dir: Path,
    ref: ReferenceSet,
    tok: Any,
    cfg: Any,
    *,
    probes: int,
    seed: int,
    embedder: Any,
    heads: Sequence[str],
    alphas: Sequence[float],
    holdout: float,
    runner: Any,
    ref_batch_size: int,
    progress: bool,
) -> tuple[MatesScorer, dict[str, Any]]:
    from assay.selection.base import load_scorer

    ids, texts, influence, info = _oracle(
        pool, stage_dir, prev_run_dir, ref, tok, cfg, probes=probes, seed=seed, runner=runner,
        ref_batch_size=ref_batch_size, progress=progress,
    )  # fmt: skip
    folder = stage_dir / "scorer"
    if (folder / "scorer.json").exists():
        scorer = load_scorer(folder)
        assert isinstance(scorer, MatesScorer)
        return scorer, info
    scorer = MatesScorer(embedder=embedder, heads=heads, alphas=alphas, holdout=holdout)
    scorer.fit(texts, influence, ids=ids, seed=seed, progress=progress)
    tmp = stage_dir / f".scorer.tmp-{host_name()}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    scorer.save(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return load_scorer(folder), info  # type: ignore[return-value]


def _group_stage(
    pool: Any,
    stage_dir: Path,
    prev_run_dir: Path,
    ref: ReferenceSet,
    tok: Any,
    cfg: Any,
    *,
    probes: int,
    keep: float,
    seed: int,
    embedder: Any,
    holdout: float,
    trajectory_length: int,
    docs_per_cluster: int,
    runner: Any,
    ref_batch_size: int | None,
    progress: bool,
) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """Rollouts -> relational model -> individual scores (score_corpus) -> greedy selection."""
    import polars as pl

    from assay.common.embed import Embedder
    from assay.io.scores import SCORES_META, ScoreSet, score_file
    from assay.selection.score import score_corpus
    from assay.selection.select import select

    T = trajectory_length
    n = (probes // T) * T
    _, texts, influence, info = _oracle(
        pool, stage_dir, prev_run_dir, ref, tok, cfg, probes=n, seed=seed, runner=runner,
        ref_batch_size=ref_batch_size, progress=progress, trajectory_length=T,
    )  # fmt: skip
    emb_config = {"model": embedder} if isinstance(embedder, str) or embedder is None else dict(embedder)  # fmt: skip
    model_dir = stage_dir / "relational"
    if (model_dir / "relational.json").exists():
        model = RelationalInfluenceModel.load(model_dir)
    else:
        vecs = Embedder(**emb_config).embed(texts, progress=progress)
        model = RelationalInfluenceModel().fit(
            vecs.reshape(-1, T, vecs.shape[1]),
            np.asarray(influence).reshape(-1, T),
            holdout=holdout,
            seed=seed,
        )
        model.save(model_dir)
    scorer_dir = stage_dir / "scorer"
    if not (scorer_dir / "scorer.json").exists():
        model.as_scorer(emb_config).save(scorer_dir)
    from assay.selection.base import load_scorer

    scorer = load_scorer(scorer_dir)
    score_corpus(scorer, pool, stage_dir / "scores", runner=runner)

    group_dir = stage_dir / "group_scores"
    if not (group_dir / SCORES_META).exists():
        frame = ScoreSet(stage_dir / "scores").read_all(pool.shards, [scorer.column])
        pool_ids = frame.get_column("id").to_list()
        by_id: dict[str, str] = {}
        for batch in pool.iter_batches():
            by_id.update(zip(batch.get_column("id").to_list(), batch.get_column("text").to_list(), strict=True))  # fmt: skip
        vecs = Embedder(**emb_config).embed([by_id[i] for i in pool_ids], progress=progress)
        u = -frame.get_column(scorer.column).to_numpy().astype(np.float64)
        mask = group_select(u, vecs, keep, alpha=model.alpha, tau=model.tau,
                            docs_per_cluster=docs_per_cluster, seed=seed)  # fmt: skip
        chosen = frame.with_columns(pl.Series("group_mates", mask.astype(np.float32)))
        for shard in pool.shards:
            part = chosen.filter(pl.col("shard") == shard.name).select("id", "group_mates")
            with atomic_path(score_file(group_dir, shard)) as tmp:
                part.write_parquet(tmp)
        write_json(
            group_dir / SCORES_META,
            {"columns": ["group_mates"], "scorer": {"type": "group-mates", "config": {}}},
        )
    select(
        pool, group_dir, stage_dir / "selected", runner=runner,
        column="group_mates", policy="threshold", threshold=0.5, group_by=None,
    )  # fmt: skip
    return stage_dir / "selected", info, model.report
