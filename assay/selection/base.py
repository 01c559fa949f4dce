"""The Scorer protocol and the registry that lets recipes and the CLI name scorers.

A scorer is an estimator in the scikit-learn sense: `fit(...) -> self`, then
`score(texts) -> float32 array`, one value per text, higher meaning "keep". It never touches
corpora; `assay.scores.score_corpus` runs any scorer over a corpus through the runner.

Saved scorers are folders: `scorer.json` (the registered type and the constructor config) plus
whatever state the scorer writes (a fastText `.bin`, safetensors weights, ...). Nothing is ever
unpickled from a scorer folder.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from assay.util.files import read_json, write_json
from assay.util.guard import check_writable_folder

SCORER_FILE = "scorer.json"

_REGISTRY: dict[str, type[Scorer]] = {}

# Built-in scorers are imported on first use so that `import assay` stays light.
_BUILTIN_MODULES = {
    "fasttext": "assay.selection.fasttext",
    "doc_stats": "assay.selection.doc_stats",
    "perplexity": "assay.selection.perplexity",
    "random": "assay.selection.random_scorer",
    "betr": "assay.selection.betr",
    "preselect": "assay.selection.preselect",
    "mass": "assay.selection.mass",
    "mates": "assay.selection.mates",
}


class Scorer:
    """Base class: subclasses implement `score` and, if they learn, `fit` and the state hooks."""

    #: the registered type name, set by `register_scorer`
    kind: ClassVar[str] = ""

    def __init__(self, column: str | None = None):
        self.column = column or self.kind
        self.path: str | None = None  # the folder this scorer was saved to or loaded from

    # -- estimator API -------------------------------------------------------------------------
    def fit(self, *args: Any, **kwargs: Any) -> Scorer:
        return self

    def score(self, texts: Sequence[str]) -> np.ndarray:
        raise NotImplementedError

    @property
    def columns(self) -> list[str]:
        """The side-car columns `score_table` produces."""
        return [self.column]

    def score_table(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """All output columns for a batch; most scorers have exactly one."""
        return {self.column: self.score(texts)}

    # -- persistence ---------------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        """JSON-able constructor arguments; `type(self)(**config)` rebuilds the unfitted scorer."""
        return {"column": self.column}

    @property
    def is_fitted(self) -> bool:
        return True

    @property
    def portable(self) -> bool:
        """Whether this object can be pickled to another process as it is."""
        return True

    def save(self, path: str | os.PathLike) -> Scorer:
        if not self.is_fitted:
            raise RuntimeError(f"{type(self).__name__} must be fitted before it is saved")
        folder = Path(path)
        if not (folder / SCORER_FILE).exists():
            check_writable_folder(folder)  # never mix a model into a folder of other files
        folder.mkdir(parents=True, exist_ok=True)
        self._save_state(folder)
        from assay import __version__

        write_json(
            folder / SCORER_FILE,
            {
                "type": self.kind,
                "config": self.get_config(),
                "columns": self.columns,
                "assay_version": __version__,
            },
        )
        self.path = str(folder.resolve())
        return self

    @classmethod
    def load(cls, path: str | os.PathLike) -> Scorer:
        return load_scorer(path)

    def _save_state(self, folder: Path) -> None:
        """Write learned state into `folder` (nothing for stateless scorers)."""

    def _load_state(self, folder: Path) -> None:
        """Read learned state back from `folder`."""

    # A saved scorer crosses process boundaries as its folder path: workers load it once each.
    def __reduce_ex__(self, protocol: Any) -> Any:
        if self.path is not None:
            return (_load_cached, (self.path,))
        if not self.portable:
            raise TypeError(
                f"{type(self).__name__} holds native state that cannot be pickled; save() it first"
            )
        return super().__reduce_ex__(protocol)

    def __repr__(self) -> str:
        cfg = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({cfg})"


def register_scorer(name: str):
    """Class decorator: make a scorer available to recipes and the CLI under `name`."""

    def deco(cls: type[Scorer]) -> type[Scorer]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"scorer name {name!r} is already registered by {_REGISTRY[name]}")
        cls.kind = name
        _REGISTRY[name] = cls
        return cls

    return deco


def scorer_class(name: str) -> type[Scorer]:
    if name not in _REGISTRY and name in _BUILTIN_MODULES:
        importlib.import_module(_BUILTIN_MODULES[name])
    if name not in _REGISTRY:
        known = sorted(set(_REGISTRY) | set(_BUILTIN_MODULES))
        raise ValueError(f"unknown scorer {name!r}; known scorers: {', '.join(known)}")
    return _REGISTRY[name]


def available_scorers() -> list[str]:
    return sorted(set(_REGISTRY) | set(_BUILTIN_MODULES))


def make_scorer(name: str, **params: Any) -> Scorer:
    """An unfitted scorer of the registered type `name`."""
    cls = scorer_class(name)
    try:
        return cls(**params)
    except TypeError as e:
        raise ValueError(f"bad parameters for scorer {name!r}: {e}") from None


def load_scorer(path: str | os.PathLike) -> Scorer:
    """Rebuild a saved scorer from its folder."""
    folder = Path(path)
    meta_path = folder / SCORER_FILE
    if not meta_path.exists():
        raise FileNotFoundError(f"{folder} is not a saved scorer (no {SCORER_FILE})")
    meta = read_json(meta_path)
    scorer = scorer_class(meta["type"])(**meta.get("config", {}))
    scorer._load_state(folder)
    scorer.path = str(folder.resolve())
    return scorer


_CACHE: dict[tuple[str, int], Scorer] = {}


def _load_cached(path: str) -> Scorer:
    """Per-process cache, so that a worker loads a model once for all the shards it runs."""
    key = (path, os.stat(Path(path) / SCORER_FILE).st_mtime_ns)
    if key not in _CACHE:
        _CACHE[key] = load_scorer(path)
    return _CACHE[key]


def sample_texts(source: Any, n: int | None, seed: int) -> list[str]:
    """`n` texts of a Corpus (a uniform sample by seeded hash of the id) or of a sequence."""
    from assay.io.corpus import Corpus

    if isinstance(source, Corpus):
        if n is None:
            return list(source.iter_texts())
        return source.sample(n, seed=seed).get_column("text").to_list()
    texts = list(source)
    if n is not None and len(texts) > n:
        idx = np.sort(np.random.default_rng(seed).choice(len(texts), n, replace=False))
        texts = [texts[i] for i in idx]
    return texts


def fit_binary(
    scorer: Scorer,
    positive: Any,
    negative: Any,
    *,
    n: int | None = 10_000,
    seed: int = 0,
    balance: bool = True,
) -> Scorer:
    """Fit a scorer that learns positive against negative examples (fastText) on samples of two
    corpora (or sequences of texts): `n` each, the negatives drawn with seed + 1."""
    pos = sample_texts(positive, n, seed)
    neg = sample_texts(negative, n, seed + 1)
    try:
        return scorer.fit(pos, neg, seed=seed, balance=balance)
    except TypeError as e:
        raise ValueError(
            f"scorer {scorer.kind!r} does not train from positive and negative examples ({e})"
        ) from None
