"""compare: the held-out metrics of several proxy runs side by side."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field
from rich.table import Table

from assay.errors import ConfigError
from assay.recipe.step import Step, kinds_with, register_step
from assay.util.files import write_json


@register_step
class CompareStep(Step):
    """Print and save the held-out metrics of several train_proxy (or mates) steps."""

    outputs = ("compare",)
    references: ClassVar[dict[str, str]] = {"runs": "run"}
    reads_corpus = False

    kind: Literal["compare"] = "compare"
    runs: list[str] = Field(description="Earlier train_proxy or mates steps.")
    target: str | None = Field(None, description="The domain the comparison is about.")

    def check_recipe(self, earlier: dict[str, type[Step]]) -> None:
        for ref in self.runs:
            if ref not in earlier or "run" not in earlier[ref].outputs:
                raise ValueError(
                    f"step {self.name!r}: runs entry {ref!r} is not an earlier "
                    f"{' or '.join(kinds_with('run'))} step"
                )

    def plan(self, ctx: Any) -> Any:
        identity = {"upstream": {r: ctx.upstream(r) for r in self.runs}}

        def run(redo: bool) -> tuple[dict[str, str], dict[str, Any]]:
            rows = {name: _row(ctx.ref(name, "run")) for name in self.runs}
            summary: dict[str, Any] = {"runs": rows}
            if self.target is not None:
                key = f"bpb.{self.target}"
                missing = [n for n, r in rows.items() if key not in r]
                if missing:
                    raise ConfigError(
                        f"step {self.name!r}: runs {missing} have no held-out bits per byte for "
                        f"domain {self.target!r}; add it to their heldout corpus"
                    )
                best = min(rows, key=lambda n: rows[n][key])
                summary.update(target=self.target, best=best)
            write_json(ctx.step_dir / "compare.json", summary)
            return {"compare": str(ctx.step_dir / "compare.json")}, summary

        return identity, run

    @classmethod
    def show(cls, outcome: Any, console: Any) -> None:
        summary = outcome.summary
        r = summary
        cols = sorted(
            {k for row in r["runs"].values() for k in row},
            key=lambda c: (c == "bpb.domain_mean", c),
        )
        title = f"{outcome.name}: held-out bits per byte" + (
            f", target {r['target']}" if r.get("target") else ""
        )
        t = Table(title=title)
        t.add_column("run")
        for c in cols:
            t.add_column(c.removeprefix("bpb."))
        for run_name, row in r["runs"].items():
            label = f"{run_name} (best)" if run_name == r.get("best") else run_name
            t.add_row(label, *(f"{row[c]:.4g}" if c in row else "" for c in cols))
        console.print(t)


def _row(run_dir: str) -> dict[str, float]:
    from assay.proxies.train import ProxyRun

    run = ProxyRun.load(run_dir)
    row: dict[str, float] = {f"bpb.{d}": v for d, v in sorted(run.bpb.items())}
    row["bpb.domain_mean"] = sum(run.bpb.values()) / max(len(run.bpb), 1)  # unweighted
    for task, metrics in (run.tasks or {}).items():
        for metric, value in metrics.items():
            if isinstance(value, int | float):
                row[f"task.{task}.{metric}"] = value
    return row
