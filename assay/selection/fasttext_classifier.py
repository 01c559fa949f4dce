"""A pretrained fastText classifier as a scorer: DCLM's released quality classifier, or any
supervised fastText model (`.bin` or `.ftz`) kept in a local file.

The score is the probability of one of the model's labels (`label`: DCLM's high-quality class
is `__label__hq`; the `__label__` prefix may be left out), or, for a model whose labels are
numbers (FineWeb-Edu-style educational scores `__label__0` ... `__label__5`), the expected value
of the label under the model (`output: expected`): the sum of each value times its probability,
divided by the sum of the probabilities (fastText adds 1e-5 to each).

The model is read on first use, once per process; the scorer pickles as its settings, so it
runs unchanged in a process pool or on Ray. The model file's content is part of what its scores
depend on: scores made with another file at the same path are redone.

>>> scorer = FastTextClassifierScorer("models/dclm_hq.bin", label="__label__hq", column="dclm")
>>> scorer.score(["A well-written article about tides.", "click here buy now"])
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from assay.errors import ConfigError, MissingError
from assay.selection.base import Scorer, register_scorer
from assay.selection.fasttext import _fasttext, to_line
from assay.util.files import content_id

OUTPUTS = ("probability", "expected")
MODEL_SUFFIXES = (".bin", ".ftz")
#: the prefix fastText puts before every label by default
PREFIX = "__label__"


def model_file(model: str | Path) -> Path:
    """The fastText model a `model` setting names: a `.bin`/`.ftz` file, or a folder holding
    exactly one (a fitted `fasttext` scorer's folder holds `model.bin`)."""
    path = Path(model)
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix in MODEL_SUFFIXES and p.is_file())
        if len(found) != 1:
            raise MissingError(
                f"{path} holds {len(found)} fastText model files (.bin, .ftz); name the file"
            )
        return found[0]
    if not path.is_file():
        raise MissingError(f"no fastText model at {path}: give a local .bin or .ftz file")
    return path


def find_label(wanted: str, labels: Sequence[str], where: Path) -> str:
    """The model's label named `wanted`, given in full or without the `__label__` prefix."""
    for name in (wanted, PREFIX + wanted):
        if name in labels:
            return name
    raise ConfigError(
        f"the fastText model {where} has no label {wanted!r}; its labels: {', '.join(labels)}"
    )


def label_values(labels: Sequence[str], where: Path) -> np.ndarray:
    """The numbers that labels such as `__label__0` ... `__label__5` stand for."""
    values = []
    for name in labels:
        try:
            values.append(float(name.removeprefix(PREFIX)))
        except ValueError:
            raise ConfigError(
                f"output 'expected' needs numeric labels, but the fastText model {where} has "
                f"{name!r} (its labels: {', '.join(labels)}); score one label's probability "
                "with label instead"
            ) from None
    out = np.asarray(values, dtype=np.float64)
    if not np.isfinite(out).all():
        raise ConfigError(f"the fastText model {where} has non-finite numeric labels")
    return out


@register_scorer("fasttext_classifier")
class FastTextClassifierScorer(Scorer):
    """A pretrained fastText classifier's P(`label`), or the expected value of its numeric
    labels (`output: expected`)."""

    def __init__(
        self,
        model: str,
        label: str | None = None,
        output: str = "probability",
        column: str = "fasttext_classifier",
    ):
        if output not in OUTPUTS:
            raise ConfigError(f"output must be one of {OUTPUTS}, not {output!r}")
        if output == "probability" and not label:
            raise ConfigError(
                "give label: the class whose probability is the score (e.g. __label__hq for "
                "DCLM's classifier), or output: expected for a model with numeric labels"
            )
        if output == "expected" and label is not None:
            raise ConfigError("output 'expected' uses every label: leave label out")
        super().__init__(column)
        self.model = str(model)
        self.label = None if label is None else str(label)
        self.output = output
        self._model: Any = None
        self._target = ""  # the label scored, as the model spells it
        self._values: dict[str, float] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_model": None}

    def input_identity(self) -> Any:
        return content_id(model_file(self.model), mtime=False)

    @property
    def labels(self) -> list[str]:
        """The model's labels, as it spells them."""
        self._load()
        return list(self._model.get_labels())

    def _load(self) -> None:
        if self._model is not None:
            return
        path = model_file(self.model)
        model = _fasttext().load_model(str(path))
        labels = list(model.get_labels())
        if self.output == "probability":
            self._target = find_label(str(self.label), labels, path)
        else:
            self._values = dict(zip(labels, label_values(labels, path).tolist(), strict=True))
        self._model = model

    def score(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros(0, dtype=np.float32)
        self._load()
        labels, probs = self._model.predict([to_line(t) for t in texts], k=-1, threshold=0.0)
        if self.output == "probability":
            return self._probability(labels, probs)
        return self._expected(labels, probs)

    def _probability(self, labels: Sequence[Any], probs: Sequence[Any]) -> np.ndarray:
        # A line without a single token gets no prediction: the uniform probability.
        uniform = 1.0 / len(self._model.get_labels())
        target = self._target
        out = np.full(len(labels), uniform, dtype=np.float64)
        for i, (lb, pr) in enumerate(zip(labels, probs, strict=True)):
            if target in lb:
                out[i] = pr[lb.index(target)]
        # fastText returns p + 1e-5: a probability slightly above 1 at times.
        return np.clip(out, 0.0, 1.0).astype(np.float32)

    def _expected(self, labels: Sequence[Any], probs: Sequence[Any]) -> np.ndarray:
        values = self._values
        prior = float(np.mean(list(values.values())))
        out = np.empty(len(labels), dtype=np.float64)
        for i, (lb, pr) in enumerate(zip(labels, probs, strict=True)):
            p = np.asarray(pr, dtype=np.float64)
            if not len(lb) or p.sum() <= 0:
                out[i] = prior
                continue
            v = np.fromiter((values[name] for name in lb), dtype=np.float64, count=len(lb))
            out[i] = float(p @ v) / float(p.sum())
        return out.astype(np.float32)
