"""Group-MATES' training data for its relational influence model, per stage: random rollouts,
then bootstrap rollouts, as the official code collects them.

1. random rollouts: the oracle's probe sample cut into trajectories of `trajectory_length`
   documents (`mates_selection._oracle`), each trained from the stage's start state;
2. the initial relational model, fitted on them (`relational-0/`);
3. each of `bootstrap_rounds` rounds: the candidates (the random rollouts' documents, or a
   seeded sample of `bootstrap_candidates` documents of the pool) are scored by the current
   model, a beam search (`beam_rollouts`, `bootstrap_beams` children per trajectory per step)
   finds `bootstrap_rollouts` trajectories, half with the lowest and half with the highest
   predicted total, each is probed as a random rollout is (`bootstrap-<r>.parquet`), and a
   fresh model is fitted on the union of every rollout so far (`relational-<r>/`); the last
   round's, with the account of every round, is `relational/`, the model the stage selects
   with.

Every file is read back when it is there, so an interrupted stage resumes where it stopped.
What is held: the candidates' texts and embeddings and the rollouts' embeddings (numbers of
the order of the probes, never the pool).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from assay.common.numerics import spearman
from assay.errors import InputError
from assay.selection.group_mates import RelationalInfluenceModel, beam_rollouts
from assay.util.files import atomic_path, read_json, read_parquet, write_json
from assay.workflows.mates_probing import ReferenceSet, encode_documents, probe_run
from assay.workflows.mates_settings import MatesSettings

FINAL_MODEL = "relational"


def relational_model(
    sample: Callable[[int], tuple[list[str], list[str]]],
    stage_dir: Path,
    prev_run_dir: Path,
    ref: ReferenceSet,
    tok: Any,
    cfg: Any,
    settings: MatesSettings,
    rollouts: tuple[list[str], list[str], np.ndarray],
    emb_config: dict[str, Any],
    *,
    seed: int,
    runner: Any,
    progress: bool,
) -> RelationalInfluenceModel:
    """The stage's relational model, fitted on the random `rollouts` (ids, texts, per-step
    increments, in trajectories of `settings.trajectory_length`) and `bootstrap_rounds` rounds
    of bootstrap rollouts (see the module); read back when it was fitted before. `sample(n)`
    gives (ids, texts) of n pool documents, the probe sample's (`bootstrap_candidates`)."""
    from assay.common.embed import Embedder

    final = stage_dir / FINAL_MODEL
    if (final / "relational.json").exists():
        return RelationalInfluenceModel.load(final)
    T, rounds = settings.trajectory_length, settings.bootstrap_rounds
    ids, texts, influence = rollouts
    embedder = Embedder(**emb_config)
    vecs = embedder.embed(texts, progress=progress)
    emb = vecs.reshape(-1, T, vecs.shape[1])
    y = np.asarray(influence, dtype=np.float64).reshape(-1, T)
    n_random = len(emb)
    fit = _fitter(settings, seed)
    model = fit(stage_dir / (f"{FINAL_MODEL}-0" if rounds else FINAL_MODEL), emb, y)
    if not rounds:
        return model
    init = {k: model.report[k] for k in ("spearman", "individual", "trajectories")}
    if settings.bootstrap_candidates is None:
        cand = (ids, texts, vecs)
    else:
        cand_ids, cand_texts = sample(settings.bootstrap_candidates)
        cand = (cand_ids, cand_texts, embedder.embed(cand_texts, progress=progress))
    if len(cand[0]) < T:
        raise InputError(
            f"the bootstrap rollouts pick from {len(cand[0])} documents, fewer than a rollout's "
            f"{T}; give more bootstrap_candidates"
        )
    seqs = encode_documents(cand[1], tok, cfg.seq_len)
    probe = {
        "prev_run_dir": prev_run_dir, "ref": ref, "settings": settings, "runner": runner,
        "progress": progress,
    }  # fmt: skip
    history = []
    for r in range(1, rounds + 1):
        paths, y_boot, info = _bootstrap_round(stage_dir, r, model, cand, seqs, n_random, probe)
        e_boot = cand[2][paths]
        info["guide_spearman"] = spearman(model.predict(e_boot).ravel(), y_boot.ravel())
        info["random_total"] = float(y[:n_random].sum(axis=1).mean())
        history.append(info)
        emb, y = np.concatenate([emb, e_boot]), np.concatenate([y, y_boot])
        model = fit(stage_dir / f"{FINAL_MODEL}-{r}", emb, y)
    model.report.update(
        rollouts={"random": n_random, "bootstrap": len(emb) - n_random},
        initial=init,
        bootstrap=history,
    )
    model.save(final)
    return model


def _fitter(settings: MatesSettings, seed: int) -> Any:
    """fit(folder, embeddings, increments): a fresh relational model fitted and saved there,
    or the one saved there before."""

    def fit(folder: Path, emb: np.ndarray, y: np.ndarray) -> RelationalInfluenceModel:
        if (folder / "relational.json").exists():
            return RelationalInfluenceModel.load(folder)
        model = RelationalInfluenceModel().fit(emb, y, holdout=settings.holdout, seed=seed)
        model.save(folder)
        return model

    return fit


def _bootstrap_round(
    stage_dir: Path,
    r: int,
    guide: RelationalInfluenceModel,
    cand: tuple[list[str], list[str], np.ndarray],
    seqs: list[np.ndarray],
    n_random: int,
    probe: dict[str, Any],
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Round `r`'s bootstrap rollouts: (candidate indices (m, T), their oracle increments
    (m, T), an account), found by the beam search under `guide` and probed, or read back."""
    import polars as pl

    settings: MatesSettings = probe["settings"]
    T = settings.trajectory_length
    path = stage_dir / f"bootstrap-{r}.parquet"
    if path.exists():
        frame = read_parquet(path)
        paths = frame.get_column("candidate").to_numpy().reshape(-1, T)
        y = frame.get_column("influence").to_numpy().reshape(-1, T)
        return paths, y, read_json(stage_dir / f"bootstrap-{r}.json")
    n = settings.bootstrap_rollouts or n_random
    u = guide.individual(cand[2])
    kw = {"alpha": guide.alpha, "tau": guide.tau, "beams": settings.bootstrap_beams}
    low, _ = beam_rollouts(u, cand[2], T, (n + 1) // 2, order=1, **kw)
    high, _ = beam_rollouts(u, cand[2], T, n // 2, order=-1, **kw)
    paths = np.concatenate([low, high])
    result = probe_run(
        probe["prev_run_dir"],
        [seqs[i] for i in paths.ravel()],
        probe["ref"],
        runner=probe["runner"],
        ref_batch_size=settings.ref_batch_size,
        trajectory_length=T,
        progress=probe["progress"],
        device=settings.device,
        dtype=settings.dtype,
    )
    y = result.influence.reshape(-1, T)
    totals = y.sum(axis=1)
    info = {
        "round": r,
        "candidates": len(cand[0]),
        "beams": settings.bootstrap_beams,
        "lowest": len(low),
        "highest": len(high),
        "oracle_total_lowest": float(totals[: len(low)].mean()),
        "oracle_total_highest": float(totals[len(low) :].mean()) if len(high) else None,
        **{k: v for k, v in result.summary().items() if k in ("probes", "seconds")},
    }
    frame = pl.DataFrame(
        {
            "id": [cand[0][i] for i in paths.ravel()],
            "trajectory": np.repeat(np.arange(len(paths)), T),
            "position": np.tile(np.arange(T), len(paths)),
            "candidate": paths.ravel(),
            "order": np.repeat(["lowest"] * len(low) + ["highest"] * len(high), T),
            "influence": result.influence,
            "loss_after": result.loss_after,
        }
    )
    write_json(stage_dir / f"bootstrap-{r}.json", info)
    with atomic_path(path) as tmp:
        frame.write_parquet(tmp)
    return paths, y, info
