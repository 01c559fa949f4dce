"""A Hugging Face sequence classifier as a scorer: FineWeb-Edu's educational-quality regressor,
or any local model folder that `AutoModelForSequenceClassification` and `AutoTokenizer` read.

What the score is (`output`):

- `logit`: the raw output. A regression head (one output, FineWeb-Edu's classifier) gives its
  value, `logits.squeeze(-1)`; a classifier the logit of `label`.
- `probability`: the probability of `label` (softmax over the classes; a sigmoid for a
  multi-label model).
- `expected`: the expected value of the class under its probabilities, for classes named by
  numbers (`id2label` "0" ... "5"), or by their index when they carry the default names
  (`LABEL_0`, ...).
- `auto` (the default): `logit` for a regression head, `probability` when `label` is given.

`label` is a class name from the model's `id2label` or its index. `int_score: [lo, hi]` adds a
column `<column>_int`: the score clipped to [lo, hi] and rounded (FineWeb-Edu's `int_score` is
`int_score: [0, 5]`).

Documents are truncated to `max_length` tokens (default: the tokenizer's limit, else the
model's positions) and run `batch_size` at a time, sorted by length so that padding wastes
little. The model runs on `device` in `dtype` (`assay.common.lm.DeviceSettings`): by default a
CUDA GPU in bfloat16 when there is one, else the CPU in float32. It is loaded on first use, once
per process; the scorer pickles as its settings. The model folder's files are part of what its
scores depend on: scores made with other weights at the same path are redone.

>>> scorer = HFClassifierScorer("models/fineweb-edu-classifier", column="edu", int_score=[0, 5])
>>> scorer.score_table(["Photosynthesis turns light into chemical energy.", "buy now"])
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from assay.common.lm import check_device, check_dtype, planned_dtype
from assay.errors import ConfigError, InputError, MissingError
from assay.selection.base import Scorer, register_scorer
from assay.util.files import folder_fingerprint

OUTPUTS = ("auto", "logit", "probability", "expected")
#: the truncation length when neither the tokenizer nor the model states one
DEFAULT_MAX_LENGTH = 512


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, not {value!r}")


def _check_int_score(int_score: Any) -> list[int] | None:
    if int_score is None:
        return None
    ok = isinstance(int_score, (list, tuple)) and len(int_score) == 2
    ok = ok and all(isinstance(v, int) and not isinstance(v, bool) for v in int_score)
    if not ok or int_score[0] >= int_score[1]:
        raise ConfigError(f"int_score must be [low, high], two integers, not {int_score!r}")
    return [int(int_score[0]), int(int_score[1])]


def model_folder(model: str | Path) -> Path:
    path = Path(model)
    if not (path / "config.json").is_file():
        raise MissingError(
            f"no model folder at {path} (no config.json): give a local Hugging Face "
            "sequence-classification folder (nothing is downloaded)"
        )
    return path


@register_scorer("hf_classifier")
class HFClassifierScorer(Scorer):
    """A local Hugging Face sequence classifier's output, probability of a label or expected
    class value, per document (see the module's notes)."""

    def __init__(
        self,
        model: str,
        column: str = "hf_classifier",
        label: str | int | None = None,
        output: str = "auto",
        int_score: list[int] | None = None,
        max_length: int | None = None,
        batch_size: int = 32,
        dtype: str | None = None,
        device: str | None = None,
    ):
        if output not in OUTPUTS:
            raise ConfigError(f"output must be one of {OUTPUTS}, not {output!r}")
        if output == "expected" and label is not None:
            raise ConfigError("output 'expected' uses every class: leave label out")
        if label is not None and (isinstance(label, bool) or not isinstance(label, (str, int))):
            raise ConfigError(f"label must be a class name or index, not {label!r}")
        if max_length is not None:
            _positive_int("max_length", max_length)
        _positive_int("batch_size", batch_size)
        check_device(device)
        check_dtype(dtype)
        super().__init__(column)
        self.model = str(model)
        self.label = label
        self.output = output
        self.int_score = _check_int_score(int_score)
        self.max_length = max_length
        self.batch_size = batch_size
        self.dtype = dtype
        self.device = device
        self._model: Any = None
        self._tokenizer: Any = None
        self._class_values = np.zeros(0)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_model": None, "_tokenizer": None}

    def get_params(self) -> dict[str, Any]:
        """The settings, with an automatic dtype written as the one it stands for here, so that
        `scorer.json` and score folders say what the scores were computed in."""
        params = super().get_params()
        if check_dtype(self.dtype) == "auto":
            params["dtype"] = planned_dtype(self.dtype, self.device)
        return params

    def input_identity(self) -> Any:
        return folder_fingerprint(model_folder(self.model), mtime=False)

    @property
    def runs_on(self) -> str:
        return check_device(self.device)

    @property
    def columns(self) -> list[str]:
        return [self.column] + ([f"{self.column}_int"] if self.int_score else [])

    # -- the model -----------------------------------------------------------------------------
    def _load(self) -> None:
        if self._model is not None:
            return
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        from transformers.utils import logging as hf_logging

        from assay.common.lm import resolve_device, resolve_dtype

        hf_logging.disable_progress_bar()
        path = model_folder(self.model)
        where = resolve_device(self.device)
        precision = resolve_dtype(self.dtype, where)
        common = {"local_files_only": True, "trust_remote_code": False}
        tokenizer = AutoTokenizer.from_pretrained(str(path), **common)
        model = AutoModelForSequenceClassification.from_pretrained(
            str(path), dtype=getattr(torch, precision), **common
        )
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = tokenizer.eos_token_id
        if pad is None:
            raise InputError(f"the tokenizer of {path} has neither a pad nor an end token")
        # decoder classifiers find each document's last token by the pad id
        if getattr(model.config, "pad_token_id", None) is None:
            model.config.pad_token_id = pad
        self._pad = int(pad)
        self._head = self._resolve_head(model.config, path)
        if self._head[0] == "expected":
            self._class_values = self._values(model.config)
        self._length = self._truncation(tokenizer, model.config)
        self._tokenizer = tokenizer
        self._model = model.eval().to(where)

    def _resolve_head(self, config: Any, path: Path) -> tuple[str, int | None]:
        """(what to compute, the class index) from the settings and the model's classes."""
        n = int(config.num_labels)
        names = [str(config.id2label.get(i, f"LABEL_{i}")) for i in range(n)]
        listed = ", ".join(f"{i}: {name}" for i, name in enumerate(names))
        output = self.output
        if output == "auto":
            if n == 1 and self.label is None:
                output = "logit"
            elif self.label is not None:
                output = "probability"
            else:
                raise ConfigError(
                    f"the classifier {path} has {n} classes ({listed}): give label (a name or an "
                    "index) or output: expected"
                )
        if output == "expected":
            return output, None
        if n == 1:
            if output == "probability" or self.label not in (None, 0, names[0]):
                raise ConfigError(
                    f"{path} has a regression head (one output): its score is the output "
                    "itself; use output logit (or auto) without a label"
                )
            return output, 0
        if self.label is None:
            raise ConfigError(f"output {output!r} needs a label of {path}: one of {listed}")
        if isinstance(self.label, int):
            if not 0 <= self.label < n:
                raise ConfigError(f"{path} has no class {self.label}; its classes: {listed}")
            return output, self.label
        if self.label not in names:
            raise ConfigError(f"{path} has no class {self.label!r}; its classes: {listed}")
        return output, names.index(self.label)

    def _truncation(self, tokenizer: Any, config: Any) -> int:
        positions = getattr(config, "max_position_embeddings", None)
        limit = getattr(tokenizer, "model_max_length", None)
        length = self.max_length or (limit if limit and limit < 1_000_000 else None)
        length = length or positions or DEFAULT_MAX_LENGTH
        return int(min(length, positions) if positions else length)

    def _values(self, config: Any) -> np.ndarray:
        """The number each class stands for, for `expected`."""
        n = int(config.num_labels)
        names = [str(config.id2label.get(i, f"LABEL_{i}")) for i in range(n)]
        if names == [f"LABEL_{i}" for i in range(n)]:
            return np.arange(n, dtype=np.float64)
        try:
            return np.array([float(name) for name in names], dtype=np.float64)
        except ValueError:
            raise ConfigError(
                f"output 'expected' needs classes named by numbers, but {self.model} has "
                f"{names}; score one class with label instead"
            ) from None

    # -- scoring -------------------------------------------------------------------------------
    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """The model's outputs, float32 (documents x classes), in the order of `texts`."""
        import torch

        self._load()
        tok, model = self._tokenizer, self._model
        names = [k for k in tok.model_input_names if k in ("input_ids", "token_type_ids")]
        enc = tok(list(texts), truncation=True, max_length=self._length, padding=False)
        columns = {k: enc[k] for k in names}
        ids = columns["input_ids"]
        order = np.argsort(
            np.fromiter(map(len, ids), dtype=np.int64, count=len(ids)), kind="stable"
        )
        out = np.empty((len(ids), int(model.config.num_labels)), dtype=np.float32)
        device = next(model.parameters()).device
        for a in range(0, len(order), self.batch_size):
            rows = order[a : a + self.batch_size]
            batch = self._padded(columns, rows, tok.padding_side)
            with torch.inference_mode():
                result = model(**{k: v.to(device) for k, v in batch.items()}).logits
            out[rows] = result.float().cpu().numpy()
        return out

    def _padded(self, columns: dict[str, list], rows: np.ndarray, side: str) -> dict[str, Any]:
        import torch

        width = max(len(columns["input_ids"][i]) for i in rows)
        fill = {"input_ids": self._pad, "token_type_ids": 0, "attention_mask": 0}
        out = {}
        for key, seqs in [*columns.items(), ("attention_mask", None)]:
            block = np.full((len(rows), width), fill[key], dtype=np.int64)
            for j, i in enumerate(rows):
                seq = columns["input_ids"][i] if seqs is None else seqs[i]
                values = 1 if seqs is None else seq
                if side == "left":
                    block[j, width - len(seq) :] = values
                else:
                    block[j, : len(seq)] = values
            out[key] = torch.from_numpy(block)
        return out

    def score_table(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        score = self.score(texts)
        table = {self.column: score}
        if self.int_score:
            low, high = self.int_score
            table[f"{self.column}_int"] = np.rint(np.clip(score, low, high)).astype(np.float32)
        return table

    def score(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros(0, dtype=np.float32)
        logits = self.logits(texts).astype(np.float64)
        output, index = self._head
        if output == "logit":
            return logits[:, index].astype(np.float32)
        if self._model.config.problem_type == "multi_label_classification":
            probs = 1.0 / (1.0 + np.exp(-logits))
        else:
            shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
            probs = shifted / shifted.sum(axis=1, keepdims=True)
        if output == "probability":
            return probs[:, index].astype(np.float32)
        # independent (sigmoid) probabilities are normalised to weigh the values
        return (probs @ self._class_values / probs.sum(axis=1)).astype(np.float32)
