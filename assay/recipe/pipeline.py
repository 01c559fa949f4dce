"""Execute a recipe in a self-describing run directory.

    runs/<name>/
      recipe.yaml        the resolved recipe (defaults filled in, overrides applied)
      env.json           python, platform, package versions, seed, command
      inputs.json        fingerprints of every input shard a step read
      <step>/step.json   the step's config hash, status, time and summary
      <step>/...         the step's artifacts (model/, scores/, selected/, stats.json)

Re-running skips finished work: every step is resumable on its own, and a step whose
configuration (or whose inputs) changed since the last run is cleared and redone, together with
what depends on it. `overwrite=True` redoes everything.

The run directory is assay's own: it is refused if it equals, holds or lies inside any input of
the recipe, locked while a run writes it, and a step folder is deleted (to redo the step) only
if it lies inside the run directory and carries assay's marker.
"""

from __future__ import annotations

import inspect
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from assay.exec.runner import Runner, make_runner
from assay.exec.stats import corpus_stats
from assay.io.corpus import Corpus
from assay.recipe.model import (
    BETRStep,
    BiMixStep,
    ClusterStep,
    CompareStep,
    CorpusSpec,
    DemoCorpusStep,
    EvalStep,
    MassStep,
    MatesStep,
    MixtureStep,
    PreSelectStep,
    Recipe,
    ScoreStep,
    SearchStep,
    SelectStep,
    StatsStep,
    TokenizerStep,
    TrainProxyStep,
    dump_recipe,
    load_recipe,
)
from assay.util.files import (
    atomic_path,
    fingerprint,
    folder_fingerprint,
    package_versions,
    read_json,
    write_json,
)
from assay.util.guard import (
    MARKER,
    UnsafeOutputError,
    check_output,
    check_writable_folder,
    folder_lock,
    is_assay_output,
    safe_rmtree,
)
from assay.util.hashing import config_hash

STEP_FILE = "step.json"
_VERSIONED = [
    "assay", "numpy", "polars", "pyarrow", "pydantic", "fasttext-numpy2", "ray", "datasets",
    "tokenizers", "torch", "transformers",
]  # fmt: skip


@dataclass
class StepOutcome:
    name: str
    kind: str
    status: str  # "ran" or "reused"
    seconds: float
    outputs: dict[str, str] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunOutcome:
    run_dir: Path
    recipe: Recipe
    steps: list[StepOutcome] = field(default_factory=list)

    def step(self, name: str) -> StepOutcome:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(name)


class _Context:
    def __init__(self, recipe: Recipe, run_dir: Path, runner: Runner, overwrite: bool):
        self.recipe, self.run_dir, self.runner, self.overwrite = recipe, run_dir, runner, overwrite
        self.hashes: dict[str, str] = {}
        self.outputs: dict[str, dict[str, str]] = {}
        self.inputs: dict[str, Any] = {}
        self.step_dir = run_dir  # the folder of the step being prepared

    def external(self, corpus: Corpus) -> Corpus:
        """A corpus given by path: the run must not write over, into or around it.

        A path inside the run directory is accepted only in the folder of an earlier step (a
        step may read what another wrote); never in the folder of the step that reads it,
        which is cleared when the step is redone.
        """
        run = Path(os.path.realpath(self.run_dir))
        for raw in corpus.input_paths():
            path = Path(os.path.realpath(raw))
            if not path.is_relative_to(run) or path == run:
                check_output(self.run_dir, [raw], "run directory")
                continue
            top = run / path.relative_to(run).parts[0]
            if top == Path(os.path.realpath(self.step_dir)) or not (
                (top / STEP_FILE).exists() or (top / MARKER).exists()
            ):
                raise UnsafeOutputError(
                    f"{raw} lies inside the run directory {self.run_dir} but not in the folder "
                    "of an earlier step: the run could write over it; move it out of the run"
                )
        return corpus

    def corpus(self, spec: CorpusSpec | None) -> tuple[Corpus, list[dict[str, Any]]]:
        spec = spec or self.recipe.corpus
        assert spec is not None  # the recipe validator guarantees it
        paths = None
        if spec.step is not None:
            outputs = self.outputs[spec.step]
            if spec.output is not None:
                if spec.output not in outputs:
                    raise ValueError(
                        f"step {spec.step!r} has no output {spec.output!r}; it has {sorted(outputs)}"
                    )
                paths = [outputs[spec.output]]
            else:
                paths = [outputs.get("selected") or outputs.get("corpus") or outputs["train"]]
        corpus = spec.open(paths)
        if spec.step is None:
            self.external(corpus)
        fp = corpus.fingerprint()
        for entry in fp:
            self.inputs[entry.get("path", entry["name"])] = entry
        return corpus, fp

    def seed(self, step_seed: int | None) -> int:
        return self.recipe.seed if step_seed is None else step_seed


def run_recipe(
    recipe: Recipe | str | Path,
    overrides: list[str] | None = None,
    *,
    run_dir: str | Path | None = None,
    overwrite: bool = False,
    runner: Runner | None = None,
    progress: bool = True,
) -> RunOutcome:
    """Run every step of a recipe; returns what each step produced."""
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe, overrides)
    elif overrides:
        raise ValueError("overrides apply to recipe files; edit the Recipe object instead")
    root = Path(run_dir) if run_dir else recipe.resolved_run_dir
    _check_run_dir(root)
    for path in _external_paths(recipe):  # before the run directory is created
        if not Path(os.path.realpath(path)).is_relative_to(os.path.realpath(root)):
            check_output(root, [path], "run directory")
    with folder_lock(root):
        if not (root / MARKER).exists():
            write_json(root / MARKER, {"made_by": "assay", "kind": "run"})
        return _run(recipe, root, overwrite, runner, progress)


def _check_run_dir(root: Path) -> None:
    """A run directory is new, empty or assay's own (a previous run of a recipe)."""
    if root.exists() and not root.is_dir():
        raise UnsafeOutputError(f"the run directory {root} is a file")
    legacy = (root / "recipe.yaml").exists() and (root / "env.json").exists()
    if root.is_dir() and not legacy and not is_assay_output(root):
        foreign = sorted(p.name for p in root.iterdir() if not p.name.startswith("."))
        if foreign:
            raise UnsafeOutputError(
                f"the run directory {root} holds files that assay did not write "
                f"({', '.join(foreign[:3])}); choose a new or empty folder (run_dir)"
            )


def _external_paths(recipe: Recipe) -> list[str]:
    """Every corpus path a recipe names (the fixed part of a glob), wherever it is declared.

    Paths inside the run directory are checked when the step that reads them runs.
    """
    found: list[str] = []

    def visit(node: Any) -> None:
        if isinstance(node, CorpusSpec):
            for p in node.paths:
                found.append(p[: min((p.index(c) for c in "*?[" if c in p), default=len(p))] or ".")
        elif isinstance(node, BaseModel):
            for name in type(node).model_fields:
                visit(getattr(node, name))
        elif isinstance(node, list | tuple):
            for item in node:
                visit(item)

    visit(recipe)
    return found


def _run(
    recipe: Recipe, root: Path, overwrite: bool, runner: Runner | None, progress: bool
) -> RunOutcome:
    runner = runner or make_runner(
        recipe.runner.kind, recipe.runner.workers, recipe.runner.address, progress=progress
    )
    with atomic_path(root / "recipe.yaml") as tmp:
        tmp.write_text(dump_recipe(recipe))
    write_json(
        root / "env.json",
        {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "packages": package_versions(_VERSIONED),
            "seed": recipe.seed,
            "argv": sys.argv,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    )
    ctx = _Context(recipe, root, runner, overwrite)
    outcome = RunOutcome(root, recipe)
    for step in recipe.steps:
        outcome.steps.append(_run_step(step, ctx))
        write_json(root / "inputs.json", ctx.inputs)
    return outcome


def _run_step(step: Any, ctx: _Context) -> StepOutcome:
    step_dir = ctx.run_dir / step.name
    check_writable_folder(step_dir)  # a folder of the step's name that assay did not make
    ctx.step_dir = step_dir
    t0 = time.perf_counter()
    executor = _EXECUTORS[type(step)]
    # The step's identity: its config, the recipe seed, the upstream steps it reads, its inputs.
    identity, prepare = executor(step, ctx, step_dir)
    h = config_hash({"step": step.model_dump(mode="json"), "seed": ctx.recipe.seed, **identity})
    ctx.hashes[step.name] = h
    state_path = step_dir / STEP_FILE
    previous = read_json(state_path) if state_path.exists() else None
    changed = previous is not None and previous.get("hash") != h
    if ctx.overwrite or changed:
        safe_rmtree(step_dir, within=ctx.run_dir)
    if not (step_dir / MARKER).exists():
        write_json(step_dir / MARKER, {"made_by": "assay", "kind": "step", "step": step.kind})
    reused = (
        previous is not None
        and not changed
        and not ctx.overwrite
        and previous.get("status") == "done"
    )
    outputs, summary = prepare(redo=ctx.overwrite or changed)
    ctx.outputs[step.name] = outputs
    seconds = time.perf_counter() - t0
    write_json(
        state_path,
        {
            "hash": h,
            "kind": step.kind,
            "status": "done",
            "seconds": round(seconds, 3),
            "outputs": outputs,
            "summary": summary,
        },
    )
    return StepOutcome(
        step.name, step.kind, "reused" if reused else "ran", seconds, outputs, summary
    )


# ---------------------------------------------------------------------------------------------
# Step executors. Each returns (identity, prepare): identity feeds the step's hash, and
# prepare(redo) does the (resumable) work and returns (outputs, summary).


def _demo_corpus(step: DemoCorpusStep, ctx: _Context, step_dir: Path) -> Any:
    from assay.demo import build_demo_corpus

    def prepare(redo: bool) -> tuple[dict[str, str], dict[str, Any]]:
        manifest = build_demo_corpus(
            step.out, size=step.size, heldout=step.heldout, seed=ctx.seed(step.seed), overwrite=redo
        )
        return {"train": manifest["train"], "heldout": manifest["heldout"]}, {
            "domains": manifest["domains"]
        }

    return {}, prepare


def _score(step: ScoreStep, ctx: _Context, step_dir: Path) -> Any:
    from assay.selection.base import load_scorer, make_scorer

    corpus, fp = ctx.corpus(step.corpus)
    identity: dict[str, Any] = {"corpus": fp}
    seed = ctx.seed(step.seed)
    if step.fit is not None:
        pos = ctx.external(step.fit.positive.open())
        identity["positive"] = pos.fingerprint()

    def prepare(redo: bool) -> tuple[dict[str, str], dict[str, Any]]:
        model_dir = step_dir / "model"
        summary: dict[str, Any] = {}
        if step.model:
            scorer = load_scorer(step.model)
        elif step.fit is not None:
            if (model_dir / "scorer.json").exists():
                scorer = load_scorer(model_dir)
            else:
                scorer = make_scorer(step.scorer, **step.params)
                fit_seed = ctx.seed(step.fit.seed)
                negative = (
                    corpus
                    if step.fit.negative == "corpus"
                    else ctx.external(step.fit.negative.open())
                )
                pos_texts = pos.sample(step.fit.n, seed=fit_seed).get_column("text").to_list()
                neg_texts = (
                    negative.sample(step.fit.n, seed=fit_seed + 1).get_column("text").to_list()
                )
                try:
                    scorer.fit(pos_texts, neg_texts, seed=fit_seed, balance=step.fit.balance)
                except TypeError as e:
                    raise ValueError(
                        f"step {step.name!r}: scorer {step.scorer!r} does not train from positive/negative examples ({e})"
                    ) from None
                scorer.save(model_dir)
            report = model_dir / "fit_report.json"
            if report.exists():
                summary["fit"] = read_json(report)
        else:
            scorer = make_scorer(step.scorer, **_seeded(step.scorer, step.params, seed))
        return _score_all(scorer, corpus, step_dir, ctx, summary)

    return identity, prepare


def _seeded(scorer: str, params: dict[str, Any], seed: int) -> dict[str, Any]:
    """The step's scorer parameters, with the recipe's seed for a scorer that takes one and was
    not given one, so that a recipe run with another seed is another random draw."""
    from assay.selection.base import scorer_class

    accepts = inspect.signature(scorer_class(scorer).__init__).parameters
    return {"seed": seed, **params} if "seed" in accepts and "seed" not in params else params


def _score_all(
    scorer: Any, corpus: Corpus, step_dir: Path, ctx: _Context, summary: dict[str, Any]
) -> tuple[dict[str, str], dict[str, Any]]:
    """Score the whole corpus with a (fitted, saved) scorer; the step's outputs and summary."""
    from assay.io.scores import describe_scores
    from assay.selection.score import score_corpus

    scores_dir = step_dir / "scores"
    result = score_corpus(scorer, corpus, scores_dir, runner=ctx.runner)
    summary.update(
        docs=result.docs_out,
        skipped=result.skipped,
        docs_per_second=result.to_dict()["docs_per_second"],
        columns=scorer.columns,
        distribution=describe_scores(scores_dir, corpus),
    )
    outputs = {"scores": str(scores_dir)}
    if scorer.path:
        outputs["model"] = scorer.path
    return outputs, summary


def _folder_id(path: str) -> str | None:
    """A model folder's content fingerprint, so that retraining into it redoes the step."""
    return folder_fingerprint(path, (".json", ".safetensors", ".bin", ".gguf"))


def _targets_identity(spec: Any) -> dict[str, Any]:
    source = spec.source
    fp = fingerprint(source) if os.path.isfile(source) else source
    return {"source": fp, "fields": spec.fields, "max_items": spec.max_items}


def _betr(step: BETRStep, ctx: _Context, step_dir: Path) -> Any:
    from assay.selection.betr import fit_betr

    corpus, fp = ctx.corpus(step.corpus)
    identity = {
        "corpus": fp,
        "targets": _targets_identity(step.targets),
        "embedder": _folder_id(step.embedder) if step.embedder else None,
    }

    def prepare(redo: bool) -> tuple[dict[str, str], dict[str, Any]]:
        scorer = _fitted(
            step_dir / "model",
            redo,
            lambda: fit_betr(
                corpus,
                step.targets.source,
                sample=step.sample,
                fields=step.targets.fields,
                max_targets=step.targets.max_items,
                seed=ctx.seed(step.seed),
                progress=ctx.runner.progress,
                column=step.column,
                embedder={"model": step.embedder, "long_docs": step.long_docs},
                aggregation=step.aggregation,
                positive_fraction=step.positive_fraction,
                params=step.params,
            ),
        )
        summary = {"fit": {k: v for k, v in scorer.report.items() if k != "embedder"}}
        return _score_all(scorer, corpus, step_dir, ctx, summary)

    return identity, prepare


def _fitted(model_dir: Path, redo: bool, fit: Any) -> Any:
    """The scorer saved in `model_dir` (a finished fit is never redone), else `fit()` saved there."""
    from assay.selection.base import load_scorer

    if (model_dir / "scorer.json").exists() and not redo:
        return load_scorer(model_dir)
    return fit().save(model_dir)


def _mass(step: MassStep, ctx: _Context, step_dir: Path) -> Any:
    from assay.selection.mass import fit_mass

    corpus, fp = ctx.corpus(step.corpus)
    identity = {
        "corpus": fp,
        "reference": _targets_identity(step.reference),
        "embedder": _folder_id(step.embedder) if step.embedder else None,
    }

    def prepare(redo: bool) -> tuple[dict[str, str], dict[str, Any]]:
        def fit() -> Any:
            return fit_mass(
                step.reference.source, fields=step.reference.fields, tags_field=step.tags_field,
                skills=step.skills, max_items=step.reference.max_items, seed=ctx.seed(step.seed),
                progress=ctx.runner.progress, column=step.column,
                embedder={"model": step.embedder}, merge_threshold=step.merge_threshold,
                min_cooccurrence=step.min_cooccurrence, top_k=step.top_k,
                aggregation=step.aggregation,
            )  # fmt: skip

        scorer = _fitted(step_dir / "model", redo, fit)
        summary = {"fit": {k: v for k, v in scorer.report.items() if k != "embedder"}}
        return _score_all(scorer, corpus, step_dir, ctx, summary)

    return identity, prepare


def _mates(step: MatesStep, ctx: _Context, step_dir: Path) -> Any:
    from assay.workflows.mates import mates_train_config, run_mates

    corpus, heldout, identity = _mixing_identity(step, ctx)
    identity["reference"] = _targets_identity(step.reference)
    identity["embedder"] = _folder_id(step.embedder) if step.embedder else None

    def prepare(redo: bool) -> tuple[dict[str, str], dict[str, Any]]:
        result = run_mates(
            corpus, step_dir / "mates", reference=step.reference.source,
            fields=step.reference.fields, max_reference=step.reference.max_items,
            stage_tokens=step.stage_tokens, stages=step.stages, keep=step.keep, tau=step.tau,
            probes=step.probes, preset=step.preset, seed=ctx.seed(step.seed),
            tokenizer=_ref(ctx, step.tokenizer, "tokenizer"), heldout=heldout,
            eval_docs=step.eval_docs, config=mates_train_config(**step.train),
            embedder={"model": step.embedder}, method=step.method, group=step.group,
            runner=ctx.runner, progress=ctx.runner.progress,
        )  # fmt: skip
        stages = [
            {
                "stage": st.stage, "method": st.method, "kept_docs": st.kept_docs,
                "kept_tokens": st.kept_tokens, "reference_loss": st.reference_loss,
                "probes_per_second": st.probing.get("probes_per_second"),
                "spearman": st.influence_model.get("spearman"),
            }
            for st in result.stages
        ]  # fmt: skip
        summary = {"bpb": result.heldout_bpb, "reference_loss": result.reference_loss, "stages": stages}  # fmt: skip
        return {"run": result.final_run["out_dir"], "model": result.model_dir}, summary

    return identity, prepare


def _preselect(step: PreSelectStep, ctx: _Context, step_dir: Path) -> Any:
    from assay.selection.base import load_scorer
    from assay.workflows.preselect import fit_preselect

    corpus, fp = ctx.corpus(step.corpus)
    fam = step.family
    identity: dict[str, Any] = {
        "corpus": fp,
        "targets": _targets_identity(step.targets) if step.targets else None,
        "models": [{**m.model_dump(), "weights": _folder_id(m.path)} for m in fam.models],
        "family": fam.model_dump(exclude={"models"}),
        "upstream": ctx.hashes.get(fam.tokenizer or "", fam.tokenizer),
    }

    def prepare(redo: bool) -> tuple[dict[str, str], dict[str, Any]]:
        model_dir = step_dir / "model"
        if (model_dir / "scorer.json").exists() and not redo:
            scorer = load_scorer(model_dir)
        else:
            seed = ctx.seed(step.seed)
            if fam.models:
                models = [m.model_dump(exclude_none=True) for m in fam.models]
            else:
                models = _train_family(step, ctx, corpus, step_dir, seed)
            scorer = fit_preselect(
                corpus,
                models,
                targets=step.targets.source if step.targets else None,
                fields=step.targets.fields if step.targets else None,
                max_targets=step.targets.max_items if step.targets else None,
                calibration=step.calibration,
                seed=seed,
                column=step.column,
                positive_fraction=step.positive_fraction,
                params=step.params,
            ).save(model_dir)
        summary = {"fit": scorer.report}
        return _score_all(scorer, corpus, step_dir, ctx, summary)

    return identity, prepare


def _train_family(
    step: PreSelectStep, ctx: _Context, corpus: Corpus, step_dir: Path, seed: int
) -> list[dict[str, Any]]:
    """Train the proxies of the family on the corpus: one entry per model, without scores."""
    from assay.common.tokenizer import load_tokenizer, train_tokenizer
    from assay.common.tokens import TokenCache
    from assay.proxies.model import get_preset
    from assay.proxies.train import TrainConfig
    from assay.workflows.family import family_members, train_family

    fam = step.family
    tokenizer = _ref(ctx, fam.tokenizer, "tokenizer")
    if tokenizer is None:
        folder = step_dir / "family" / "tokenizer"
        if not (folder / "tokenizer.json").exists():
            train_tokenizer(corpus, get_preset(fam.preset).vocab_size, folder, seed=seed)
        tokenizer = str(folder)
    cache = TokenCache.build(corpus, load_tokenizer(tokenizer), step_dir / "family" / "tokens")
    domains = sorted(cache.domains)
    members = family_members(
        fam.vary,
        fam.n,
        tokens=fam.tokens,
        domains=domains,
        presets=fam.presets,
        preset=fam.preset,
        concentration=fam.concentration,
        seed=seed,
    )
    runs = train_family(
        cache,
        members,
        step_dir / "family",
        tokenizer=tokenizer,
        config=TrainConfig(**fam.train),
        progress=ctx.runner.progress,
    )
    return [{"path": r.model_dir, "name": m.name} for r, m in zip(runs, members, strict=True)]


def _compare(step: CompareStep, ctx: _Context, step_dir: Path) -> Any:
    identity = {"upstream": {r: ctx.hashes.get(r) for r in step.runs}}

    def prepare(redo: bool) -> tuple[dict[str, str], dict[str, Any]]:
        from assay.proxies.train import ProxyRun

        rows = {}
        for name in step.runs:
            run = ProxyRun.load(ctx.outputs[name]["run"])
            row: dict[str, float] = {f"bpb.{d}": v for d, v in sorted(run.bpb.items())}
            row["bpb.domain_mean"] = sum(run.bpb.values()) / max(len(run.bpb), 1)  # unweighted
            for task, metrics in (run.tasks or {}).items():
                for metric, value in metrics.items():
                    if isinstance(value, (int, float)):
                        row[f"task.{task}.{metric}"] = value
            rows[name] = row
        summary: dict[str, Any] = {"runs": rows}
        if step.target is not None:
            key = f"bpb.{step.target}"
            missing = [n for n, r in rows.items() if key not in r]
            if missing:
                raise ValueError(
                    f"step {step.name!r}: runs {missing} have no held-out bits per byte for "
                    f"domain {step.target!r}; add it to their heldout corpus"
                )
            best = min(rows, key=lambda n: rows[n][key])
            summary.update(target=step.target, best=best)
        write_json(step_dir / "compare.json", summary)
        return {"compare": str(step_dir / "compare.json")}, summary

    return identity, prepare


def _select(step: SelectStep, ctx: _Context, step_dir: Path) -> Any:
    from assay.selection.select import SelectConfig, select

    corpus, fp = ctx.corpus(step.corpus)
    score_dirs = [ctx.outputs[r]["scores"] if r in ctx.outputs else r for r in step.scores]
    identity = {"corpus": fp, "upstream": {r: ctx.hashes.get(r, r) for r in step.scores}}
    cfg = SelectConfig(
        column=step.column,
        policy=step.policy,
        keep=step.keep,
        by=step.by,
        mode=step.mode,
        threshold=step.threshold,
        tau=step.tau,
        seed=ctx.seed(step.seed),
        tokenizer=step.tokenizer,
        group_by=step.group_by,
        with_scores=step.with_scores,
        format=step.format,
    )

    def prepare(redo: bool) -> tuple[dict[str, str], dict[str, Any]]:
        result = select(
            corpus, score_dirs, step_dir / "selected", cfg, runner=ctx.runner, overwrite=redo
        )
        return {"selected": str(step_dir / "selected")}, result.to_dict()

    return identity, prepare


def _stats(step: StatsStep, ctx: _Context, step_dir: Path) -> Any:
    corpus, fp = ctx.corpus(step.corpus)

    def prepare(redo: bool) -> tuple[dict[str, str], dict[str, Any]]:
        stats = corpus_stats(corpus, group_by=step.group_by, runner=ctx.runner)
        write_json(step_dir / "stats.json", stats)
        return {"stats": str(step_dir / "stats.json")}, stats

    return {"corpus": fp}, prepare


def _tokenizer(step: TokenizerStep, ctx: _Context, step_dir: Path) -> Any:
    from assay.common.tokenizer import train_tokenizer

    corpus, fp = ctx.corpus(step.corpus)

    def prepare(redo: bool) -> tuple[dict[str, str], dict[str, Any]]:
        folder = step_dir / "tokenizer"
        if not (folder / "tokenizer.json").exists():
            train_tokenizer(
                corpus,
                step.vocab_size,
                folder,
                sample_docs=step.sample_docs,
                seed=ctx.seed(step.seed),
            )
        return {"tokenizer": str(folder)}, {"vocab_size": step.vocab_size}

    return {"corpus": fp}, prepare


def _ref(ctx: _Context, name: str | None, key: str) -> str | None:
    """An earlier step's output by step name, or the value itself (a path)."""
    if name is None:
        return None
    return ctx.outputs[name][key] if name in ctx.outputs else name


def _train_proxy(step: TrainProxyStep, ctx: _Context, step_dir: Path) -> Any:
    from assay.proxies.train import TrainConfig, train_proxy

    corpus, fp = ctx.corpus(step.corpus)
    heldout, heldout_fp = ctx.corpus(step.heldout) if step.heldout else (None, None)
    identity = {
        "corpus": fp,
        "heldout": heldout_fp,
        "upstream": ctx.hashes.get(step.tokenizer or "", step.tokenizer),
    }

    mixture = step.mixture
    if isinstance(mixture, str) and mixture in ctx.outputs:
        mixture = ctx.outputs[mixture]["mixture"]
        identity["mixture"] = ctx.hashes.get(step.mixture)

    def prepare(redo: bool) -> tuple[dict[str, str], dict[str, Any]]:
        run = train_proxy(
            corpus,
            mixture,
            step.tokens,
            step.preset,
            ctx.seed(step.seed),
            out_dir=step_dir / "run",
            tokenizer=_ref(ctx, step.tokenizer, "tokenizer"),
            heldout=heldout,
            eval_docs=step.eval_docs,
            config=TrainConfig(**step.train),
            tasks=step.tasks or None,
            runs_table=step.runs_table or ctx.run_dir / "runs.parquet",
            progress=ctx.runner.progress,
        )
        summary = {
            "bpb": run.bpb,
            "tasks": run.tasks,
            "params": run.params,
            "tokens": run.tokens,
            "tokens_per_second": run.tokens_per_second,
            "train_loss": run.train_loss,
            "effective_mixture": run.effective_mixture,
            "cap_note": run.data.get("cap_note"),
        }
        return {
            "run": run.out_dir,
            "model": run.model_dir,
            "runs_table": str(step.runs_table or ctx.run_dir / "runs.parquet"),
        }, summary

    return identity, prepare


def _eval(step: EvalStep, ctx: _Context, step_dir: Path) -> Any:
    heldout, heldout_fp = ctx.corpus(step.heldout) if step.heldout else (None, None)
    model_path = _ref(ctx, step.model, "model")
    identity = {"heldout": heldout_fp, "upstream": ctx.hashes.get(step.model, step.model)}

    def prepare(redo: bool) -> tuple[dict[str, str], dict[str, Any]]:
        from assay.eval import evaluate_model

        result = evaluate_model(
            model_path,
            heldout=heldout,
            tasks=step.tasks,
            gguf_file=step.gguf_file,
            eval_docs=step.eval_docs,
            limit=step.limit,
            seq_len=step.seq_len,
        )
        write_json(step_dir / "eval.json", result)
        return {"eval": str(step_dir / "eval.json")}, result

    return identity, prepare


def _token_cache(ctx: _Context, step: Any, corpus: Corpus, step_dir: Path, vocab_size: int) -> tuple[Any, str]:  # fmt: skip
    """The corpus tokenized once for a mixing step, and the tokenizer folder it used."""
    from assay.workflows.proxy_batch import token_cache_for

    tokenizer = _ref(ctx, step.tokenizer, "tokenizer")
    return token_cache_for(corpus, step_dir, tokenizer=tokenizer, vocab_size=vocab_size, seed=ctx.seed(step.seed))  # fmt: skip


def _shard_paths(corpus: Corpus | None) -> list[str] | None:
    """The files of a corpus, for proxy workers that reopen it in another process."""
    if corpus is None:
        return None
    return [str(getattr(s, "path", s.name)) for s in corpus.shards]


def _mixing_identity(step: Any, ctx: _Context) -> tuple[Corpus, Any, dict[str, Any]]:
    corpus, fp = ctx.corpus(step.corpus)
    heldout, heldout_fp = ctx.corpus(step.heldout) if getattr(step, "heldout", None) else (None, None)  # fmt: skip
    identity = {
        "corpus": fp,
        "heldout": heldout_fp,
        "upstream": ctx.hashes.get(step.tokenizer or "", step.tokenizer),
    }
    return corpus, heldout, identity


def _cluster(step: ClusterStep, ctx: _Context, step_dir: Path) -> Any:
    from assay.mixing.cluster import assign_domains, cluster_corpus, read_clusters

    corpus, fp = ctx.corpus(step.corpus)
    heldout, heldout_fp = ctx.corpus(step.heldout) if step.heldout else (None, None)
    prune_dir = _ref(ctx, step.prune.scores, "scores") if step.prune else None
    identity = {
        "corpus": fp,
        "heldout": heldout_fp,
        "embedder": _folder_id(step.embedder) if step.embedder else None,
        "upstream": ctx.hashes.get(step.prune.scores) if step.prune else None,
    }

    def prepare(redo: bool) -> tuple[dict[str, str], dict[str, Any]]:
        out = step_dir / "clusters"
        if redo or not (out / "_clusters.json").exists():
            cluster_corpus(
                corpus, out, embedder={"model": step.embedder, "long_docs": step.long_docs},
                k_init=step.k_init, sample=step.sample, merge_distance=step.merge_distance,
                n_domains=step.n_domains, min_cluster_share=step.min_cluster_share,
                prune_scores=prune_dir,
                prune_column=step.prune.column if step.prune else None,
                prune_below=step.prune.below if step.prune else None,
                seed=ctx.seed(step.seed), runner=ctx.runner, overwrite=redo,
            )  # fmt: skip
        outputs = {"corpus": str(out / "corpus"), "domains": str(out / "domains"), "clusters": str(out / "_clusters.json")}  # fmt: skip
        if heldout is not None:
            outputs["heldout"] = assign_domains(heldout, out, step_dir / "heldout", runner=ctx.runner, overwrite=redo)  # fmt: skip
        report = read_clusters(out)
        summary = {
            "k_init": report["k_init"],
            "kept_clusters": report["kept_clusters"],
            "domains": {
                d: {k: v[k] for k in ("docs", "tokens_estimate", "top_terms")}
                for d, v in report["domains"].items()
            },
        }
        return outputs, summary

    return identity, prepare


def _search(step: SearchStep, ctx: _Context, step_dir: Path) -> Any:
    from assay.proxies.model import get_preset
    from assay.workflows.search import search_mixture

    corpus, heldout, identity = _mixing_identity(step, ctx)

    def prepare(redo: bool) -> tuple[dict[str, str], dict[str, Any]]:
        cache, tokenizer = _token_cache(ctx, step, corpus, step_dir, get_preset(step.preset).vocab_size)  # fmt: skip
        result = search_mixture(
            cache.root, step_dir / "search", objective=step.objective, tokenizer=tokenizer,
            tokens=step.tokens, runs=step.runs, split=step.split, method=step.method,
            preset=step.preset, heldout=_shard_paths(heldout),
            eval_docs=step.eval_docs, tasks=step.tasks, train=step.train,
            predictor=step.predictor, candidates=step.candidates, regmix_top_k=step.regmix_top_k,
            seed=ctx.seed(step.seed), runner=ctx.runner, temperature=step.temperature,
            strengths=step.strengths, max_epochs=step.max_epochs, floor=step.floor,
        )  # fmt: skip
        metrics = [r["metric"] for r in result.runs]
        _plot_search(result, step_dir / "search" / "predicted_vs_measured.png")
        summary = {
            "method": step.method,
            "objective": step.objective,
            "mixture": result.best.to_dict(),
            "iterations": result.iterations,
            "spearman": result.spearman,
            "predictor": result.predictor,
            "best_run_metric": min(metrics),
            "median_run_metric": float(sorted(metrics)[len(metrics) // 2]),
        }
        return {
            "mixture": str(step_dir / "search" / "mixture.yaml"),
            "search": str(step_dir / "search" / "search.json"),
            "runs_table": str(step_dir / "search" / "runs.parquet"),
            "tokenizer": tokenizer,
        }, summary

    return identity, prepare


def _bimix(step: BiMixStep, ctx: _Context, step_dir: Path) -> Any:
    from assay.proxies.model import get_preset
    from assay.workflows.bimix import fit_bimix

    corpus, heldout, identity = _mixing_identity(step, ctx)
    if heldout is None:
        raise ValueError(f"step {step.name!r}: BiMix fits per-domain held-out losses; give heldout")

    def prepare(redo: bool) -> tuple[dict[str, str], dict[str, Any]]:
        cache, tokenizer = _token_cache(ctx, step, corpus, step_dir, get_preset(step.preset).vocab_size)  # fmt: skip
        fit = fit_bimix(
            cache.root, step_dir / "bimix", tokenizer=tokenizer, tokens=step.tokens,
            heldout=_shard_paths(heldout), runs=step.runs, evals=step.evals, budget=step.budget,
            budgets=step.budgets, weights=step.weights, preset=step.preset,
            eval_docs=step.eval_docs, train=step.train, concentration=step.concentration,
            min_share=step.min_share,
            seed=ctx.seed(step.seed), runner=ctx.runner,
        )  # fmt: skip
        q = fit.quality
        _plot_bimix(fit, step_dir / "bimix")
        summary = {
            "mixture": fit.mixture.to_dict(),
            "budget": fit.budget,
            "predicted": fit.predicted,
            "law": fit.law.to_dict(),
            "extrapolation_mean_rel_error": {
                d: v["mean_rel_error"] for d, v in q["extrapolation"].items()
            },
            "heldout_r2": q.get("heldout_r2"),
            "budget_curve": [{"tokens": c["s"], "total": c["total"]} for c in fit.curve],
        }
        return {
            "mixture": str(step_dir / "bimix" / "mixture.yaml"),
            "law": str(step_dir / "bimix" / "law.json"),
            "fit": str(step_dir / "bimix" / "fit.json"),
            "tokenizer": tokenizer,
        }, summary

    return identity, prepare


def _plot_search(result: Any, path: Path) -> None:
    """The search predictor's out-of-fold predictions against the measured runs, as a PNG."""
    import numpy as np

    from assay.common.mixture import Mixture
    from assay.mixing.predictors import out_of_fold
    from assay.report import plot_predicted_vs_measured

    domains = sorted(result.best)
    X = np.vstack([Mixture(r["mixture"]).vector(domains) for r in result.runs])
    y = np.array([r["metric"] for r in result.runs])
    pred = out_of_fold(result.predictor, X, y, folds=min(5, len(y)))
    label = f"{result.predictor} (out-of-fold)"
    plot_predicted_vs_measured({label: (pred, y)}, path, metric=result.objective)


def _plot_bimix(fit: Any, folder: Path) -> None:
    import polars as pl

    from assay.report import plot_bimix_fits

    points = pl.read_parquet(folder / "points.parquet").to_dict(as_series=False)
    plot_bimix_fits(points, fit.law, folder / "fits.png")


def _mixture(step: MixtureStep, ctx: _Context, step_dir: Path) -> Any:
    from assay.mixing.baselines import baseline_mixture

    corpus, fp = ctx.corpus(step.corpus)
    identity = {"corpus": fp, "upstream": ctx.hashes.get(step.tokenizer or "", step.tokenizer)}

    def prepare(redo: bool) -> tuple[dict[str, str], dict[str, Any]]:
        cache, _ = _token_cache(ctx, step, corpus, step_dir, step.vocab_size)
        mix, info = baseline_mixture(
            step.method, cache, temperature_t=step.t, budget=step.budget,
            max_epochs=step.max_epochs, entropy=step.entropy, seed=ctx.seed(step.seed),
        )  # fmt: skip
        mix.save(step_dir / "mixture.yaml")
        write_json(step_dir / "mixture.json", {"method": step.method, "mixture": mix.to_dict(), **info})  # fmt: skip
        return {"mixture": str(step_dir / "mixture.yaml")}, {"method": step.method, "mixture": mix.to_dict(), **info}  # fmt: skip

    return identity, prepare


_EXECUTORS: dict[type, Any] = {
    DemoCorpusStep: _demo_corpus,
    ScoreStep: _score,
    SelectStep: _select,
    StatsStep: _stats,
    TokenizerStep: _tokenizer,
    TrainProxyStep: _train_proxy,
    EvalStep: _eval,
    BETRStep: _betr,
    PreSelectStep: _preselect,
    CompareStep: _compare,
    ClusterStep: _cluster,
    SearchStep: _search,
    BiMixStep: _bimix,
    MixtureStep: _mixture,
    MassStep: _mass,
    MatesStep: _mates,
}
