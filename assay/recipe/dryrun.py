"""A recipe's dry run: what each step will do, what it reads and writes, and an estimate of its
compute, from the recipe alone (`plan_recipe(recipe) -> Plan`; `assay run --dry-run`).

Nothing is read but the recipe and nothing is written: sizes the recipe cannot tell (the
corpus', a model's named by path) come from its `scale` header or the command line's flags, and
where they are unknown the estimate says so instead of guessing.

- Training a language model: FLOPs = 6 x N x D (N: parameters, the tied embedding counted once,
  as the output layer; D: tokens); with `attention`, 6 x layers x seq_len x d_model more per
  token (Kaplan et al. 2020, the QK^T and AV products).
- A forward pass (scoring, reference losses): 2 x N x D (and 2 x layers x seq_len x d_model).
- GPU-hours = FLOPs / (peak FLOP/s x MFU) / 3600, for the `Hardware` stated in the output.
- Work that is not a language model's (fastText, n-grams, hashing, sorting, k-means) is "CPU,
  linear in the corpus", with no number: there is no sound FLOP count for it.

The estimates of each step kind are in `assay.recipe.costs`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from assay.recipe.costs import Cost, Env, Hardware, step_costs
from assay.recipe.recipe import Recipe, field_values
from assay.recipe.spec import CorpusSpec, Scale
from assay.recipe.step import Step


@dataclass
class StepPlan:
    name: str
    kind: str
    does: str
    reads: list[str]
    writes: list[str]
    costs: list[Cost]

    @property
    def flops(self) -> float:
        return sum(c.flops for c in self.costs if c.flops is not None)


@dataclass
class Plan:
    """A recipe's plan: its steps in order, each with what it reads, writes and costs."""

    recipe: str
    run_dir: str
    hardware: Hardware
    scale: Scale
    steps: list[StepPlan] = field(default_factory=list)

    @property
    def total_flops(self) -> float:
        return sum(s.flops for s in self.steps)

    @property
    def gpu_hours(self) -> float:
        return self.hardware.gpu_hours(self.total_flops)

    @property
    def unestimated(self) -> list[str]:
        """Steps with language-model work whose size the recipe does not tell."""
        return [s.name for s in self.steps if any(c.flops is None and not c.cpu for c in s.costs)]

    @property
    def cpu_steps(self) -> list[str]:
        """Steps with CPU work (linear in the corpus; no FLOP count)."""
        return [s.name for s in self.steps if any(c.cpu for c in s.costs)]

    def lines(self) -> list[str]:
        """The plan as text (what `assay run --dry-run` prints)."""
        hw = self.hardware
        attention = "with" if hw.attention else "without"
        out = [
            f"recipe {self.recipe}: dry run (nothing read or written); run directory "
            f"{self.run_dir}",
            f"  compute: training 6 x N x D FLOPs, forward passes 2 x N x D ({attention} "
            "attention); N = parameters (the tied embedding once), D = tokens",
            f"  GPU-hours at {hw.mfu:.0%} MFU of {hw.gpu}, {hw.peak_tflops:g} TFLOP/s peak: "
            f"{hw.peak_tflops * hw.mfu:g} TFLOP/s effective",
            f"  corpus: {_size(self.scale.corpus_docs, 'documents', 'docs')}, "
            f"{_size(self.scale.corpus_tokens, 'tokens', 'tokens')}",
        ]
        for i, s in enumerate(self.steps, 1):
            out.append(f"{i}. {s.name} ({s.kind}): {s.does}")
            out.append(f"   reads: {'; '.join(s.reads) or 'nothing'}")
            out.append(f"   writes: {'; '.join(s.writes) or 'nothing'}")
            for c in s.costs:
                out.append(f"   - {c.what}: {self._cost_text(c)}")
        total = self.total_flops
        out.append(
            f"total: {total:.3g} FLOPs = {_hours(self.gpu_hours)} GPU-hours ({hw.gpu}, "
            f"{hw.mfu:.0%} MFU)"
        )
        if self.cpu_steps:
            out.append(f"  CPU work, not in the total: {', '.join(self.cpu_steps)}")
        if self.unestimated:
            out.append(
                f"  unknown sizes, not in the total (see the scale header): "
                f"{', '.join(self.unestimated)}"
            )
        return out

    def _cost_text(self, c: Cost) -> str:
        tokens = f"{c.tokens:.3g} tokens; " if c.tokens is not None else ""
        if not c.flops:
            return f"{tokens}{c.formula}"
        hours = _hours(self.hardware.gpu_hours(c.flops))
        return f"{tokens}{c.formula} = {c.flops:.3g} FLOPs, {hours} GPU-hours"


def _size(n: int | None, unit: str, key: str) -> str:
    return f"{n:,} {unit}" if n else f"{unit} unknown (scale.corpus_{key} or --corpus-{key})"


def _hours(h: float) -> str:
    return f"{h:,.1f}" if h >= 0.1 else f"{h:.2g}"


def plan_recipe(
    recipe: Recipe, *, hardware: Hardware | None = None, scale: Scale | None = None
) -> Plan:
    """The plan of a recipe and an estimate of its compute; reads and writes nothing.
    `scale` replaces the recipe's own (`recipe.scale`), field by field where it sets one."""
    hardware = hardware or Hardware()
    merged = (recipe.scale or Scale()).model_dump()
    if scale is not None:
        merged.update(scale.model_dump(exclude_unset=True))
    plan = Plan(recipe.name, recipe.resolved_run_dir, hardware, Scale(**merged))
    vocab = {s.name: s.vocab_size for s in recipe.steps if s.kind == "tokenizer"}
    env = Env(hardware, plan.scale, vocab, recipe.corpus)
    for step in recipe.steps:
        plan.steps.append(
            StepPlan(
                step.name,
                step.kind,
                _does(step),
                _reads(step, recipe),
                [f"{plan.run_dir}/{step.name}/ ({', '.join(type(step).outputs) or 'a summary'})"],
                step_costs(step, env),
            )
        )
    return plan


def _does(step: Step) -> str:
    doc = (type(step).__doc__ or "").strip()
    return " ".join(doc.split("\n\n")[0].split())


def _corpus_text(spec: CorpusSpec | None, recipe: Recipe) -> str | None:
    if spec is None:
        return None
    if spec.step is not None:
        return f"step {spec.step}'s {spec.output or 'corpus'}"
    return ", ".join(spec.paths)


def _reads(step: Step, recipe: Recipe) -> list[str]:
    reads = []
    if step.reads_corpus:
        own = getattr(step, "corpus", None)
        corpus = _corpus_text(own if isinstance(own, CorpusSpec) else recipe.corpus, recipe)
        reads.append(f"corpus {corpus}")
    heldout = getattr(step, "heldout", None)
    if isinstance(heldout, CorpusSpec):
        reads.append(f"held-out {_corpus_text(heldout, recipe)}")
    for name in ("targets", "reference"):
        spec = getattr(step, name, None)
        if spec is not None and hasattr(spec, "source"):
            reads.append(f"{name} {spec.source}")
    for dotted in step.references:
        for value in field_values(step, dotted):
            if value not in ("natural", "uniform"):
                reads.append(f"{dotted} {value}")
    return reads
