"""The data side of MATES' staged training (what `run_mates` runs per stage): each stage's
consume-once candidate pool, and how the stage chooses its data from it.

- pools: a seeded hash of each document's id modulo the number of stages puts it in one stage's
  pool, written under `out/pools/stage-<s>` with its exact proxy-token count;
- random (stage 0, and every stage of the baseline): a seeded random `keep` fraction;
- MATES: oracle probes of the previous stage's final state on a sample of the pool, an influence
  model fitted on them (`MatesScorer`), the pool scored with it and a `keep` fraction sampled by
  Gumbel top-k;
- Group-MATES: random and bootstrap rollouts of `trajectory_length` probes, a relational
  influence model (`assay.workflows.group_mates_rollouts`), individual scores and a
  cluster-wise greedy selection.

Every step writes its result under the stage folder (oracle.parquet, probing.json, scorer/,
relational/, scores/, group_scores/, selected/) and reads it back when it is there, so an
interrupted stage resumes without probing or fitting again (Group-MATES also writes
bootstrap-<r>.parquet and relational-<r>/ per bootstrap round). Group-MATES embeds each pool
document once: the pass that writes its individual scores also keeps its embedding
(embeddings/, removed once the greedy selection is written), and the selection reads those
back with the scores, never the texts.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from assay.common.tokens import backend_tokenizer
from assay.selection.group_mates import RelationalInfluenceModel, group_select
from assay.selection.mates import MatesScorer
from assay.selection.mates_finetune import MatesFinetunedScorer
from assay.util.files import atomic_path, host_name, read_json, read_parquet, write_json
from assay.util.hashing import stable_hash64
from assay.util.remote import publish
from assay.workflows.group_mates_rollouts import relational_model
from assay.workflows.mates_probing import ReferenceSet, encode_documents, probe_run
from assay.workflows.mates_settings import MatesSettings


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


def stage_pools(
    corpus: Any, out: Path, stages: int, seed: int, tokenizer: Any, runner: Any
) -> list[tuple[Any, int, int]]:
    """(pool corpus, documents, tokens) per stage: consume-once pools written under out/pools."""
    from assay.io.corpus import Corpus

    pools = []
    for s in range(stages):
        folder = out / "pools" / f"stage-{s}"
        result = runner.run(
            PoolTask(s, stages, seed, backend_tokenizer(tokenizer), corpus.options),
            corpus.shards,
            folder,
            label=f"mates:pool-{s}",
        )
        tokens = sum(int(st.extra.get("tokens", 0)) for st in result.shards)
        pools.append((Corpus(folder), result.docs_out, tokens))
    return pools


def select_random(pool: Any, stage_dir: Path, keep: float, seed: int, runner: Any) -> Path:
    from assay.selection.random_scorer import RandomScorer
    from assay.selection.score import score_corpus
    from assay.selection.select import select

    score_corpus(RandomScorer(seed=seed), pool, stage_dir / "scores", runner=runner)
    select(
        pool,
        stage_dir / "scores",
        stage_dir / "selected",
        runner=runner,
        column="random",
        policy="topk",
        keep=keep,
        by="docs",
        seed=seed,
        group_by=None,
    )
    return stage_dir / "selected"


def select_mates(
    pool: Any,
    stage_dir: Path,
    scorer: MatesScorer | MatesFinetunedScorer,
    keep: float,
    tau: float,
    seed: int,
    runner: Any,
    policy: str = "gumbel",
) -> Path:
    """Score the pool with the influence model and keep `keep` of it: score = -predicted
    influence, so policy 'gumbel' is argtopk(-pred / tau + G), and 'gumbel_official' (the
    official code's) argtopk(-pred / tau - G), i.e. the k smallest of pred / tau + G."""
    from assay.selection.score import score_corpus
    from assay.selection.select import select

    score_corpus(scorer, pool, stage_dir / "scores", runner=runner)
    select(
        pool,
        stage_dir / "scores",
        stage_dir / "selected",
        runner=runner,
        column=scorer.column,
        policy=policy,
        keep=keep,
        tau=tau,
        by="docs",
        seed=seed,
        group_by=None,
    )
    return stage_dir / "selected"


def placed_embedder(embedder: Any, device: str | None) -> dict[str, Any]:
    """`Embedder` settings (a model name, None or a dict) on `device`: an explicit device is
    added unless the settings name one; "auto" leaves the embedder's own choice (a GPU when
    there is one)."""
    from assay.common.lm import check_device
    from assay.selection.base import embedder_settings

    config = embedder_settings(embedder)
    name = check_device(device)
    if name != "auto" and config.get("device") is None:
        config["device"] = name
    return config


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
    settings: MatesSettings,
    *,
    probes: int,
    seed: int,
    runner: Any,
    progress: bool,
    trajectory_length: int = 1,
) -> tuple[list[str], list[str], np.ndarray, dict[str, Any]]:
    """Probe `probes` documents of the pool (or read the probes of an interrupted stage back) on
    the settings' `device` in their `dtype`; with `trajectory_length` > 1, consecutive
    documents of the sample form the rollouts."""
    import polars as pl

    path = stage_dir / "oracle.parquet"
    if path.exists():
        frame = read_parquet(path)
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
        prev_run_dir,
        seqs,
        ref,
        runner=runner,
        ref_batch_size=settings.ref_batch_size,
        trajectory_length=T,
        progress=progress,
        device=settings.device,
        dtype=settings.dtype,
    )
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


def fit_stage_scorer(
    pool: Any,
    stage_dir: Path,
    prev_run_dir: Path,
    ref: ReferenceSet,
    tok: Any,
    cfg: Any,
    settings: MatesSettings,
    *,
    seed: int,
    runner: Any,
    progress: bool,
) -> tuple[MatesScorer | MatesFinetunedScorer, dict[str, Any]]:
    """MATES' influence model of a stage, fitted on the settings' oracle probes (or read back);
    the probes run on their `device` in their `dtype`, and so does the embedder unless its own
    settings name a device (the fine-tuned model, `influence_model: finetune`, always)."""
    from assay.selection.base import load_scorer

    ids, texts, influence, info = _oracle(
        pool, stage_dir, prev_run_dir, ref, tok, cfg, settings,
        probes=settings.probes, seed=seed, runner=runner, progress=progress,
    )  # fmt: skip
    folder = stage_dir / "scorer"
    if (folder / "scorer.json").exists():
        scorer = load_scorer(folder)
        assert isinstance(scorer, (MatesScorer, MatesFinetunedScorer))
        return scorer, info
    scorer: MatesScorer | MatesFinetunedScorer
    if settings.influence_model == "finetune":
        scorer = MatesFinetunedScorer(
            **settings.finetune.model_dump(), device=settings.device, dtype=settings.dtype
        )
    else:
        scorer = MatesScorer(
            embedder=placed_embedder(settings.embedder, settings.device),
            heads=settings.heads,
            alphas=settings.alphas,
            holdout=settings.holdout,
        )
    scorer.fit(texts, influence, ids=ids, seed=seed, progress=progress)
    tmp = stage_dir / f".scorer.tmp-{host_name()}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    scorer.save(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    publish(folder)
    return load_scorer(folder), info  # type: ignore[return-value]


def group_stage(
    pool: Any,
    stage_dir: Path,
    prev_run_dir: Path,
    ref: ReferenceSet,
    tok: Any,
    cfg: Any,
    settings: MatesSettings,
    *,
    seed: int,
    runner: Any,
    progress: bool,
) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """Random and bootstrap rollouts -> relational model -> individual scores and embeddings (one pass over the
    pool) -> greedy selection; probes and embeddings on the settings' `device` (see
    `fit_stage_scorer`)."""
    from assay.io.scores import SCORES_META
    from assay.selection.base import load_scorer
    from assay.selection.select import select

    T = settings.trajectory_length
    ids, texts, influence, info = _oracle(
        pool, stage_dir, prev_run_dir, ref, tok, cfg, settings,
        probes=(settings.probes // T) * T, seed=seed, runner=runner, progress=progress,
        trajectory_length=T,
    )  # fmt: skip
    emb_config = placed_embedder(settings.embedder, settings.device)
    model = relational_model(
        lambda n: _probe_sample(pool, n, seed), stage_dir, prev_run_dir, ref, tok, cfg,
        settings, (ids, texts, influence), emb_config, seed=seed, runner=runner, progress=progress,
    )  # fmt: skip
    scorer_dir = stage_dir / "scorer"
    if not (scorer_dir / "scorer.json").exists():
        model.as_scorer(emb_config).save(scorer_dir)
    scorer = load_scorer(scorer_dir)
    assert isinstance(scorer, MatesScorer)
    group_dir = stage_dir / "group_scores"
    if not (group_dir / SCORES_META).exists():
        _score_and_embed(pool, stage_dir, scorer, runner)
        _group_scores(
            pool, stage_dir, scorer.column, model, settings.keep, settings.docs_per_cluster, seed
        )
    select(
        pool,
        group_dir,
        stage_dir / "selected",
        runner=runner,
        column="group_mates",
        policy="threshold",
        threshold=0.5,
        group_by=None,
    )
    return stage_dir / "selected", info, model.report


def _score_and_embed(pool: Any, stage_dir: Path, scorer: MatesScorer, runner: Any) -> None:
    """The pool's individual scores (`stage_dir/scores`, a scores folder) and embeddings
    (`stage_dir/embeddings`), from one embedding of each document, through the runner."""
    from assay.io.scores import SCORES_META, score_file
    from assay.selection.score import scorer_identity
    from assay.util.files import remove_stale_temps
    from assay.util.guard import mark_output

    scores, vec_dir = stage_dir / "scores", stage_dir / VECTORS_DIR
    mark_output(scores, "scores")
    vec_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(vec_dir)
    for shard in pool.shards:  # a score file whose embeddings are gone is scored again
        if not (vec_dir / f"{shard.stem}{VECTORS_SUFFIX}").exists():
            score_file(scores, shard).unlink(missing_ok=True)
    meta: dict[str, Any] = {
        "columns": scorer.columns,
        "scorer": {"type": scorer.kind, "config": scorer.get_config(), "path": scorer.path},
    }
    if (where := pool.record()) is not None:  # what `assay inspect` reads texts from
        meta["corpus"] = where
    write_json(scores / SCORES_META, meta)
    task = EmbedScoreTask(scorer, str(vec_dir), pool.options, scorer_identity(scorer))
    runner.run(task, pool.shards, scores, label="group-mates:score")


#: the pool's embeddings while a Group-MATES stage selects: float32 rows, one file per shard
VECTORS_DIR = "embeddings"
VECTORS_SUFFIX = ".f32"


@dataclass
class EmbedScoreTask:
    """Per shard of a Group-MATES pool: embed each batch once, write the individual scores (the
    side-car: id and the scorer's column) and append the embeddings to `<stem>.f32` in
    `vec_dir` (raw little-endian float32 rows, in the shard's order)."""

    scorer: MatesScorer
    vec_dir: str
    options: Any
    identity: dict[str, Any]

    def output_name(self, shard: Any) -> str:
        return f"{shard.stem}.parquet"

    def source(self, shard: Any) -> dict[str, Any]:
        return self.identity

    def __call__(self, shard: Any, out: Path | None) -> Any:
        import polars as pl

        from assay.exec.runner import report_progress
        from assay.io.shards import ShardStats
        from assay.io.write import ShardWriter

        assert out is not None
        stats = ShardStats(shard.name)
        column = self.scorer.column
        writer = ShardWriter(out, fmt="parquet")
        embedder = self.scorer.embedding_model()
        final = Path(self.vec_dir) / f"{shard.stem}{VECTORS_SUFFIX}"
        with atomic_path(final) as tmp, open(tmp, "wb") as f:
            for batch in shard.read(self.options, stats):
                texts = batch.get_column("text").to_list()
                vecs = np.ascontiguousarray(embedder.embed(texts), dtype="<f4")
                score = -self.scorer.predict(texts, embeddings=vecs)  # = scorer.score(texts)
                f.write(vecs.tobytes())
                writer.write(
                    pl.DataFrame({"id": batch.get_column("id"), column: score.astype(np.float32)})
                )
                stats.docs_out += batch.height
                report_progress(batch.height)
        writer.close(schema_if_empty={"id": pl.String, column: pl.Float32})
        return stats


def _group_scores(
    pool: Any,
    stage_dir: Path,
    column: str,
    model: RelationalInfluenceModel,
    keep: float,
    docs_per_cluster: int,
    seed: int,
) -> Path:
    """The greedy selection as a score side-car (`group_mates`: 1 kept, 0 not) in
    `stage_dir/group_scores`, from the individual scores in `stage_dir/scores` and the
    embeddings in `stage_dir/embeddings` (removed once it is written).

    Holds the pool's embeddings and one score per document (k-means needs them all), never
    its texts or ids: a shard's ids are read back when its side-car is written."""
    import polars as pl

    from assay.io.scores import SCORES_META, score_file

    group_dir = stage_dir / "group_scores"
    scores, vec_dir = stage_dir / "scores", stage_dir / VECTORS_DIR
    u, vecs, ends = _read_scored_pool(pool, scores, vec_dir, column)
    mask = group_select(
        u,
        vecs,
        keep,
        alpha=model.alpha,
        tau=model.tau,
        docs_per_cluster=docs_per_cluster,
        seed=seed,
    )
    del vecs
    for shard, a, b in zip(pool.shards, [0, *ends][:-1], ends, strict=True):
        ids = read_parquet(score_file(scores, shard), columns=["id"]).get_column("id")
        part = pl.DataFrame({"id": ids, "group_mates": mask[a:b].astype(np.float32)})
        with atomic_path(score_file(group_dir, shard)) as tmp:
            part.write_parquet(tmp)
    meta: dict[str, Any] = {
        "columns": ["group_mates"],
        "scorer": {"type": "group-mates", "config": {}},
    }
    if (where := pool.record()) is not None:
        meta["corpus"] = where
    write_json(group_dir / SCORES_META, meta)
    shutil.rmtree(vec_dir, ignore_errors=True)
    return group_dir


def _read_scored_pool(
    pool: Any, scores: Path, vec_dir: Path, column: str
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(u = -score per document, embeddings (documents x dim) read into one array, the end
    row of each shard), in the pool's shard order."""

    from assay.errors import StateError
    from assay.io.scores import score_file

    parts = [
        read_parquet(score_file(scores, s), columns=[column]).get_column(column).to_numpy()
        for s in pool.shards
    ]
    ends = np.cumsum([len(p) for p in parts]).tolist()
    sizes = [(vec_dir / f"{s.stem}{VECTORS_SUFFIX}").stat().st_size for s in pool.shards]
    dim = next((size // (4 * len(p)) for size, p in zip(sizes, parts, strict=True) if len(p)), 0)
    vecs = np.empty((ends[-1] if ends else 0, dim), dtype="<f4")
    for s, p, size, b in zip(pool.shards, parts, sizes, ends, strict=True):
        if size != 4 * dim * len(p):
            raise StateError(
                f"{vec_dir} does not hold {len(p)} embeddings of {s.name}; delete "
                f"{score_file(scores, s)} to score that shard again"
            )
        with open(vec_dir / f"{s.stem}{VECTORS_SUFFIX}", "rb") as f:
            view = memoryview(vecs[b - len(p) : b]).cast("B")
            while view.nbytes:
                view = view[f.readinto(view) :]
    u = -np.concatenate(parts).astype(np.float64) if parts else np.zeros(0)
    return u, vecs, ends
