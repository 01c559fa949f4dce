"""MATES: staged training continues optimizer and schedule, probing restores exactly and equals
reloading, influence has the right sign, Gumbel top-k samples the right distribution (and the
official variant does not), the influence model is chosen by Spearman and reloads exactly, the
staged loop runs, resumes, refuses bad input and is
deterministic; Group-MATES rollouts, relational model and greedy selection."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from assay.common.targets import load_targets
from assay.errors import ConfigError, StateError
from assay.io.corpus import Corpus
from assay.proxies.train import TrainConfig, lr_at, train_proxy
from assay.selection.base import load_scorer
from assay.selection.mates import MatesScorer, spearman
from assay.selection.select import gumbel_topk
from assay.workflows.mates import run_mates
from assay.workflows.mates_probing import Prober, ReferenceSet, encode_documents, reference_loss
from assay.workflows.mates_settings import mates_train_config

SEQ = 64
CFG = TrainConfig(batch_size=8, seq_len=SEQ)


@pytest.fixture(scope="module")
def reference_texts() -> list[str]:
    return load_targets("assay_champ", max_items=16, seed=0)


@pytest.fixture(scope="module")
def staged_runs(tmp_path_factory: pytest.TempPathFactory, token_cache, proxy_tokenizer):
    """Two stages of 12 steps each under one 24-step schedule, optimizer state kept."""
    root = tmp_path_factory.mktemp("staged")
    kw = {"tokenizer": proxy_tokenizer, "progress": False, "config": CFG, "keep_optimizer": True}
    a = train_proxy(token_cache, "natural", 12 * 8 * SEQ, "tiny", 0, out_dir=root / "a",
                    schedule_total=24, **kw)  # fmt: skip
    b = train_proxy(token_cache, "natural", 12 * 8 * SEQ, "tiny", 1, out_dir=root / "b",
                    init_from=root / "a", schedule_offset=12, schedule_total=24, **kw)  # fmt: skip
    return a, b


# -- training in stages (assay.proxies.train additions) ------------------------------------------


def test_staged_training_continues_state_and_schedule(
    staged_runs, tmp_path: Path, token_cache, proxy_tokenizer
) -> None:
    a, b = staged_runs
    # one schedule over both stages: stage b's first step takes the lr of global step 12
    assert [p["lr"] for p in a.curve] == pytest.approx(
        [CFG.lr * lr_at(i, 24, CFG) for i in range(12)]
    )
    assert b.curve[0]["lr"] == pytest.approx(CFG.lr * lr_at(12, 24, CFG))
    opt = torch.load(Path(b.out_dir) / "state" / "optimizer.pt", weights_only=True)
    assert float(opt["state"][0]["step"]) == 24.0  # AdamW step counts carried over
    # continuing from a folder without optimizer state is refused
    plain = train_proxy(token_cache, "natural", 2 * 8 * SEQ, "tiny", 0, out_dir=tmp_path / "p",
                        tokenizer=proxy_tokenizer, progress=False, config=CFG)  # fmt: skip
    with pytest.raises(StateError, match="keep_optimizer=True"):
        train_proxy(token_cache, "natural", 2 * 8 * SEQ, "tiny", 0, out_dir=tmp_path / "q",
                    tokenizer=proxy_tokenizer, progress=False, config=CFG, init_from=plain.out_dir)  # fmt: skip
    with pytest.raises(ValueError, match="schedule must cover"):
        train_proxy(token_cache, "natural", 2 * 8 * SEQ, "tiny", 0, out_dir=tmp_path / "r",
                    tokenizer=proxy_tokenizer, progress=False, config=CFG, schedule_offset=1,
                    schedule_total=2)  # fmt: skip


# -- oracle probing -----------------------------------------------------------------------------


def _state(prober: Prober) -> list[torch.Tensor]:
    tensors = [p.detach().clone() for p in prober._params]
    for p in prober._params:
        tensors += [v.clone() for _, v in sorted(prober.optimizer.state[p].items())]
    return tensors


def test_probe_restores_exactly_and_equals_reloading(
    staged_runs, proxy_tokenizer, real_texts, reference_texts
) -> None:
    _, b = staged_runs
    ref = ReferenceSet.from_texts(reference_texts, proxy_tokenizer, SEQ)
    seqs = encode_documents(real_texts[:3], proxy_tokenizer, SEQ)
    prober = Prober.from_run(b.out_dir, ref)
    before = _state(prober)
    result = prober.probe(seqs)
    after = _state(prober)
    assert len(before) == len(after) and all(
        torch.equal(x, y) for x, y in zip(before, after, strict=True)
    )
    assert all(p.grad is None for p in prober._params)
    assert result.probes_per_second > 0 and result.reference_examples == 16
    # the state equals a fresh load from disk, bit for bit
    fresh = _state(Prober.from_run(b.out_dir, ref))
    assert all(torch.equal(x, y) for x, y in zip(fresh, after, strict=True))
    # naive oracle: reload the checkpoint for every probe, step once, measure
    for i in range(2):
        naive = Prober.from_run(b.out_dir, ref)
        base = reference_loss(naive.model, naive._ref_batches)
        naive.step(seqs[i])
        loss = reference_loss(naive.model, naive._ref_batches)
        assert loss == result.loss_after[i] and loss - base == result.influence[i]
    # the step changed something and used the lr of the schedule's next step
    assert np.all(result.influence != 0)
    assert prober.lr == pytest.approx(CFG.lr * lr_at(23, 24, CFG))


def test_influence_sign_on_real_text(
    staged_runs, proxy_tokenizer, demo_records, reference_texts
) -> None:
    """A step on a reference example itself lowers the reference loss; more than code does."""
    _, b = staged_runs
    ref = ReferenceSet.from_texts(reference_texts, proxy_tokenizer, SEQ)
    prober = Prober.from_run(b.out_dir, ref)
    own = prober.probe(encode_documents(reference_texts[:4], proxy_tokenizer, SEQ)).influence
    code = [r["text"] for r in demo_records if r["domain"] == "code"][:4]
    other = prober.probe(encode_documents(code, proxy_tokenizer, SEQ)).influence
    assert np.all(own < 0), own
    assert own.mean() < other.mean(), (own, other)


def test_probes_run_on_the_device_and_in_the_dtype_given(
    staged_runs, proxy_tokenizer, real_texts, reference_texts
) -> None:
    _, b = staged_runs
    ref = ReferenceSet.from_texts(reference_texts, proxy_tokenizer, SEQ)
    seqs = encode_documents(real_texts[:3], proxy_tokenizer, SEQ)
    full = Prober.from_run(b.out_dir, ref, device="cpu")
    half = Prober.from_run(b.out_dir, ref, device="cpu", dtype="bfloat16")
    assert full.precision == "float32" and half.precision == "bfloat16"
    assert {p.dtype for p in half._params} == {torch.float32}  # weights stay float32
    a, h = full.probe(seqs), half.probe(seqs)
    assert h.base_loss == a.base_loss  # the reference loss is measured in float32
    # the step ran under bfloat16 autocast: a slightly different, close result
    assert not np.array_equal(h.loss_after, a.loss_after)
    np.testing.assert_allclose(h.loss_after, a.loss_after, rtol=1e-3)
    with pytest.raises(ConfigError, match="unknown device"):
        Prober.from_run(b.out_dir, ref, device="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="sees 0 CUDA GPU"):
            Prober.from_run(b.out_dir, ref, device="cuda")


def test_the_influence_model_runs_where_the_settings_say() -> None:
    from assay.workflows.mates import MatesSettings
    from assay.workflows.mates_selection import placed_embedder

    assert placed_embedder("static", "cpu") == {"model": "static", "device": "cpu"}
    assert placed_embedder(None, "auto") == {"model": None}  # the embedder's own choice
    assert placed_embedder({"model": None, "device": "cuda"}, "cpu")["device"] == "cuda"
    assert MatesScorer(embedder=placed_embedder(None, "cuda:1")).runs_on == "cuda:1"
    assert MatesScorer().runs_on == "auto" and MatesScorer(embedder="static").runs_on == "cpu"
    settings = MatesSettings(stage_tokens=1000)
    assert (settings.device, settings.dtype) == ("auto", "auto")
    assert "device" not in settings.model_dump()  # steps made before keep their settings hash
    assert MatesSettings(stage_tokens=1000, device="cpu", dtype="bfloat16").dtype == "bfloat16"
    with pytest.raises(ValueError, match="unknown device"):
        MatesSettings(stage_tokens=1000, device="gpu")


# -- Gumbel top-k -------------------------------------------------------------------------------


def test_gumbel_topk_samples_softmax_and_the_official_variant_does_not() -> None:
    pred = np.array([0.0, 0.5, 1.0])  # predicted influence: lower is better
    tau, n = 0.5, 20_000
    expected = np.exp(-pred / tau) / np.exp(-pred / tau).sum()
    ours = np.bincount([gumbel_topk(-pred, 1, tau=tau, seed=s)[0] for s in range(n)], minlength=3)
    assert ours / n == pytest.approx(expected, abs=0.012)
    # the official select_data.py: m = pred / tau + Gumbel, keep the k smallest
    official = np.bincount(
        [
            np.argpartition(pred / tau + np.random.default_rng(s).gumbel(size=3), 1)[:1][0]
            for s in range(n)
        ],
        minlength=3,
    )
    # about (0.702, 0.245, 0.053): the worst item is drawn 40% less often than it should be
    assert official[2] / n < expected[2] - 0.025 and official[0] / n > expected[0] + 0.02
    # k = 2: inclusion of each pair as in sampling without replacement (Plackett-Luce)
    p = expected
    pairs = {(0, 1), (0, 2), (1, 2)}
    exact = {(i, j): p[i] * p[j] / (1 - p[i]) + p[j] * p[i] / (1 - p[j]) for i, j in pairs}
    got = [tuple(sorted(gumbel_topk(-pred, 2, tau=tau, seed=s))) for s in range(n)]
    for pair in pairs:
        assert got.count(pair) / n == pytest.approx(exact[pair], abs=0.012)
    # deterministic, seed- and id-keyed
    h = np.array([11, 22, 33], dtype=np.uint64)
    assert list(gumbel_topk(-pred, 2, seed=3, id_hashes=h)) == list(
        gumbel_topk(-pred, 2, seed=3, id_hashes=h)
    )
    with pytest.raises(ValueError, match="tau must be positive"):
        gumbel_topk(pred, 1, tau=0)
    with pytest.raises(ValueError, match="k must be between"):
        gumbel_topk(pred, 4)


# -- influence model ----------------------------------------------------------------------------


def test_head_is_chosen_by_heldout_spearman() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 16)).astype(np.float32)
    y = 3.0 * x[:, 0] - x[:, 1] + 0.3 * rng.normal(size=120) + 5.0
    texts = [f"doc {i}" for i in range(120)]
    scorer = MatesScorer(embedder={"model": None}, alphas=(0.1, 1000.0), epochs=100)
    scorer.fit(texts, y, embeddings=x, seed=0)
    rep = scorer.report
    assert rep["holdout"] == 24 and rep["train"] == 96
    assert rep["target_mean"] == pytest.approx(y.mean()) and rep["target_std"] == pytest.approx(
        y.std()
    )
    rhos = [c["spearman"] for c in rep["candidates"]]
    assert [c.get("alpha", c["head"]) for c in rep["candidates"]] == [0.1, 1000.0, "mlp"]
    assert rep["spearman"] == max(rhos) > 0.9
    assert rep["candidates"][1]["spearman"] < rep["spearman"]  # over-regularised ridge loses
    assert scorer.head == {k: v for k, v in rep["candidates"][int(np.argmax(rhos))].items() if k in ("head", "alpha")}  # fmt: skip
    # z-scored prediction: score = -prediction, higher = keep
    pred = scorer.predict(texts, embeddings=x)
    assert spearman(pred, y) > 0.9
    table = scorer.probe_table
    assert (table["split"] == "holdout").sum() == 24
    assert np.isnan(table["holdout_prediction"][table["split"] == "train"]).all()
    with pytest.raises(ValueError, match="too few"):
        MatesScorer().fit(texts[:5], y[:5], embeddings=x[:5])
    with pytest.raises(ValueError, match="same oracle influence"):
        MatesScorer().fit(texts, np.ones(120), embeddings=x)
    with pytest.raises(ValueError, match="unknown influence-model head"):
        MatesScorer(heads=("forest",))


def test_scoring_batch_after_batch_loads_the_model_and_opens_the_cache_once(
    tmp_path: Path, static_model: Path, real_texts: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scoring task calls `score` once per batch: the embedder is built once per scorer."""
    import pickle

    import assay.common.embed as embed

    loads: list[str] = []
    opens: list[str] = []

    class CountingEncoder(embed.StaticEncoder):
        def __init__(self, *a, **k) -> None:
            loads.append("model")
            super().__init__(*a, **k)

    class CountingCache(embed.EmbeddingCache):
        def __init__(self, *a, **k) -> None:
            opens.append("cache")
            super().__init__(*a, **k)

    monkeypatch.setattr(embed, "StaticEncoder", CountingEncoder)
    monkeypatch.setattr(embed, "EmbeddingCache", CountingCache)
    texts = real_texts[:24]
    config = {"model": str(static_model), "cache": str(tmp_path / "cache")}
    scorer = MatesScorer(embedder=config, heads=("ridge",))
    scorer.fit(texts, -np.log([len(t) for t in texts]), seed=0)
    batches = [real_texts[24 + 8 * b : 32 + 8 * b] for b in range(12)]
    scores = [scorer.score(batch) for batch in batches]
    assert (len(loads), len(opens)) == (1, 1)  # fit and 12 batches: one model, one cache
    # the embedder is not pickled (a worker builds its own, once) and scores do not change
    copy = pickle.loads(pickle.dumps(scorer))
    assert copy._embedder is None
    assert all(np.array_equal(copy.score(b), s) for b, s in zip(batches, scores, strict=True))
    assert (len(loads), len(opens)) == (2, 2)


def test_scorer_saves_and_reloads_identically(
    tmp_path: Path, static_model: Path, real_texts: list[str], demo_dir: Path
) -> None:
    from assay.exec.runner import LocalRunner
    from assay.selection.score import score_corpus

    texts = real_texts[:60]
    # a target the embeddings can predict: the length of the text
    y = -np.log([len(t) for t in texts])
    scorer = MatesScorer(embedder={"model": str(static_model), "cache": False}, epochs=50)
    scorer.fit(texts, y, seed=1)
    scorer.save(tmp_path / "scorer")
    loaded = load_scorer(tmp_path / "scorer")
    assert isinstance(loaded, MatesScorer) and loaded.head == scorer.head
    probe = real_texts[60:90]
    assert np.array_equal(loaded.score(probe), scorer.score(probe))
    assert np.array_equal(scorer.score(probe), (-scorer.predict(probe)).astype(np.float32))
    assert (tmp_path / "scorer" / "head.safetensors").exists()
    assert pl.read_parquet(tmp_path / "scorer" / "probes.parquet").height == 60
    # through the shared runner, as for every scorer (the saved scorer travels as its path)
    heldout = Corpus(demo_dir / "heldout")
    score_corpus(loaded, heldout, tmp_path / "scores", runner=LocalRunner(2, progress=False))
    frame = pl.concat([pl.read_parquet(f) for f in sorted((tmp_path / "scores").glob("*.parquet"))])
    texts_by_id = {r["id"]: r["text"] for b in heldout.iter_batches() for r in b.to_dicts()}
    direct = scorer.score([texts_by_id[i] for i in frame.get_column("id")])
    assert np.array_equal(frame.get_column("mates").to_numpy(), direct)


# -- the staged loop ----------------------------------------------------------------------------


def _kept_ids(out: Path, stage: int) -> list[str]:
    keep = sorted((out / f"stage-{stage}" / "selected" / "_select" / "keep").glob("*.parquet"))
    return sorted(pl.concat([pl.read_parquet(f) for f in keep]).get_column("id").to_list())


def _mates(out: Path, demo_dir: Path, tok, static_model: Path, **kw):
    args = {
        "targets": "assay_champ",
        "max_targets": 16,
        "stage_tokens": 16 * 8 * SEQ,
        "stages": 2,
        "keep": 0.3,
        "probes": 16,
        "tokenizer": tok,
        "heldout": Corpus(demo_dir / "heldout"),
        "eval_docs": 5,
        "train": mates_train_config(batch_size=8, seq_len=SEQ),
        "embedder": {"model": str(static_model), "cache": False},
        "heads": ("ridge",),
        **kw,
    }
    return run_mates(Corpus(demo_dir / "train"), out, **args)


def test_run_mates_end_to_end_resume_and_determinism(
    tmp_path: Path, demo_dir: Path, proxy_tokenizer, static_model: Path
) -> None:
    out = tmp_path / "m"
    res = _mates(out, demo_dir, proxy_tokenizer, static_model)
    s0, s1 = res.stages
    assert (s0.method, s1.method) == ("random", "mates")
    assert s0.pool_docs + s1.pool_docs == 360  # consume-once pools cover the corpus
    assert s1.kept_docs == round(0.3 * s1.pool_docs)
    assert s1.probing["probes"] == 16 and s1.probing["probes_per_second"] > 0
    assert s1.probing["base_reference_loss"] == pytest.approx(s0.reference_loss)
    assert np.isfinite(s1.influence_model["spearman"])
    assert set(res.heldout_bpb) == {"code", "math", "news", "reference"}
    assert res.stages[-1].run["steps"] == 16
    opt = torch.load(out / "stage-1" / "proxy" / "state" / "optimizer.pt", weights_only=True)
    assert float(opt["state"][0]["step"]) == 32.0  # stage 1 continued stage 0's optimizer
    oracle = pl.read_parquet(out / "stage-1" / "oracle.parquet")
    assert oracle.height == 16 and {"id", "influence", "loss_after"} <= set(oracle.columns)
    assert (out / "mates.json").exists() and (out / "stage-1" / "scorer" / "scorer.json").exists()
    # the influence model is a reusable scorer that scores through the shared runner
    scores = pl.read_parquet(sorted((out / "stage-1" / "scores").glob("*.parquet"))[0])
    assert "mates" in scores.columns

    # resume: a finished stage is not redone; an interrupted one reuses its probes
    stamp = (out / "stage-0" / "stage.json").stat().st_mtime_ns
    oracle_stamp = (out / "stage-1" / "oracle.parquet").stat().st_mtime_ns
    (out / "stage-1" / "stage.json").unlink()
    import shutil

    shutil.rmtree(out / "stage-1" / "proxy")
    again = _mates(out, demo_dir, proxy_tokenizer, static_model)
    assert (out / "stage-0" / "stage.json").stat().st_mtime_ns == stamp
    assert (out / "stage-1" / "oracle.parquet").stat().st_mtime_ns == oracle_stamp
    assert again.stages[1].run["train_loss"] == s1.run["train_loss"]
    assert again.reference_loss == res.reference_loss
    with pytest.raises(ValueError, match="other settings"):
        _mates(out, demo_dir, proxy_tokenizer, static_model, tau=1.0)

    # determinism: same seed, another folder -> same oracle values, same selection
    other = tmp_path / "n"
    _mates(other, demo_dir, proxy_tokenizer, static_model)
    assert pl.read_parquet(other / "stage-1" / "oracle.parquet").equals(oracle)
    for s in (0, 1):
        assert _kept_ids(other, s) == _kept_ids(out, s)


def test_bad_input_is_refused_before_training(
    tmp_path: Path, demo_dir: Path, proxy_tokenizer, static_model: Path
) -> None:
    with pytest.raises(ValueError, match="targets have 3 examples"):
        _mates(tmp_path / "a", demo_dir, proxy_tokenizer, static_model,
               targets=["a b c", "d e f", "g h i"])  # fmt: skip
    with pytest.raises(ValueError, match=r"probe set \(500 documents\) is larger than the stage-1"):
        _mates(tmp_path / "b", demo_dir, proxy_tokenizer, static_model, probes=500)
    with pytest.raises(ValueError, match="stage-0 candidate pool is too small"):
        _mates(tmp_path / "c", demo_dir, proxy_tokenizer, static_model, keep=0.01)
    with pytest.raises(ValueError, match="probe at least"):
        _mates(tmp_path / "d", demo_dir, proxy_tokenizer, static_model, probes=11)
    with pytest.raises(ValueError, match="reference set has"):
        ReferenceSet.from_texts(["x"] * 4, proxy_tokenizer, SEQ)
    for run in ("a", "b", "c", "d"):  # nothing was trained
        assert not list((tmp_path / run).glob("stage-*/proxy/run.json"))
    with pytest.raises(StateError, match="keep_optimizer=True"):
        Prober.from_run(tmp_path, ReferenceSet([np.arange(5)] * 8))


# -- Group-MATES --------------------------------------------------------------------------------


def test_rollouts_record_increments_from_the_same_start(
    staged_runs, proxy_tokenizer, real_texts, reference_texts
) -> None:
    _, b = staged_runs
    ref = ReferenceSet.from_texts(reference_texts, proxy_tokenizer, SEQ)
    seqs = encode_documents(real_texts[:4], proxy_tokenizer, SEQ)
    prober = Prober.from_run(b.out_dir, ref)
    single = prober.probe(seqs)
    roll = prober.probe(seqs, trajectory_length=2)
    base = single.base_loss
    # each trajectory starts from the checkpoint: its first step is the single probe
    assert roll.loss_after[0] == single.loss_after[0] and roll.loss_after[2] == single.loss_after[2]
    assert roll.influence[1] == roll.loss_after[1] - roll.loss_after[0]
    assert roll.influence[2] == roll.loss_after[2] - base
    with pytest.raises(ValueError, match="whole trajectories"):
        prober.probe(seqs[:3], trajectory_length=2)


def test_relational_model_and_greedy_selection_use_learned_alpha_tau() -> None:
    from assay.selection.group_mates import RelationalInfluenceModel, group_select

    rng = np.random.default_rng(0)
    m, T, d = 200, 4, 8
    e = rng.normal(size=(m, T, d))
    e /= np.linalg.norm(e, axis=2, keepdims=True)
    w = rng.normal(size=d)
    u = e @ w
    cos = np.einsum("mtd,msd->mts", e, e)
    y = u.copy()
    for t in range(1, T):
        y[:, t] = u[:, t] * 1.5 * np.mean(1 - cos[:, t, :t] / 0.7, axis=1)
    model = RelationalInfluenceModel(epochs=300).fit(e.astype(np.float32), y, seed=0)
    rep = model.report
    assert rep["spearman"] > 0.9 and rep["spearman"] > rep["individual"]
    assert model.tau != 1.0 and model.alpha != 1.0  # learned, not the official hard-coded 1
    # greedy: a document that duplicates one already taken is worth alpha * (1 - 1 / tau) of its u
    dup = np.tile(np.eye(6)[0], (3, 1))  # three copies of one great document (u = -2)
    div = np.eye(6)[1:4]  # three distinct good documents (u = -1.2)
    emb = np.concatenate([dup, div]).astype(np.float32)
    infl = np.array([-2.0, -2.0, -2.0, -1.2, -1.2, -1.2])
    pick = group_select(infl, emb, 2 / 6, alpha=1.0, tau=1.0, docs_per_cluster=100)
    assert pick[:3].sum() == 1 and pick[3:].sum() == 1  # a copy adds nothing at tau = 1
    pick = group_select(infl, emb, 2 / 6, alpha=1.0, tau=4.0, docs_per_cluster=100)
    assert pick[:3].sum() == 2  # at tau = 4 a copy keeps 3/4 of its (larger) benefit


def test_group_selection_assigns_clusters_in_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """No documents x clusters distance matrix: 20,000 documents in 100 clusters would need
    8 MB for one; the selection is the same when it is computed in blocks."""
    import tracemalloc

    import assay.common.numerics as numerics
    from assay.selection.group_mates import group_select

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(100, 16))
    e = centres[rng.integers(0, 100, size=20_000)] + 0.05 * rng.normal(size=(20_000, 16))
    e = (e / np.linalg.norm(e, axis=1, keepdims=True)).astype(np.float32)
    u = rng.normal(size=20_000)
    whole = group_select(u, e, 0.3, alpha=1.0, tau=1.0, docs_per_cluster=200)  # one block
    monkeypatch.setattr(numerics, "NEAREST_BLOCK", 1 << 16)  # 655 documents a block
    tracemalloc.start()
    blocked = group_select(u, e, 0.3, alpha=1.0, tau=1.0, docs_per_cluster=200)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 20_000 * 100 * 4
    assert abs(int(blocked.sum()) - 6000) <= 50  # round(0.3 * size) per cluster
    assert np.mean(blocked != whole) < 0.01  # (float rounding may move a tie, nothing else)


def test_run_group_mates(
    tmp_path: Path,
    demo_dir: Path,
    proxy_tokenizer,
    static_model: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from assay.common.embed import StaticEncoder

    encoded: list[int] = []
    encode = StaticEncoder.encode
    monkeypatch.setattr(
        StaticEncoder, "encode", lambda self, t, b=0: encoded.append(len(t)) or encode(self, t, b)
    )
    res = _mates(tmp_path / "g", demo_dir, proxy_tokenizer, static_model, group=True,
                 trajectory_length=2, docs_per_cluster=60)  # fmt: skip
    s1 = res.stages[1]
    # each pool document is embedded once (scores and clusters share it), the probes once more
    pool = Corpus(tmp_path / "g" / "pools" / "stage-1")
    distinct = sum(b.get_column("text").n_unique() for b in pool.iter_batches())  # per call
    assert s1.pool_docs - 3 <= distinct <= s1.pool_docs
    assert sum(encoded) == distinct + 16
    assert not (tmp_path / "g" / "stage-1" / "embeddings").exists()  # removed after selection
    assert s1.method == "group-mates"
    assert s1.probing["trajectory_length"] == 2 and s1.probing["probes"] == 16
    assert {"alpha", "tau", "spearman", "individual"} <= set(s1.influence_model)
    assert abs(s1.kept_docs - 0.3 * s1.pool_docs) <= 3  # rounded per cluster
    oracle = pl.read_parquet(tmp_path / "g" / "stage-1" / "oracle.parquet")
    assert oracle.get_column("position").to_list() == [0, 1] * 8
    # the stage's score folders record the pool they scored (`assay inspect` opens them alone)
    for folder in ("scores", "group_scores"):
        meta = json.loads((tmp_path / "g" / "stage-1" / folder / "_scores.json").read_text())
        assert meta["corpus"]["paths"] == [str(tmp_path / "g" / "pools" / "stage-1")]
