"""Execute a recipe in a self-describing run directory, or one step in a folder of its own.

    runs/<name>/
      recipe.yaml        the resolved recipe (defaults filled in, overrides applied)
      env.json           python, platform, package versions, seed, command
      inputs.json        fingerprints of every input shard a step read
      <step>/step.json   the step's config hash, status, time, outputs and summary
      <step>/...         the step's artifacts (model/, scores/, selected/, stats.json)

Re-running skips finished work: every step is resumable on its own, and a step whose
configuration (or whose inputs) changed since the last run is cleared and redone, together with
what depends on it. `overwrite=True` redoes everything.

The run directory is assay's own: it is refused if it equals, holds or lies inside any input of
the recipe, locked while a run writes it, and a step folder is deleted (to redo the step) only
if it lies inside the run directory and carries assay's marker.

`run_step` runs one step the same way in a folder of its own (what the command line's verbs
do): the folder is laid out as the step's folder in a run directory.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from assay.errors import ConfigError
from assay.exec.runner import Runner, make_runner
from assay.io.corpus import Corpus
from assay.io.hub import is_hf_dataset
from assay.recipe.recipe import Recipe, dump_recipe, load_recipe
from assay.recipe.spec import CorpusSpec
from assay.recipe.step import STEPS, Step
from assay.util.files import atomic_path, package_versions, read_json, write_json
from assay.util.guard import (
    MARKER,
    UnsafeOutputError,
    check_output,
    check_writable_folder,
    folder_lock,
    is_assay_output,
    safe_clear,
)
from assay.util.hashing import config_hash
from assay.util.remote import is_remote, local_path

log = logging.getLogger(__name__)

STEP_FILE = "step.json"
_VERSIONED = [
    "assay",
    "numpy",
    "polars",
    "pyarrow",
    "pydantic",
    "fasttext-numpy2",
    "ray",
    "datasets",
    "tokenizers",
    "torch",
    "transformers",
]


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


def step_output(folder: str | os.PathLike, output: str) -> str | None:
    """An output of the step whose folder this is (a folder holding step.json), or None."""
    state = Path(folder) / STEP_FILE
    if not state.is_file():
        return None
    recorded = read_json(state).get("outputs", {}).get(output)
    if recorded is None or Path(recorded).exists():
        return recorded
    moved = Path(folder) / Path(recorded).name  # the folder was moved (or is a remote mirror)
    return str(moved) if moved.exists() else recorded


def _remote_step_kind(url: str) -> str | None:
    from assay.util.remote import filesystem

    fs, path = filesystem(url)
    if any(ch in path for ch in "*?[") or not fs.exists(f"{path}/{STEP_FILE}"):
        return None
    return json.loads(fs.cat_file(f"{path}/{STEP_FILE}")).get("kind")


def _remote_step_output(url: str, output: str | None) -> str | None:
    """The URL of an output of the step whose remote folder this is, or None."""
    from assay.util.remote import filesystem, remote_of

    fs, path = filesystem(url)
    if output is None or not fs.exists(f"{path}/{STEP_FILE}"):
        return None
    recorded = json.loads(fs.cat_file(f"{path}/{STEP_FILE}")).get("outputs", {}).get(output)
    if recorded is None:
        return None
    return remote_of(recorded) or f"{url.rstrip('/')}/{Path(recorded).name}"


class StepContext:
    """What a step's plan reads: corpora, earlier steps' outputs, the seed, the runner, and the
    folder it writes (`step_dir`). `root` is the area the run owns: nothing it reads may lie
    there, except in the folder of an earlier step."""

    def __init__(
        self,
        root: Path,
        runner: Runner,
        *,
        overwrite: bool = False,
        seed: int = 0,
        corpus: CorpusSpec | None = None,
    ):
        self.root = self.run_dir = self.step_dir = root
        self.runner, self.overwrite, self.base_seed, self.default_corpus = (
            runner,
            overwrite,
            seed,
            corpus,
        )
        self.hashes: dict[str, str] = {}
        self.outputs: dict[str, dict[str, str]] = {}
        self.kinds: dict[str, str] = {}
        self.inputs: dict[str, Any] = {}

    def seed(self, step_seed: int | None) -> int:
        return self.base_seed if step_seed is None else step_seed

    def is_step(self, name: str) -> bool:
        return name in self.outputs

    def ref(self, value: str | None, output: str) -> str | None:
        """An earlier step's output by step name; a step folder's output (a folder written by
        `assay VERB --out`); or the value itself (a path)."""
        if value is None:
            return None
        if value in self.outputs:
            return self.outputs[value][output]
        if is_remote(value):  # a remote folder: read through its local mirror
            value = local_path(value, must_exist=True)
        return step_output(value, output) or value

    def upstream(self, value: str | None) -> Any:
        """What a step's identity records of an input that may be an earlier step: its hash."""
        return self.hashes.get(value, value) if value else None

    def corpus(self, spec: CorpusSpec | None) -> tuple[Corpus, list[dict[str, Any]]]:
        spec = spec or self.default_corpus
        assert spec is not None  # the recipe validator (or the command line) guarantees it
        if spec.step is not None:
            outputs = self.outputs[spec.step]
            output = spec.output or STEPS[self.kinds[spec.step]].corpus_output
            if output not in outputs:
                raise ConfigError(
                    f"step {spec.step!r} has no output {output!r}; it has {sorted(outputs)}"
                )
            corpus = spec.open([outputs[output]])
        else:
            corpus = self.external(spec.open(self._corpus_paths(spec.paths)))
        fp = corpus.fingerprint()
        for entry in fp:
            self.inputs[entry.get("path", entry["name"])] = entry
        return corpus, fp

    @staticmethod
    def _corpus_paths(paths: list[str]) -> list[str]:
        """Paths as given, a step folder (`assay select ... --out sel`) standing for its corpus."""
        out = []
        for p in paths:
            if is_remote(p):
                kind = _remote_step_kind(p)
                output = STEPS[kind].corpus_output if kind in STEPS else None
                out.append(_remote_step_output(p, output) or p)
                continue
            state = Path(p) / STEP_FILE
            kind = read_json(state).get("kind") if state.is_file() else None
            output = STEPS[kind].corpus_output if kind in STEPS else None
            out.append((step_output(p, output) if output else None) or p)
        return out

    def external(self, corpus: Corpus) -> Corpus:
        """A corpus given by path: the run must not write over, into or around it.

        A path inside the run's area is accepted only in the folder of an earlier step (a step
        may read what another wrote); never in the folder of the step that reads it, which is
        cleared when the step is redone.
        """
        root = Path(os.path.realpath(self.root))
        for raw in corpus.input_paths():
            path = Path(os.path.realpath(raw))
            if not path.is_relative_to(root) or path == root:
                check_output(self.root, [raw], "run directory")
                continue
            top = root / path.relative_to(root).parts[0]
            if top == Path(os.path.realpath(self.step_dir)) or not (
                (top / STEP_FILE).exists() or (top / MARKER).exists()
            ):
                raise UnsafeOutputError(
                    f"{raw} lies inside the run directory {self.root} but not in the folder "
                    "of an earlier step: the run could write over it; move it out of the run"
                )
        return corpus


def check_step_folder(step_dir: Path, kind: str) -> None:
    """A step writes only into a new or empty folder, or one holding a step of its kind: never
    over files assay did not write, nor over another step's (or command's) outputs."""
    check_writable_folder(step_dir)
    if not step_dir.is_dir() or not any(not p.name.startswith(".") for p in step_dir.iterdir()):
        return
    state = step_dir / STEP_FILE
    marker = step_dir / MARKER
    found = (
        read_json(state).get("kind")
        if state.is_file()
        else read_json(marker).get("step")
        if marker.is_file()
        else None
    )
    if found != kind:
        what = f"a {found} step's outputs" if found else "outputs of another assay command"
        raise UnsafeOutputError(
            f"{step_dir} holds {what}, not a {kind} step's; choose a new or empty folder"
        )


def execute(
    step: Step, ctx: StepContext, step_dir: Path, within: Path, *, redo_changed: bool = True
) -> StepOutcome:
    """Run one step in `step_dir`: plan it, clear its folder if its settings or inputs changed
    (only inside `within`; with `redo_changed=False` a change is refused instead, unless
    overwriting), run it (resumable) and record step.json."""
    check_step_folder(step_dir, step.kind)
    ctx.step_dir = step_dir
    t0 = time.perf_counter()
    # The step's identity: its config, the seed, the upstream steps it reads, its inputs.
    identity, run = step.plan(ctx)
    h = config_hash({"step": step.model_dump(mode="json"), "seed": ctx.base_seed, **identity})
    ctx.hashes[step.name] = h
    state_path = step_dir / STEP_FILE
    previous = read_json(state_path) if state_path.exists() else None
    changed = previous is not None and previous.get("hash") != h
    if changed and not redo_changed and not ctx.overwrite:
        raise UnsafeOutputError(
            f"{step_dir} holds a {step.kind} step made with other settings or inputs; use "
            "--overwrite to redo it there, or another folder"
        )
    if ctx.overwrite or changed:
        safe_clear(step_dir, within=within)
    if not (step_dir / MARKER).exists():
        write_json(step_dir / MARKER, {"made_by": "assay", "kind": "step", "step": step.kind})
    reused = not (ctx.overwrite or changed) and (previous or {}).get("status") == "done"
    why = "redo: settings or inputs changed" if changed else "overwrite" if ctx.overwrite else ""
    named = f"{step.name} ({step.kind})" if step.name and step.name != step.kind else step.kind
    log.info("step %s: start%s", named, f" ({why})" if why else "")
    outputs, summary = run(ctx.overwrite or changed)
    ctx.outputs[step.name], ctx.kinds[step.name] = outputs, step.kind
    seconds = time.perf_counter() - t0
    log.info(
        "step %s: %s in %.1f s -> %s",
        named,
        "reused (finished before)" if reused else "done",
        seconds,
        ", ".join(f"{k} {v}" for k, v in outputs.items()) or "no outputs",
    )
    state = {
        "hash": h,
        "kind": step.kind,
        "status": "done",
        "seconds": round(seconds, 3),
        "outputs": outputs,
        "summary": summary,
    }
    write_json(state_path, state)
    status = "reused" if reused else "ran"
    return StepOutcome(step.name, step.kind, status, seconds, outputs, summary)


# ---------------------------------------------------------------------------------------------
# Recipes


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
        raise ConfigError("overrides apply to recipe files; edit the Recipe object instead")
    given = os.fspath(run_dir) if run_dir else recipe.resolved_run_dir
    for path in _external_paths(recipe):  # before the run directory is created
        if (
            is_remote(path)
            or is_remote(given)
            or not Path(os.path.realpath(path)).is_relative_to(os.path.realpath(given))
        ):
            check_output(given, [path], "run directory")
    root = Path(local_path(given))  # a remote run directory: its mirror, published file by file
    _check_run_dir(root)
    with folder_lock(root):
        if not (root / MARKER).exists():
            write_json(root / MARKER, {"made_by": "assay", "kind": "run"})
        runner = runner or make_runner(
            recipe.runner.kind, recipe.runner.workers, recipe.runner.address, progress=progress
        )
        return _run(recipe, root, overwrite, runner)


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


def _external_paths(recipe: BaseModel) -> list[str]:
    """Every corpus path a recipe (or a step) names (the fixed part of a glob), wherever it is
    declared.

    Paths inside the run directory are checked when the step that reads them runs.
    """
    found: list[str] = []

    def visit(node: Any) -> None:
        if isinstance(node, CorpusSpec):
            for p in node.paths:
                if is_hf_dataset(p):  # a dataset by name: its files are in the datasets cache
                    continue
                found.append(p[: min((p.index(c) for c in "*?[" if c in p), default=len(p))] or ".")
        elif isinstance(node, BaseModel):
            for name in type(node).model_fields:
                visit(getattr(node, name))
        elif isinstance(node, list | tuple):
            for item in node:
                visit(item)

    visit(recipe)
    return found


def _run(recipe: Recipe, root: Path, overwrite: bool, runner: Runner) -> RunOutcome:
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
    ctx = StepContext(root, runner, overwrite=overwrite, seed=recipe.seed, corpus=recipe.corpus)
    outcome = RunOutcome(root, recipe)
    log.info("recipe %s: %d steps in %s", recipe.name, len(recipe.steps), root)
    for step in recipe.steps:
        outcome.steps.append(execute(step, ctx, root / step.name, within=root))
        write_json(root / "inputs.json", ctx.inputs)
    log.info("recipe %s: finished", recipe.name)
    return outcome


# ---------------------------------------------------------------------------------------------
# One step in a folder of its own (the command line's verbs)


def _reference_values(step: Step) -> list[str]:
    """The values of a step's fields that may name earlier steps: here, paths it reads."""
    from assay.recipe.recipe import field_values

    return [v for dotted in step.references for v in field_values(step, dotted)]


def run_step(
    step: Step,
    folder: str | os.PathLike,
    *,
    corpus: CorpusSpec | None = None,
    runner: Runner | None = None,
    overwrite: bool = False,
    seed: int = 0,
    progress: bool = True,
) -> StepOutcome:
    """Run one step with `folder` as its step folder: the same work, resume and layout as the
    step has in a run directory. `corpus` is the corpus of a step that reads one; names of
    earlier steps are paths here (an output, or a step folder holding it)."""
    if step.reads_corpus and getattr(step, "corpus", None) is None and corpus is None:
        raise ConfigError(f"the {step.kind} step needs a corpus")
    # before the folder is created: it must not touch what the step reads
    inputs = _external_paths(step) + (_external_paths(corpus) if corpus else [])
    inputs += [v for v in _reference_values(step) if is_remote(v) or Path(v).exists()]
    check_output(folder, inputs, "output folder")
    out = Path(local_path(folder))  # a remote folder: its mirror, published file by file
    runner = runner or make_runner("local", 1, progress=progress)
    ctx = StepContext(out, runner, overwrite=overwrite, seed=seed, corpus=corpus)
    with folder_lock(out):
        return execute(step, ctx, out, within=out.resolve().parent, redo_changed=False)
