"""Local multiple-choice benchmark tasks for lm-eval, built from real items installed with pip.

Nothing here is downloaded: the items come from packages already on the machine.

- `assay_mmlu_dev`: the MMLU dev exemplars (57 subjects) that lm-eval ships inside its own
  chain-of-thought prompt file, parsed into question, four options and the answer.
- `assay_champ`: competition math problems from `champ-dataset`; the options are the true answer
  and three answers of other problems of the same category (chance is 25%).

Tiny proxies sit at chance on accuracy, so every task also reports continuous metrics (DataDecide
found these predict larger-scale rankings far better): `logprob` (log-likelihood of the correct
option), `prob_norm` (its probability among the options) and `acc_norm`.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from assay.errors import DependencyError
from assay.util.files import atomic_path

TASKS = ("assay_mmlu_dev", "assay_champ")
#: one line per task (`assay list tasks`)
TASK_DESCRIPTIONS = {
    "assay_mmlu_dev": "MMLU's dev exemplars (57 subjects, four options) as shipped inside lm-eval.",
    "assay_champ": "Competition math problems of champ-dataset; the wrong options are answers "
    "of other problems of the same category.",
}
LETTERS = "ABCD"

# lm-eval imports this file (next to the YAML files) for `process_results`.
METRICS_SOURCE = '''"""Per-item metrics for assay's local multiple-choice tasks (written by assay)."""

import math


def process_results(doc, results):
    lls = [r[0] for r in results]
    gold = int(doc["answer"])
    choices = doc["choices"]
    best = max(range(len(lls)), key=lambda i: lls[i])
    norm = [ll / max(len(c), 1) for ll, c in zip(lls, choices)]
    best_norm = max(range(len(norm)), key=lambda i: norm[i])
    top = max(lls)
    z = sum(math.exp(ll - top) for ll in lls)
    return {
        "acc": float(best == gold),
        "acc_norm": float(best_norm == gold),
        "logprob": lls[gold],
        "prob_norm": math.exp(lls[gold] - top) / z,
    }
'''

YAML_TEMPLATE = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{prompt}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
process_results: !function assay_task_metrics.process_results
metric_list:
  - {{metric: acc, aggregation: mean, higher_is_better: true}}
  - {{metric: acc_norm, aggregation: mean, higher_is_better: true}}
  - {{metric: logprob, aggregation: mean, higher_is_better: true}}
  - {{metric: prob_norm, aggregation: mean, higher_is_better: true}}
metadata:
  version: 1.0
"""

PROMPTS = {
    "assay_mmlu_dev": "Question: {{question}}\\nAnswer:",
    "assay_champ": "Problem: {{question}}\\nAnswer:",
}


def package_file(package: str, *parts: str, extra: str = "eval") -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DependencyError(
            f"building this task needs the package {package!r}: pip install 'assay[{extra}]'"
        )
    return Path(next(iter(spec.submodule_search_locations)), *parts)


_ITEM = re.compile(
    r"Q: (?P<q>.*?)\n\(A\) (?P<a>.*?) \(B\) (?P<b>.*?) \(C\) (?P<c>.*?) \(D\) (?P<d>.*?)\n"
    r"A: .*?The answer is \((?P<ans>[ABCD])\)",
    re.S,
)


def mmlu_dev_items() -> list[dict[str, Any]]:
    """Question, four choices and answer index of every MMLU dev exemplar lm-eval ships."""
    prompts = json.loads(
        package_file(
            "lm_eval", "tasks", "mmlu", "flan_cot_fewshot", "_cot_prompts.json"
        ).read_text()
    )
    items = []
    for subject in sorted(prompts):
        for m in _ITEM.finditer(prompts[subject]):
            choices = [m.group(k).strip() for k in "abcd"]
            question = " ".join(m.group("q").split())
            if not question or any(not c or "\n" in c for c in choices):
                continue
            items.append(
                {
                    "subject": subject,
                    "question": question,
                    "choices": choices,
                    "answer": LETTERS.index(m.group("ans")),
                }
            )
    return items


def champ_items(seed: int = 0) -> list[dict[str, Any]]:
    """Competition problems with their answer and three same-category distractor answers."""
    data = json.loads(
        package_file("champ_dataset", "dataset_files", "v0.json", extra="demo").read_text()
    )
    problems = [p for _, p in sorted(data["problems"].items()) if str(p.get("_answer", "")).strip()]
    by_cat: dict[str, list[str]] = {}
    for p in problems:
        by_cat.setdefault(p["category"], []).append(str(p["_answer"]).strip())
    rng = np.random.default_rng(seed)
    items = []
    for p in problems:
        answer = str(p["_answer"]).strip()
        pool = sorted({a for a in by_cat[p["category"]] if a != answer})
        if len(pool) < 3:
            continue
        distractors = [pool[i] for i in rng.choice(len(pool), 3, replace=False)]
        choices = [answer, *distractors]
        order = rng.permutation(4)
        shuffled = [choices[i] for i in order]
        items.append(
            {
                "id": p["identifier"],
                "question": " ".join(p["_text"].split()),
                "choices": shuffled,
                "answer": int(np.flatnonzero(order == 0)[0]),
            }
        )
    return items


def build_tasks(out_dir: str | Path) -> Path:
    """Write the task YAML files, their JSONL data and the metrics module into `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sources = {"assay_mmlu_dev": mmlu_dev_items, "assay_champ": champ_items}
    for name, make in sources.items():
        items = make()
        if not items:
            raise ValueError(f"no items could be built for task {name}")
        data = out / f"{name}.jsonl"
        with atomic_path(data) as tmp:
            tmp.write_text("".join(json.dumps(i) + "\n" for i in items))
        with atomic_path(out / f"{name}.yaml") as tmp:
            tmp.write_text(
                YAML_TEMPLATE.format(name=name, data=data.resolve(), prompt=PROMPTS[name])
            )
    with atomic_path(out / "assay_task_metrics.py") as tmp:
        tmp.write_text(METRICS_SOURCE)
    return out


def default_task_dir() -> Path:
    import os

    root = Path(os.environ.get("ASSAY_CACHE", Path.home() / ".cache" / "assay"))
    return root / "tasks"
