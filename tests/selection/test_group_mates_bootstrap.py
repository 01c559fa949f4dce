"""Group-MATES' bootstrap rollouts: the beam search under a relational model picks what the model
prefers (and diverse documents over copies), in bounded blocks; the relational model is refitted
on random + bootstrap rollouts; the same seed gives the same rollouts; the settings keep plain
MATES steps' hashes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from assay.io.corpus import Corpus
from assay.selection import group_mates
from assay.selection.group_mates import RelationalInfluenceModel, beam_rollouts
from assay.workflows.mates import run_mates
from assay.workflows.mates_settings import MatesSettings, mates_train_config

SEQ = 64


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_beam_picks_the_documents_the_model_prefers(static_model: Path, demo_records) -> None:
    from assay.common.embed import Embedder

    texts = [r["text"] for r in demo_records[::7][:48]]  # of every domain
    emb = Embedder(model=str(static_model), cache=False).embed(texts)
    rng = np.random.default_rng(0)
    u = rng.uniform(-0.2, 0.2, size=len(texts))
    good, bad = np.arange(0, 6), np.arange(30, 36)
    u[good], u[bad] = -5.0, 5.0
    low, low_total = beam_rollouts(u, emb, 6, 8, alpha=1.0, tau=2.0, beams=3, order=1)
    high, high_total = beam_rollouts(u, emb, 6, 8, alpha=1.0, tau=2.0, beams=3, order=-1)
    assert low.shape == high.shape == (8, 6)
    assert all(len(set(p)) == 6 for p in np.concatenate([low, high]))  # no document twice
    assert set(low[0]) == set(good) and set(high[0]) == set(bad)
    assert np.all(np.diff(low_total) >= 0) and np.all(np.diff(high_total) <= 0)  # best first
    # the totals are the relational model's prediction of each trajectory
    pred = [u[p[0]] + sum(
        u[p[t]] * np.mean(1 - emb[p[:t]] @ emb[p[t]] / 2.0) for t in range(1, 6)
    ) for p in low]  # fmt: skip
    np.testing.assert_allclose(low_total, pred, rtol=1e-5)


def test_beam_takes_distinct_documents_over_copies_and_works_in_blocks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Three copies of one great document (u = -2) against distinct good ones (u = -1.2): at
    tau = 1 a copy adds nothing after the first, so the best pair is one copy and one
    distinct document, though the two copies have the lowest u."""
    dup = np.tile(np.eye(8)[0], (3, 1))
    div = np.eye(8)[1:6]
    emb = np.concatenate([dup, div]).astype(np.float32)
    u = np.array([-2.0] * 3 + [-1.2] * 5)
    paths, totals = beam_rollouts(u, emb, 2, 4, alpha=1.0, tau=1.0, beams=8)
    assert paths[0][0] in (0, 1, 2) and paths[0][1] >= 3
    assert totals[0] == pytest.approx(-3.2)
    rng = np.random.default_rng(1)
    e = _unit(rng.normal(size=(300, 16)))
    u = rng.normal(size=300)
    whole = beam_rollouts(u, e, 10, 40, alpha=0.8, tau=1.3, beams=5)
    monkeypatch.setattr(group_mates, "BEAM_BLOCK", 1000)  # 3 trajectories a block
    blocked = beam_rollouts(u, e, 10, 40, alpha=0.8, tau=1.3, beams=5)
    assert np.array_equal(whole[0], blocked[0])
    np.testing.assert_allclose(whole[1], blocked[1], rtol=1e-12)


def test_group_settings_defaults_and_hashes() -> None:
    plain = MatesSettings(stage_tokens=1000)
    assert plain.trajectory_length == 10 and plain.bootstrap_rounds == 1  # official
    assert plain.bootstrap_beams == 5
    assert not {"trajectory_length", "bootstrap_rounds"} & set(plain.model_dump())  # same hash
    group = MatesSettings(stage_tokens=1000, group=True, bootstrap_beams=3)
    dumped = group.model_dump(mode="json")
    assert dumped["trajectory_length"] == 10 and dumped["bootstrap_rounds"] == 1
    assert MatesSettings.model_validate(dumped) == group
    assert "bootstrap_rounds" not in group.model_dump(include={"group", "seed"})


def _group_run(out: Path, demo_dir: Path, tok, static_model: Path, **kw):
    return run_mates(
        Corpus(demo_dir / "train"), out, targets="assay_champ", max_targets=16,
        stage_tokens=16 * 8 * SEQ, stages=2, keep=0.3, probes=16, tokenizer=tok,
        heldout=Corpus(demo_dir / "heldout"), eval_docs=5,
        train=mates_train_config(batch_size=8, seq_len=SEQ),
        embedder={"model": str(static_model), "cache": False}, group=True, trajectory_length=2,
        docs_per_cluster=60, **kw,
    )  # fmt: skip


def test_group_mates_bootstraps_and_refits_on_the_union(
    tmp_path: Path,
    demo_dir: Path,
    proxy_tokenizer,
    static_model: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from assay.common.embed import Embedder
    from assay.common.targets import load_target_pairs, target_split
    from assay.workflows.group_mates_rollouts import relational_model
    from assay.workflows.mates_probing import ReferenceSet
    from assay.workflows.mates_selection import placed_embedder

    fits: list[tuple[np.ndarray, np.ndarray]] = []
    fit = RelationalInfluenceModel.fit
    monkeypatch.setattr(
        RelationalInfluenceModel, "fit", lambda self, e, y, **k: fits.append((e, y)) or fit(self, e, y, **k)
    )  # fmt: skip
    res = _group_run(tmp_path / "g", demo_dir, proxy_tokenizer, static_model, bootstrap_rollouts=6)
    s1, stage = res.stages[1], tmp_path / "g" / "stage-1"
    # 8 random rollouts of 2 (16 probes), then 6 bootstrap ones: 3 lowest, 3 highest predicted
    assert [len(e) for e, _ in fits] == [8, 8 + 6] and all(e.shape[1] == 2 for e, _ in fits)
    oracle = pl.read_parquet(stage / "oracle.parquet")
    boot = pl.read_parquet(stage / "bootstrap-1.parquet")
    assert boot.get_column("position").to_list() == [0, 1] * 6
    assert boot.get_column("order").to_list() == ["lowest"] * 6 + ["highest"] * 6
    # the union: the random rollouts' increments, then the bootstrap ones
    y_union = fits[1][1]
    np.testing.assert_array_equal(y_union[:8].ravel(), oracle.get_column("influence").to_numpy())
    np.testing.assert_array_equal(y_union[8:].ravel(), boot.get_column("influence").to_numpy())
    # the bootstrap rollouts are the beam search's under the initial model (the candidates:
    # the random rollouts' documents)
    init = RelationalInfluenceModel.load(stage / "relational-0")
    vecs = Embedder(**placed_embedder({"model": str(static_model), "cache": False}, "auto")).embed(
        oracle.get_column("text").to_list()
    )
    u = init.individual(vecs)
    kw = {"alpha": init.alpha, "tau": init.tau, "beams": 5}
    low, _ = beam_rollouts(u, vecs, 2, 3, order=1, **kw)
    high, _ = beam_rollouts(u, vecs, 2, 3, order=-1, **kw)
    assert boot.get_column("candidate").to_list() == np.concatenate([low, high]).ravel().tolist()
    # the held-out fit of the final model, with the account of the rollouts, is reported
    rep = s1.influence_model
    assert rep["rollouts"] == {"random": 8, "bootstrap": 6}
    assert np.isfinite(rep["spearman"]) and np.isfinite(rep["initial"]["spearman"])
    (round1,) = rep["bootstrap"]
    assert (round1["lowest"], round1["highest"], round1["probes"]) == (3, 3, 12)
    assert s1.method == "group-mates" and abs(s1.kept_docs - 0.3 * s1.pool_docs) <= 3
    # the same seed gives the same rollouts and model: the stage's relational model again, from
    # the same random rollouts, in another folder
    again = tmp_path / "again"
    again.mkdir()
    # the run's reference set: the benchmark's continuations, scored in their context
    pairs = load_target_pairs("assay_champ", *target_split("assay_champ"), max_items=16, seed=0)
    ref = ReferenceSet.from_pairs(pairs, proxy_tokenizer, SEQ)
    settings = MatesSettings(stage_tokens=1000, group=True, trajectory_length=2, probes=16,
                             bootstrap_rollouts=6, embedder={"model": str(static_model), "cache": False})  # fmt: skip
    model = relational_model(
        None, again, tmp_path / "g" / "stage-0" / "proxy",  # (the candidates: the rollouts')
        ref, proxy_tokenizer, mates_train_config(batch_size=8, seq_len=SEQ), settings,
        (oracle.get_column("id").to_list(), oracle.get_column("text").to_list(),
         oracle.get_column("influence").to_numpy()),
        placed_embedder(settings.embedder, "auto"), seed=1, runner=None, progress=False,
    )  # fmt: skip
    assert pl.read_parquet(again / "bootstrap-1.parquet").equals(boot)
    final = RelationalInfluenceModel.load(stage / "relational")
    assert np.array_equal(model.w, final.w) and model.report["spearman"] == rep["spearman"]
