"""The compute of each step kind, for a recipe's dry run (`assay.recipe.dryrun`).

`step_costs(step, env) -> list[Cost]`: language-model work as FLOPs (training 6 x N x D, a
forward pass 2 x N x D), CPU work as such (no number), and a language model's work whose size
the recipe does not tell (a model named by path without `scale.params`, a corpus without
`scale.corpus_tokens`) as unknown, naming what is missing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from assay.recipe.spec import CorpusSpec, Scale
from assay.recipe.step import Step
from assay.util.config import Strict

CPU = "CPU, linear in the corpus (no FLOP estimate)"


class Hardware(Strict):
    """The accelerator an estimate's GPU-hours assume."""

    gpu: str = Field("H100 SXM", description="The GPU the estimate assumes (a label).")
    peak_tflops: float = Field(
        989.0,
        gt=0,
        description="Its peak dense TFLOP/s in the training precision (H100 SXM, bf16: 989).",
    )
    mfu: float = Field(
        0.4, gt=0, le=1, description="Model FLOPs utilisation: the share of the peak achieved."
    )
    attention: bool = Field(
        False,
        description="Add attention's FLOPs (6 x layers x seq_len x d_model per trained token) "
        "to 6 x N x D.",
    )

    def gpu_hours(self, flops: float) -> float:
        return flops / (self.peak_tflops * 1e12 * self.mfu) / 3600


@dataclass
class Cost:
    """One item of a step's compute: FLOPs (None: no sound estimate) and how they were found."""

    what: str
    flops: float | None = None
    tokens: float | None = None
    formula: str = ""
    cpu: bool = False  # CPU work: no FLOP count (flops is None)


@dataclass
class Env:
    """What a step's estimate may use besides the step: the hardware, the scale, the
    vocabularies of the recipe's tokenizer steps, and the recipe's corpus."""

    hardware: Hardware
    scale: Scale
    vocab: dict[str, int]
    corpus: CorpusSpec | None


@dataclass
class LM:
    """A language model as the estimate sees it."""

    label: str
    params: int
    layers: int | None = None
    d_model: int | None = None
    seq_len: int | None = None

    def per_token(self, passes: int, attention: bool) -> tuple[float, str]:
        """FLOPs per token of `passes` x (forward = 2) and the formula."""
        flops = passes * self.params
        formula = f"{passes} x {self.params:.3g}"
        if attention and self.layers and self.d_model and self.seq_len:
            extra = passes * self.layers * self.seq_len * self.d_model
            flops += extra
            formula = f"({formula} + {passes} x {self.layers} x {self.seq_len} x {self.d_model})"
        return flops, formula


def preset_lm(preset: str, tokenizer: str | None, env: Env, train: Any = None) -> LM:
    """A proxy preset at the vocabulary it will have: the recipe's tokenizer step's, else the
    preset's own (a tokenizer folder's size is not read: the preset's is assumed)."""
    from assay.proxies.model import get_preset, preset_parameters

    p = get_preset(preset)
    vocab = env.vocab.get(tokenizer or "", p.vocab_size)
    seq_len = train.seq_len if train is not None else 256
    arch = train.arch if train is not None else "llama"
    n = preset_parameters(preset, vocab, seq_len=seq_len, arch=arch)
    params = n["non_embedding"] + vocab * p.d_model  # the output layer's matrix
    return LM(
        f"preset {preset} (N = {params:.3g}, vocab {vocab:,})",
        params,
        p.n_layers,
        p.d_model,
        seq_len,
    )


def named_lm(path: str | None, env: Env, what: str) -> LM | None:
    """A model given by path, if `scale.params` says its size."""
    if path is None or path not in env.scale.params:
        return None
    return LM(f"{what} {path} (N = {env.scale.params[path]:.3g})", env.scale.params[path])


def train(what: str, lm: LM, tokens: float, env: Env) -> Cost:
    per, formula = lm.per_token(6, env.hardware.attention)
    return Cost(f"{what}, {lm.label}", per * tokens, tokens, f"{formula} x {tokens:.3g}")


def forward(
    what: str, lm: LM | None, tokens: float | None, env: Env, model_key: str, tokens_key: str
) -> Cost:
    """A forward pass over `tokens`; without the model's size or the tokens, unknown, naming
    the setting that would tell it (`model_key`, `tokens_key`)."""
    if lm is None or tokens is None:
        missing = [k for k, v in ((model_key, lm), (tokens_key, tokens)) if v is None]
        return Cost(what, None, tokens, f"2 x N x tokens; unknown: {' and '.join(missing)}")
    per, formula = lm.per_token(2, env.hardware.attention)
    return Cost(f"{what}, {lm.label}", per * tokens, tokens, f"{formula} x {tokens:.3g}")


def cpu(what: str, formula: str = CPU) -> Cost:
    return Cost(what, None, None, formula, cpu=True)


def corpus_tokens(step: Step, env: Env) -> float | None:
    """The tokens of a step's corpus, when it is the recipe's and `scale` gives them."""
    own = getattr(step, "corpus", None)
    if isinstance(own, CorpusSpec) and (env.corpus is None or own.paths != env.corpus.paths):
        return None
    return env.scale.corpus_tokens


def doc_tokens(docs: int, env: Env) -> float | None:
    tpd = env.scale.tokens_per_doc
    return docs * tpd if tpd else None


#: The embedder of an `embedder: null` setting (EMBEDDER_HELP), the name `scale.params` knows it by.
DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"


def _embedder_path(embedder: Any) -> str:
    path = embedder.get("model") if isinstance(embedder, dict) else embedder
    return path or DEFAULT_EMBEDDER


def embed(what: str, embedder: Any, tokens: float | None, env: Env, missing: str) -> Cost:
    """Embedding `tokens`: a forward pass of the embedder; table lookups for `static`."""
    path = _embedder_path(embedder)
    if path == "static":
        return cpu(f"{what} (static: table lookups)")
    model = named_lm(path, env, "embedder")
    what += " (an upper bound: embedders truncate long documents)"
    return forward(what, model, tokens, env, f"scale.params[{path}]", missing)


# ---------------------------------------------------------------------------------------------
# Step kinds


def _train_proxy(step: Any, env: Env) -> list[Cost]:
    lm = preset_lm(step.preset, step.tokenizer, env, step.train)
    return [train("train (held-out evaluation not counted)", lm, step.tokens, env)]


def _search(step: Any, env: Env) -> list[Cost]:
    lm = preset_lm(step.preset, step.tokenizer, env, step.train)
    return [
        train(f"{step.runs} proxies x {step.tokens:.3g} tokens", lm, step.runs * step.tokens, env),
        cpu(f"predictor ({step.predictor}) over {step.candidates:,} candidates", "CPU, small"),
    ]


def _bimix(step: Any, env: Env) -> list[Cost]:
    lm = preset_lm(step.preset, step.tokenizer, env, step.train)
    what = f"{step.runs} fitting runs x {step.tokens:.3g} tokens ({step.evals} evaluations each)"
    return [train(what, lm, step.runs * step.tokens, env)]


def _mates(step: Any, env: Env) -> list[Cost]:
    lm = preset_lm(step.preset, step.tokenizer, env, step.train)
    what = f"{step.stages} stages x {step.stage_tokens:.3g} tokens"
    costs = [train(what, lm, step.stages * step.stage_tokens, env)]
    probed = step.stages - 1 if step.method == "mates" else 0
    if probed:
        seq = step.train.seq_len
        n = step.probes * probed
        if step.group and step.bootstrap_rounds:  # each round probes its bootstrap rollouts
            T = step.trajectory_length
            n += step.bootstrap_rounds * (step.bootstrap_rollouts or step.probes // T) * T * probed
        costs.append(train(f"{n:,} oracle probes: one step on <= {seq} tokens", lm, n * seq, env))
        items = step.targets.max_items
        ref = n * items * seq if items else None
        costs.append(
            forward(
                f"{n:,} reference losses on {items or '?'} targets of <= {seq} tokens (upper bound)",
                lm,
                ref,
                env,
                "",
                "targets.max_items",
            )
        )
        tokens = corpus_tokens(step, env)  # split into `stages` pools; all but the first scored
        pool = tokens * probed / step.stages if tokens else None
        if step.influence_model == "finetune":
            costs += _finetuned_influence(step, env, step.probes * probed, pool)
        else:
            what = f"influence model: embed {probed} of {step.stages} stage pools"
            costs.append(embed(what, step.embedder, pool, env, "scale.corpus_tokens"))
    return costs


def _finetuned_influence(step: Any, env: Env, probes: int, pool: float | None) -> list[Cost]:
    """The fine-tuned influence model: training on the probes (at most `max_length` tokens
    each, every epoch; held-out evaluations not counted), then a forward pass over the pools."""
    ft = step.finetune
    path = ft.encoder or DEFAULT_EMBEDDER
    model, key = named_lm(path, env, "encoder"), f"scale.params[{path}]"
    tokens = probes * ft.max_length * ft.epochs
    what = f"influence model: fine-tune on {probes:,} probes x {ft.epochs} epochs (upper bound)"
    fit = (
        train(what, model, tokens, env)
        if model
        else Cost(what, None, tokens, f"6 x N x tokens; unknown: {key}")
    )
    what = "influence model: score the probed stage pools (upper bound: documents truncated)"
    return [fit, forward(what, model, pool, env, key, "scale.corpus_tokens")]


def _preselect(step: Any, env: Env) -> list[Cost]:
    fam, costs = step.family, []
    calibration = doc_tokens(step.calibration, env)
    if fam.models:
        paths = [m.path for m in fam.models]
        members = [named_lm(p, env, "model") for p in paths]
    else:
        sizes = {
            "tokens": [(fam.preset, fam.tokens / 2**i) for i in range(fam.n)],
            "preset": [(p, fam.tokens) for p in fam.presets[: fam.n]],
            "mixture": [(fam.preset, fam.tokens)] * fam.n,
        }[fam.vary]
        paths = [p for p, _ in sizes]
        members = [preset_lm(p, fam.tokenizer, env, fam.train) for p in paths]
        for lm, (_, tokens) in zip(members, sizes, strict=True):
            costs.append(train(f"family member ({fam.vary})", lm, tokens, env))
    need = "scale.corpus_docs and scale.corpus_tokens (tokens per document)"
    for path, lm in zip(paths, members, strict=True):
        what = f"family member scores {step.calibration:,} calibration documents"
        costs.append(forward(what, lm, calibration, env, f"scale.params[{path}]", need))
    costs.append(cpu("fastText: fit on the labelled calibration documents, score the corpus"))
    return costs


def _betr(step: Any, env: Env) -> list[Cost]:
    what = f"embed {step.sample:,} sampled documents (targets not counted)"
    need = "scale.corpus_docs and scale.corpus_tokens (tokens per document)"
    return [
        embed(what, step.embedder, doc_tokens(step.sample, env), env, need),
        cpu("rank the sample for every target example; fastText: fit, score the corpus"),
    ]


def _embed_corpus(step: Any, env: Env) -> list[Cost]:
    tokens = corpus_tokens(step, env)
    what = (
        "embed the corpus"
        if step.kind == "mass"
        else f"embed a {step.sample:,}-document sample, then the corpus"
    )
    rest = "k-means, merging, nearest centroids" if step.kind == "cluster" else "skill graph"
    return [
        embed(what, step.embedder, tokens, env, "scale.corpus_tokens"),
        cpu(f"{step.kind}: {rest}"),
    ]


def _score(step: Any, env: Env) -> list[Cost]:
    model = step.params.get("model") if step.scorer in ("perplexity", "hf_classifier") else None
    if model is None:
        fit = "fit fastText, " if step.fit is not None else ""
        return [cpu(f"{fit}score with {step.scorer or 'a saved scorer'}")]
    return [
        forward(
            f"{step.scorer}: one forward pass over the corpus",
            named_lm(model, env, "model"),
            corpus_tokens(step, env),
            env,
            f"scale.params[{model}]",
            "scale.corpus_tokens",
        )
    ]


def _eval(step: Any, env: Env) -> list[Cost]:
    return [
        Cost(
            "evaluate: held-out bits per byte and lm-eval tasks",
            None,
            None,
            "small next to training; task and held-out sizes unknown",
        )
    ]


_SMALL = {
    "demo_corpus": "writes the bundled demo corpus (CPU, seconds)",
    "compare": "reads earlier steps' summaries (no compute)",
    "export": "writes trainers' data configurations (no compute)",
}


def step_costs(step: Step, env: Env) -> list[Cost]:
    """The compute items of one step."""
    kind = step.kind
    if kind in _SMALL:
        return [Cost(_SMALL[kind], 0.0, None, "no FLOPs counted")]
    if kind == "tokenizer":
        return [cpu(f"BPE on {step.sample_docs:,} sampled documents", "CPU, linear in its sample")]
    if kind in _BY_KIND:
        return _BY_KIND[kind](step, env)
    return [cpu(f"{kind}: {_CPU_KINDS.get(kind, 'CPU work')}")]


_CPU_KINDS = {
    "select": "a decision over the scores and a pass writing the kept documents",
    "dsir": "hashed n-gram counts of a sample and the targets, importance weights",
    "ngram_lm": "Kneser-Ney n-gram model of the reference, perplexity of every document",
    "dedup": "MinHash signatures, LSH bands, a global decision",
    "decontaminate": "hashed 13-grams of the targets, a lookup per document",
    "stats": "corpus statistics",
    "mixture": "token counts (entropy: n-gram statistics) per domain",
    "materialize": "reads the corpus and its token cache once, writes the mixture",
}

_BY_KIND: dict[str, Callable[[Any, Env], list[Cost]]] = {
    "train_proxy": _train_proxy,
    "search": _search,
    "bimix": _bimix,
    "mates": _mates,
    "preselect": _preselect,
    "betr": _betr,
    "cluster": _embed_corpus,
    "mass": _embed_corpus,
    "score": _score,
    "eval": _eval,
}
