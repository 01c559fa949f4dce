"""BiMix: the law is recovered from noisy points, the closed-form optimum is the optimum, and
bad fit data is refused."""

from __future__ import annotations

import numpy as np
import pytest

from assay.mixing.bimix import BiMix, DomainLaw, evaluate_fit

TRUE = {
    "code": DomainLaw(1.0, 0.08, 6.0, 0.45, 1.6),
    "news": DomainLaw(1.0, 0.15, 9.0, 0.35, 2.4),
    "math": DomainLaw(1.0, 0.25, 8.0, 0.40, 2.0),
}


def _points(
    mixtures: list[dict[str, float]], steps: np.ndarray, noise: float = 0.003, seed: int = 0
):
    rng = np.random.default_rng(seed)
    rows = {"domain": [], "r": [], "s": [], "loss": []}
    for mix in mixtures:
        for d, law in TRUE.items():
            for s in steps:
                rows["domain"].append(d)
                rows["r"].append(mix[d])
                rows["s"].append(float(s))
                rows["loss"].append(float(law.predict(mix[d], s)) * np.exp(rng.normal(0, noise)))
    return rows


MIXES = [
    {"code": 0.6, "news": 0.2, "math": 0.2},
    {"code": 0.2, "news": 0.6, "math": 0.2},
    {"code": 0.2, "news": 0.2, "math": 0.6},
    {"code": 1 / 3, "news": 1 / 3, "math": 1 / 3},
]
STEPS = np.array([50, 100, 200, 400, 800, 1600])


def test_fit_recovers_the_law_and_extrapolates() -> None:
    law = BiMix().fit(_points(MIXES, STEPS[:-1]))  # fit without the last step
    for d, true in TRUE.items():
        for mix in MIXES:
            pred = law.laws[d].predict(mix[d], STEPS[-1])
            assert pred == pytest.approx(float(true.predict(mix[d], STEPS[-1])), rel=0.01)
        assert law.laws[d].alpha == pytest.approx(true.alpha, abs=0.03)
    unseen = {"code": 0.1, "news": 0.45, "math": 0.45}
    got = law.predict(unseen, 800)
    assert got == pytest.approx(
        {d: float(t.predict(unseen[d], 800)) for d, t in TRUE.items()}, rel=0.01
    )


def test_closed_form_optimum_matches_a_numerical_optimiser() -> None:
    law = BiMix(TRUE)
    for s in (100, 10_000):
        best = law.optimal_mixture(s)  # check=True compares with Nelder-Mead on the simplex
        numeric = law._numeric_optimum(s, np.ones(3))
        np.testing.assert_allclose(best.vector(law.domains), numeric.vector(law.domains), atol=2e-3)
    # a larger alpha (loss more sensitive to the domain's share) earns a larger share
    best = law.optimal_mixture(1000)
    assert best["math"] > best["news"] > best["code"]
    # weighting a domain up moves proportion to it
    assert law.optimal_mixture(1000, {"code": 5.0})["code"] > best["code"]
    curve = law.budget_curve([100, 1000, 10_000])
    assert [c["total"] for c in curve] == sorted((c["total"] for c in curve), reverse=True)


def test_bad_fit_data_is_refused(tmp_path) -> None:
    rows = _points(MIXES[:1], STEPS)
    with pytest.raises(ValueError, match="same proportion"):
        BiMix().fit(rows)
    few = _points(MIXES, STEPS[:1])
    with pytest.raises(ValueError, match=r"at least 5|distinct steps"):
        BiMix().fit(few)
    bad = _points(MIXES, STEPS)
    bad["loss"][3] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        BiMix().fit(bad)
    law = BiMix(TRUE)
    law.save(tmp_path / "law.json")
    assert str(BiMix.load(tmp_path / "law.json").to_dict()) == str(law.to_dict())


def test_fit_quality_report() -> None:
    rows = _points(MIXES, STEPS)
    rows["run"] = [f"run{i // (len(TRUE) * len(STEPS))}" for i in range(len(rows["loss"]))]
    report = evaluate_fit(rows)
    for d in TRUE:
        assert report["extrapolation"][d]["mean_rel_error"] < 0.02
        assert report["heldout_r2"][d] > 0.9


def test_a_floor_keeps_every_domain_in_the_optimum() -> None:
    flat = dict(TRUE)
    flat["code"] = DomainLaw(1.0, 1e-12, 6.0, 0.45, 1.6)  # its share barely matters
    law = BiMix(flat)
    with pytest.warns(UserWarning, match="alpha below"):
        assert law.optimal_mixture(1000)["code"] < 1e-6  # unconstrained: starved
    floored = law.optimal_mixture(1000, min_share=0.05)  # checked against Nelder-Mead
    assert floored["code"] == pytest.approx(0.05)
    assert floored["math"] > floored["news"] > 0.05
    with pytest.raises(ValueError, match="leaves nothing"):
        law.optimal_mixture(1000, min_share=0.4)
    with pytest.raises(ValueError, match="unknown domains"):
        law.optimal_mixture(1000, {"poetry": 2.0})


def test_fit_bimix_refuses_what_cannot_fit_before_training(token_cache, tmp_path) -> None:
    from assay.workflows.bimix import fit_bimix

    common = {"tokenizer": "unused", "tokens": 8 * 8 * 128, "train": {"batch_size": 8, "seq_len": 128}}  # fmt: skip
    with pytest.raises(ValueError, match="give a held-out corpus"):
        fit_bimix(token_cache.root, tmp_path, heldout=None, **common)
    # the law needs 3 evaluations to fit and one more to check its extrapolation
    with pytest.raises(ValueError, match=r"evals\s+Input should be greater than or equal to 4"):
        fit_bimix(token_cache.root, tmp_path, heldout="h", evals=3, **common)
    with pytest.raises(ValueError, match="too few for 12 evaluations"):
        fit_bimix(token_cache.root, tmp_path, heldout="h", evals=12, **common)
    with pytest.raises(ValueError, match=r"runs\s+Input should be greater than or equal to 2"):
        fit_bimix(token_cache.root, tmp_path, heldout="h", runs=1, **common)
    assert not (tmp_path / "proxies").exists()  # nothing trained


# -- the unit of the loss: per token (the paper's) or bits per byte --------------------------------

BYTES_PER_TOKEN = {"code": 2.0, "news": 4.5, "math": 3.0}  # under the proxies' tokenizer


def _runs_table(mixtures: list[dict[str, float]], steps: np.ndarray):
    """A runs table (`run_row` of each run) whose curves hold both units: per-token losses from
    TRUE, and bits per byte = loss / (bytes per token * ln 2)."""
    import polars as pl

    from assay.proxies.runs import run_row

    rows = []
    for k, mix in enumerate(mixtures):
        curve = []
        for s in steps:
            per = {}
            for d, law in TRUE.items():
                loss = float(law.predict(mix[d], s))
                tokens = 1000
                n_bytes = int(tokens * BYTES_PER_TOKEN[d])
                bpb = loss * tokens / np.log(2) / n_bytes
                per[d] = {"loss": loss, "bpb": bpb, "tokens": tokens, "bytes": n_bytes}
            curve.append({"step": int(s), "tokens": int(s), "bpb": per})
        run = {
            "run_id": f"r{k}", "out_dir": f"r{k}", "preset": "tiny", "seed": 0,
            "tokens": int(steps[-1]), "steps": int(steps[-1]), "params": 1, "wall_seconds": 1.0,
            "tokens_per_second": 1.0, "train_loss": 1.0, "mixture": mix, "effective_mixture": mix,
            "bpb": {d: v["bpb"] for d, v in curve[-1]["bpb"].items()},
            "loss": {d: v["loss"] for d, v in curve[-1]["bpb"].items()}, "curve": curve,
        }  # fmt: skip
        rows.append(run_row(run))
    return pl.DataFrame(rows)


def test_per_token_loss_and_bits_per_byte_give_different_optima() -> None:
    from assay.mixing.bimix import points_from_runs

    table = _runs_table(MIXES, STEPS)
    assert table["loss.news"][0] == pytest.approx(float(TRUE["news"].predict(0.2, STEPS[-1])))
    assert "bpb.news" in table.columns and "bpb.domain_mean" in table.columns  # unchanged
    by_loss = BiMix(unit="loss").fit(points_from_runs(table))  # the default unit: loss
    by_bpb = BiMix(unit="bpb").fit(points_from_runs(table, unit="bpb"))
    for d, true in TRUE.items():  # same exponents: bpb is the loss times a constant per domain
        assert by_loss.laws[d].alpha == pytest.approx(true.alpha, abs=0.01)
        assert by_bpb.laws[d].alpha == pytest.approx(true.alpha, abs=0.01)
    s = 1000.0
    per_token = by_loss.optimal_mixture(s)
    per_byte = by_bpb.optimal_mixture(s)
    # summing bpb is summing losses weighted by tokens per byte
    weights = {d: 1 / (b * np.log(2)) for d, b in BYTES_PER_TOKEN.items()}
    np.testing.assert_allclose(
        per_byte.vector(by_loss.domains),
        by_loss.optimal_mixture(s, weights).vector(by_loss.domains),
        atol=2e-3,
    )
    assert per_byte["code"] > per_token["code"] + 0.03  # 2 bytes/token: weighted up by bpb
    assert per_byte["news"] < per_token["news"] - 0.03  # 4.5 bytes/token: weighted down


def test_a_runs_table_without_per_token_losses_is_refused_for_unit_loss(tmp_path) -> None:
    import json

    import polars as pl

    from assay.mixing.bimix import points_from_runs

    table = _runs_table(MIXES, STEPS)
    # a table written before per-token losses were recorded
    curves = [[{k: v for k, v in p.items() if k != "loss"} for p in json.loads(c)] for c in table["curve"]]  # fmt: skip
    old = table.with_columns(pl.Series("curve", [json.dumps(c) for c in curves]))
    old = old.drop([c for c in table.columns if c.startswith("loss.")])
    with pytest.raises(ValueError, match="no per-token losses"):
        points_from_runs(old)
    assert len(points_from_runs(old, unit="bpb")["loss"]) == len(MIXES) * len(STEPS) * 3
    with pytest.raises(ValueError, match="unit must be"):
        points_from_runs(table, unit="nats")
    law = BiMix(TRUE, unit="bpb")
    law.save(tmp_path / "law.json")
    assert BiMix.load(tmp_path / "law.json").unit == "bpb"
    saved = json.loads((tmp_path / "law.json").read_text())
    del saved["unit"]  # a law saved before units were recorded was fitted on bpb
    (tmp_path / "old.json").write_text(json.dumps(saved))
    assert BiMix.load(tmp_path / "old.json").unit == "bpb"


def test_no_floor_by_default_and_a_warning_when_an_alpha_is_near_zero() -> None:
    import warnings

    from assay.mixing.bimix import ALPHA_NEAR_ZERO
    from assay.workflows.bimix import BiMixSettings

    cfg = BiMixSettings(tokens=1000)
    assert cfg.min_share == 0 and cfg.unit == "loss"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every alpha well above 0: no warning
        BiMix(TRUE).optimal_mixture(1000)
    flat = dict(TRUE)
    flat["code"] = DomainLaw(1.0, ALPHA_NEAR_ZERO / 2, 6.0, 0.45, 1.6)
    law = BiMix(flat)
    assert law.flat_domains() == ["code"]
    with pytest.warns(UserWarning, match=r"alpha below 0.01 \(code 0.005\).*min_share"):
        starved = law.optimal_mixture(1000)
    assert starved["code"] < 0.05
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a floor is the remedy: no warning with one
        assert law.optimal_mixture(1000, min_share=0.05)["code"] == pytest.approx(0.05)
        law.budget_curve([100, 1000])  # the curve does not repeat the warning
