"""MATES fidelity to the official code: the reference loss scores only each target example's
continuation (the context conditions the model but is not counted), averaged as the official
evaluate() does; whole-text scoring is today's number; the official (biased) Gumbel selection
is reproduced exactly on a fixed seed; the paper's probe count is a preset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from assay.common.targets import (
    BUILTIN_SPLIT,
    load_target_pairs,
    load_targets,
    pair_text,
    target_split,
)
from assay.errors import ConfigError, InputError
from assay.proxies.model import build_model
from assay.selection.policies import gumbel_noise, gumbel_topk_mask
from assay.workflows.mates_probing import (
    OFFICIAL_REF_BATCH,
    ReferenceSet,
    encode_pairs,
    reference_loss,
)

SEQ = 256


@pytest.fixture(scope="module")
def model(proxy_tokenizer):
    """The tiny preset, freshly initialised (deterministic), in float32 on the CPU, on one
    thread (its small forward passes were 30x slower on two threads of a loaded 2-core CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    m = build_model("tiny", vocab_size=len(proxy_tokenizer), seq_len=SEQ, seed=0)
    yield m.float().eval()
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def pairs() -> list[tuple[str, str]]:
    # 40 examples: a full group of 32 and a partial one of 8, as the official batches of 32
    return load_target_pairs("assay_champ", *BUILTIN_SPLIT["assay_champ"], max_items=40, seed=0)


def _ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def _token_nll(model, ids: list[int]) -> np.ndarray:
    """-log p(ids[j] | ids[:j]) for j >= 1, from the logits of one unpadded forward pass."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    logp = torch.log_softmax(logits[:-1], dim=-1)
    return -logp[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].numpy()


def _by_hand(model, tok, pairs: list[tuple[str, str]]) -> float:
    """The official reduction: per batch of 32 examples, the mean NLL of the continuation
    tokens (those past the context's own tokens), then the mean over batches."""
    eos = tok.eos_token_id
    sums, counts = np.zeros(len(pairs)), np.zeros(len(pairs))
    for i, (context, continuation) in enumerate(pairs):
        ids = [eos, *_ids(tok, pair_text(context, continuation))][:SEQ]
        first = 1 + len(_ids(tok, context))  # the first scored position
        nll = _token_nll(model, ids)[first - 1 :]
        sums[i], counts[i] = nll.sum(), len(nll)
    group = np.arange(len(pairs)) // 32
    means = [sums[group == g].sum() / counts[group == g].sum() for g in np.unique(group)]
    return float(np.mean(means))


def test_builtin_split_and_pairs_give_the_whole_texts() -> None:
    assert target_split("assay_champ") == (("question",), ("answer",))
    assert target_split("/data/x.jsonl") is None  # a file has a split only when one is named
    assert target_split("/data/x.jsonl", ["prompt"], ["target"]) == (("prompt",), ("target",))
    with pytest.raises(ConfigError, match="both"):
        target_split("assay_champ", ["question"], None)
    with pytest.raises(ConfigError, match="list of texts"):
        target_split(["a text"], ["question"], ["answer"])
    pairs = load_target_pairs("assay_champ", ["question"], ["answer"])
    assert [pair_text(c, t) for c, t in pairs] == load_targets("assay_champ")
    assert load_target_pairs("assay_champ", ["question"], ["answer"], max_items=7, seed=3) == [
        pairs[i] for i in np.sort(np.random.default_rng(3).choice(len(pairs), 7, replace=False))
    ]


def test_pairs_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(
        '{"context": "The cat sat on the", "continuation": " mat"}\n'
        '{"context": "Q: 2+2?", "continuation": "4"}\n'
        '{"context": "", "continuation": "whole"}\n'
        '{"context": "no answer", "continuation": ""}\n'
    )
    got = load_target_pairs(path, ["context"], ["continuation"])
    # lm-eval style (" " + the word) is kept; an example with nothing to score is left out
    assert got == [("The cat sat on the", " mat"), ("Q: 2+2?", "4"), ("", "whole")]
    texts = ["The cat sat on the mat", "Q: 2+2?\n4", "whole"]
    assert [pair_text(c, t) for c, t in got] == texts
    with pytest.raises(InputError, match="no field 'answer'"):
        load_target_pairs(path, ["context"], ["answer"])


def test_continuation_loss_equals_a_hand_computation(model, proxy_tokenizer, pairs) -> None:
    ref = ReferenceSet.from_pairs(pairs, proxy_tokenizer, SEQ)
    assert len(ref) == 40 > OFFICIAL_REF_BATCH
    expected = _by_hand(model, proxy_tokenizer, pairs)
    got = reference_loss(model, ref.batches(8))
    assert got == pytest.approx(expected, rel=1e-5)
    # how the examples are batched for the forward passes does not matter
    assert reference_loss(model, ref.batches(3)) == pytest.approx(got, rel=1e-6)
    # the scored tokens are the continuations'
    conts = [
        len(_ids(proxy_tokenizer, pair_text(c, t))) - len(_ids(proxy_tokenizer, c))
        for c, t in pairs
    ]
    assert ref.n_tokens == sum(conts)
    batch = ref.batches(40)
    (x, y), rows = batch.batches[0], batch.rows[0]
    for r, j in enumerate(rows):
        assert int((y[r] != -100).sum()) == conts[j]
        assert (y[r, : ref.context[j]] == -100).all() and (x[r, : ref.context[j]] != 0).any()


def test_context_conditions_but_is_not_counted(model, proxy_tokenizer, pairs) -> None:
    ref = ReferenceSet.from_pairs(pairs, proxy_tokenizer, SEQ)
    base = reference_loss(model, ref.batches(8))
    # other contexts (each example gets the next one's question): same scored tokens when the
    # continuation tokenizes the same, a different loss through conditioning
    shifted = [(pairs[(i + 1) % len(pairs)][0], t) for i, (_, t) in enumerate(pairs)]
    other = ReferenceSet.from_pairs(shifted, proxy_tokenizer, SEQ)
    assert abs(reference_loss(model, other.batches(8)) - base) > 1e-4
    assert reference_loss(model, other.batches(8)) == pytest.approx(
        _by_hand(model, proxy_tokenizer, shifted), rel=1e-5
    )
    # the loss is not the whole text's (which counts the question's tokens too)
    whole = ReferenceSet.from_texts([pair_text(c, t) for c, t in pairs], proxy_tokenizer, SEQ)
    assert whole.n_tokens > ref.n_tokens
    assert abs(reference_loss(model, whole.batches(8)) - base) > 1e-3


def test_whole_text_scoring_is_the_old_mean_per_token(model, proxy_tokenizer) -> None:
    texts = load_targets("assay_champ", max_items=40, seed=0)
    ref = ReferenceSet.from_texts(texts, proxy_tokenizer, SEQ)
    assert ref.context is None
    nll = [
        _token_nll(model, [proxy_tokenizer.eos_token_id, *_ids(proxy_tokenizer, t)][:SEQ])
        for t in texts
    ]
    pooled = float(np.concatenate(nll).sum() / sum(len(n) for n in nll))  # every token, pooled
    assert reference_loss(model, ref.batches(8)) == pytest.approx(pooled, rel=1e-5)
    # the (x, y) batches alone still give it, as before
    assert reference_loss(model, list(ref.batches(8))) == reference_loss(model, ref.batches(8))


def test_a_continuation_cut_off_everywhere_is_refused(proxy_tokenizer) -> None:
    long = [("word " * 200, "answer")] * 8
    seqs, context = encode_pairs(long, proxy_tokenizer, 32)
    assert all(len(s) == 32 and c == 32 for s, c in zip(seqs, context, strict=True))
    with pytest.raises(InputError, match="no reference example has a continuation"):
        ReferenceSet(seqs, context)


# -- the official Gumbel selection ----------------------------------------------------------------


def test_gumbel_official_is_the_official_code_on_a_fixed_seed() -> None:
    """`select_data.py`: metrics = pred / tau + Gumbel; keep the k smallest."""
    pred = np.random.default_rng(0).normal(size=50)
    tau, seed = 0.5, 11
    got = gumbel_topk_mask(pred, 0.2, tau=tau, seed=seed, mode="bottom", official=True)
    m = pred / tau + gumbel_noise(50, seed)  # the same draw of noise
    assert np.flatnonzero(got).tolist() == sorted(np.argpartition(m, 10)[:10].tolist())
    # the same with the score assay's MATES selects by (minus the prediction, mode top)
    assert (gumbel_topk_mask(-pred, 0.2, tau=tau, seed=seed, official=True) == got).all()
    # and not what the unbiased policy keeps on that seed
    assert not (gumbel_topk_mask(-pred, 0.2, tau=tau, seed=seed) == got).all()


def test_gumbel_official_is_biased_against_the_softmax() -> None:
    pred, n = np.array([0.0, 1.0, 2.0]), 4000
    picks = np.bincount(
        [np.flatnonzero(gumbel_topk_mask(pred, 1 / 3, seed=s, mode="bottom", official=True))[0]
         for s in range(n)],
        minlength=3,
    ) / n  # fmt: skip
    fair = (
        np.bincount(
            [np.flatnonzero(gumbel_topk_mask(-pred, 1 / 3, seed=s))[0] for s in range(n)],
            minlength=3,
        )
        / n
    )
    softmax = np.exp(-pred) / np.exp(-pred).sum()  # (0.665, 0.245, 0.090)
    assert np.abs(fair - softmax).max() < 0.025
    # the official form under-samples the worst item: about 0.053 instead of 0.090
    assert abs(picks[2] - 0.053) < 0.02 and picks[2] < softmax[2] - 0.02
    assert picks[0] > softmax[0] + 0.015


def test_mates_settings_selection_and_paper_preset(tmp_path: Path) -> None:
    from assay.workflows.mates import _MatesRun
    from assay.workflows.mates_settings import PAPER_PRESET, MatesSettings, paper_settings

    s = paper_settings(5_242_880_000)
    assert (s.probes, s.keep, s.tau, s.stages, s.ref_batch_size) == (80_000, 0.2, 0.5, 5, 32)
    assert PAPER_PRESET["probes"] == 10_000 * 8  # per GPU x GPUs in the official scripts
    plain = MatesSettings(stage_tokens=1000)
    assert plain.selection == "gumbel" and plain.reference_scoring == "continuation"
    # settings at their defaults keep the dump (and so the hashes) they had
    assert "selection" not in plain.model_dump() and "reference_scoring" not in plain.model_dump()
    official = MatesSettings(stage_tokens=1000, selection="gumbel_official")
    assert official.model_dump()["selection"] == "gumbel_official"
    with pytest.raises(ConfigError, match="Group-MATES selects"):
        _MatesRun(tmp_path, MatesSettings(stage_tokens=1000, group=True, selection="gumbel_official"),
                  None, None, False)  # fmt: skip


# -- which runs score continuations, and what they record -------------------------------------------


def test_run_identity_says_how_the_reference_is_scored(
    tmp_path: Path, demo_dir: Path, proxy_tokenizer
) -> None:
    from assay.io.corpus import Corpus
    from assay.util.hashing import config_hash
    from assay.workflows.mates import _claim_folder, _MatesRun, _prepare_folder, _reference_split
    from assay.workflows.mates_settings import MatesSettings

    corpus = Corpus(demo_dir / "train")

    def identity(out: str, targets="assay_champ", fields=None, split=(None, None), **kw):
        run = _MatesRun(tmp_path / out, MatesSettings(stage_tokens=1000, **kw), None, None, False)
        sp, fields = _reference_split(run, targets, fields, *split)
        texts, tok = _prepare_folder(run, corpus, targets, fields, 16, proxy_tokenizer, sp)
        return sp, _claim_folder(run, corpus, tok, texts)

    sp, new = identity("a")
    assert sp == (("question",), ("answer",)) and new["reference_scoring"] == "continuation"
    # whole-example scoring keeps the identity runs had before (same keys, same reference hash)
    sp, old = identity("b", reference_scoring="whole")
    assert sp is None and "reference_scoring" not in old and "selection" not in old
    assert old["reference"] == config_hash(load_targets("assay_champ", max_items=16, seed=0))
    assert new["reference"] != old["reference"]
    # fields given without a split: whole examples, as before
    assert identity("c", fields=["question", "answer"])[1] == {**old}
    # a named split that is not used: its fields joined, as whole examples
    split = (["question"], ["answer"])
    assert identity("d", split=split, reference_scoring="whole")[1] == old
    assert identity("e", selection="gumbel_official")[1]["selection"] == "gumbel_official"
    with pytest.raises(ConfigError, match="not context_fields"):
        identity("f", fields=["answer"], split=split)


def test_recipe_step_rekeys_only_when_continuations_are_scored() -> None:
    from pydantic import ValidationError

    from assay.recipe.steps.mates import MatesStep

    def step(**targets) -> MatesStep:
        return MatesStep(targets={"source": "assay_champ", **targets}, stage_tokens=1000)

    assert step()._scores_continuations()
    assert not step(fields=["question", "answer"])._scores_continuations()
    assert not step(source="t.jsonl")._scores_continuations()
    assert step(
        source="t.jsonl", context_fields=["q"], continuation_fields=["a"]
    )._scores_continuations()
    whole = MatesStep(
        targets={"source": "assay_champ"}, stage_tokens=1000, reference_scoring="whole"
    )
    assert not whole._scores_continuations()
    # the targets' dump (and so a step's settings hash) is unchanged without a split
    assert step().model_dump()["targets"] == {
        "source": "assay_champ",
        "fields": None,
        "max_items": None,
    }
    with pytest.raises(ValidationError, match="both context_fields and continuation_fields"):
        step(context_fields=["question"])
