"""The Scorer protocol and the registry that lets recipes and the CLI name scorers.

A scorer is an estimator in the scikit-learn sense: `fit(...) -> self`, then
`score(texts) -> float32 array`, one value per text, higher meaning "keep". It never touches
corpora; `assay.selection.score.score_corpus` runs any scorer over a corpus through the runner.

A scorer's parameters are its constructor's (scikit-learn's `get_params` convention): every
`__init__` argument is kept, unchanged or normalised, as an attribute of the same name, so
`type(s)(**s.get_params())` rebuilds it unfitted.

Saved scorers are folders: `scorer.json` (the registered type and the constructor config) plus
whatever state the scorer writes (a fastText `.bin`, safetensors weights, ...). Nothing is ever
unpickled from a scorer folder.

Scorers are found by name: the built-in ones (imported on first use), then installed plugins,
packages that declare an entry point in the group `assay.scorers`:

    [project.entry-points."assay.scorers"]
    shout = "assay_shout:ShoutScorer"

A plugin is imported only when its scorer is asked for; a built-in's name cannot be taken.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from assay.errors import AssayError, ConfigError, MissingError, StateError
from assay.util.files import read_json, write_json
from assay.util.guard import check_writable_folder

SCORER_FILE = "scorer.json"

#: the entry-point group through which installed packages add scorers
ENTRY_POINT_GROUP = "assay.scorers"

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
    "mates_finetune": "assay.selection.mates_finetune",
    "dsir": "assay.selection.dsir",
    "decontam": "assay.selection.decontam",
    "ngram_lm": "assay.selection.ngram_lm",
    "fasttext_classifier": "assay.selection.fasttext_classifier",
    "hf_classifier": "assay.selection.hf_classifier",
}


class NotFittedError(StateError, RuntimeError):
    """A scorer used or saved before it was fitted (also a RuntimeError, as it always was)."""


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

    # -- parameters ----------------------------------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        """The constructor's arguments, read from the attributes of the same names (JSON-able);
        `type(self)(**self.get_params())` rebuilds the unfitted scorer."""
        out = {}
        for name in init_params(type(self)):
            try:
                out[name] = getattr(self, name)
            except AttributeError:
                raise AttributeError(
                    f"{type(self).__name__}.__init__ takes {name!r} but the scorer has no "
                    f"attribute {name!r}: a scorer keeps every constructor argument as an "
                    "attribute of the same name"
                ) from None
        return out

    def get_config(self) -> dict[str, Any]:
        """`get_params()`, under the name that `scorer.json` and score folders use."""
        return self.get_params()

    # -- persistence ---------------------------------------------------------------------------
    @property
    def is_fitted(self) -> bool:
        return True

    @property
    def portable(self) -> bool:
        """Whether this object can be pickled to another process as it is."""
        return True

    @property
    def runs_on(self) -> str:
        """Where the scorer's model runs: "cpu" (the default: no model, or one for CPUs only),
        "auto" (a GPU when its worker has one), "cuda" or "cuda:N". A Ray task of the scorer
        asks for a GPU accordingly (`assay.exec.devices.gpus_for`)."""
        return "cpu"

    def input_identity(self) -> Any:
        """What the scores depend on besides the settings and the saved folder: the content of
        model files the scorer reads from where the user keeps them (a pretrained classifier),
        or None. A score file made before such a file changed is redone."""
        return None

    def save(self, path: str | os.PathLike) -> Scorer:
        if not self.is_fitted:
            raise NotFittedError(f"{type(self).__name__} must be fitted before it is saved")
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


@functools.cache
def init_params(cls: type) -> tuple[str, ...]:
    """The names of a scorer class's constructor parameters (its `get_params` keys)."""
    out = []
    for p in list(inspect.signature(cls.__init__).parameters.values())[1:]:
        if p.kind is p.VAR_POSITIONAL:
            raise TypeError(f"{cls.__name__}.__init__ takes *{p.name}: name every parameter")
        if p.kind is not p.VAR_KEYWORD:
            out.append(p.name)
    return tuple(out)


def _is_builtin(name: str, cls: type) -> bool:
    module = _BUILTIN_MODULES.get(name)
    return module is not None and (cls.__module__ + ".").startswith(module + ".")


def register_scorer(name: str):
    """Class decorator: make a scorer available to recipes and the CLI under `name`."""

    def deco(cls: type[Scorer]) -> type[Scorer]:
        if name in _BUILTIN_MODULES and not _is_builtin(name, cls):
            raise ConfigError(
                f"{cls.__module__}.{cls.__qualname__} cannot be registered as {name!r}: that is "
                "the name of a built-in scorer; register it under another name"
            )
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ConfigError(f"scorer name {name!r} is already registered by {_REGISTRY[name]}")
        cls.kind = name
        _REGISTRY[name] = cls
        return cls

    return deco


def plugin_entry_points() -> dict[str, Any]:
    """Installed scorer plugins: entry points of the group `assay.scorers`, by scorer name
    (read from the installed packages' metadata; nothing is imported)."""
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _plugin_source(ep: Any) -> str:
    dist = getattr(ep, "dist", None)
    package = f" of the package {dist.name}" if dist is not None else ""
    return f"the {ENTRY_POINT_GROUP} entry point {ep.name} = {ep.value!r}{package}"


def _load_plugin(name: str, ep: Any) -> type[Scorer]:
    """Import a plugin's scorer class and register it under its entry point's name (a class
    that registers itself, or one with a `kind`, must use that same name)."""
    where = _plugin_source(ep)
    try:
        cls = ep.load()
    except AssayError:  # e.g. it registered a name it may not take
        raise
    except (ImportError, AttributeError) as e:  # no such module, or no such class in it
        raise ConfigError(f"{where} cannot be loaded: {type(e).__name__}: {e}") from e
    if not (isinstance(cls, type) and issubclass(cls, Scorer)):
        raise ConfigError(f"{where} is not a Scorer subclass but {cls!r}")
    if _REGISTRY.get(name) is not cls:
        kind = cls.__dict__.get("kind") or name
        if kind != name:
            raise ConfigError(
                f"{where} loads {cls.__module__}.{cls.__qualname__}, whose kind is {kind!r}: "
                "the entry point must be named after the scorer"
            )
        register_scorer(name)(cls)
    return cls


def scorer_class(name: str) -> type[Scorer]:
    """The scorer class registered as `name`: a built-in, an installed plugin (imported now),
    or a class registered in this process."""
    if name not in _REGISTRY:
        if name in _BUILTIN_MODULES:
            importlib.import_module(_BUILTIN_MODULES[name])
        else:
            ep = plugin_entry_points().get(name)
            if ep is not None:
                _load_plugin(name, ep)
    if name not in _REGISTRY:
        known = ", ".join(available_scorers())
        raise ConfigError(f"unknown scorer {name!r}; known scorers: {known}")
    return _REGISTRY[name]


def available_scorers() -> list[str]:
    """Every scorer name: built-in, registered in this process, and installed plugins (not
    imported to be listed)."""
    return sorted(set(_REGISTRY) | set(_BUILTIN_MODULES) | set(plugin_entry_points()))


def make_scorer(name: str, **params: Any) -> Scorer:
    """An unfitted scorer of the registered type `name`."""
    cls = scorer_class(name)
    try:
        return cls(**params)
    except TypeError as e:
        raise ConfigError(f"bad parameters for scorer {name!r}: {e}") from None


def load_scorer(path: str | os.PathLike) -> Scorer:
    """Rebuild a saved scorer from its folder."""
    folder = Path(path)
    meta_path = folder / SCORER_FILE
    if not meta_path.exists():
        raise MissingError(f"{folder} is not a saved scorer (no {SCORER_FILE})")
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


def embedder_settings(embedder: dict[str, Any] | str | None) -> dict[str, Any]:
    """`Embedder` settings as the dict a scorer keeps: a model name or folder is
    {"model": it}, None the default model; a dict is copied."""
    if isinstance(embedder, str) or embedder is None:
        return {"model": embedder}
    return dict(embedder)


def embedder_runs_on(settings: dict[str, Any]) -> str:
    """Where an `Embedder` with these settings runs (a scorer's `runs_on`): the CPU for a static
    model (numpy), else its device ("auto": a GPU when there is one)."""
    from assay.common.embed import is_static_model
    from assay.common.lm import check_device

    model = settings.get("model")
    if model == "static" or (model not in (None, "minilm") and is_static_model(model)):
        return "cpu"
    return check_device(settings.get("device"))


def sample_texts(source: Any, n: int | None, seed: int) -> Iterable[str]:
    """`n` texts of a Corpus (a uniform sample by seeded hash of the id) or of a sequence.

    A Corpus' texts are not copied into Python strings: its sample comes as a polars Series
    (iterated in chunks), all of it (`n=None`) as a stream."""
    from assay.io.corpus import Corpus

    if isinstance(source, Corpus):
        if n is None:
            return source.iter_texts()
        return source.sample(n, seed=seed).get_column("text")
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
    corpora (or sequences of texts): `n` each, the negatives drawn with seed + 1. The scorer's
    `fit` gets iterables of texts (see `sample_texts`), read once."""
    pos = sample_texts(positive, n, seed)
    neg = sample_texts(negative, n, seed + 1)
    try:
        return scorer.fit(pos, neg, seed=seed, balance=balance)
    except TypeError as e:
        raise ConfigError(
            f"scorer {scorer.kind!r} does not train from positive and negative examples ({e})"
        ) from None
