"""MATES' data influence model as the paper trains it: an encoder fine-tuned end to end.

The official code (cxcscmu/MATES, `train_data_influence_model.py`) fine-tunes bert-base-uncased
with a regression head on (document, oracle influence) pairs: each document's first 1,024
tokens as two 512-token chunks, mean-pooled over all its tokens; the influence z-scored by the
training split's mean and standard deviation; MSE; the HF Trainer's AdamW at learning rate
5e-5, weight decay 0.01, 5 epochs, 32 documents per device, no warmup, a linear decay, gradients
clipped to 1, bfloat16; 10% of the probes held out and the checkpoint with the best held-out
Spearman correlation kept (evaluated every 20 steps). `MatesFinetuneSettings` has these as its
defaults, but two: the encoder is the bundled all-MiniLM-L6-v2 (a 6-layer BERT; nothing is
downloaded: give bert-base-uncased's folder as `encoder` for the paper's), and the batch is
32 documents in all (the official run has 8 GPUs of 32).

The network and the training loop are in `assay.selection.mates_encoder`. Scoring runs
`batch_size` documents at a time in order of length, on `device` in `dtype` (autocast; the
weights stay float32), batch by batch as `score_corpus` hands them over. The fine-tuned
encoder and its tokenizer are saved with the scorer (`encoder/`, safetensors) with the head
(`head.safetensors`); a loaded scorer reads them on first use, once per process.

>>> scorer = MatesFinetunedScorer(encoder="models/bert-base-uncased").fit(texts, influence)
>>> scorer.report["spearman"], scorer.report["candidates"]   # each evaluation's Spearman
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, ValidationError

from assay.common.lm import check_device, check_dtype, planned_dtype
from assay.errors import ConfigError, InputError
from assay.selection.base import NotFittedError, Scorer, register_scorer
from assay.selection.mates import holdout_split, probe_record, write_probe_table
from assay.util.config import Strict
from assay.util.files import atomic_path, host_name, read_json, write_json
from assay.util.remote import publish


class MatesFinetuneSettings(Strict):
    """The fine-tuned influence model's options (defaults: the official code's)."""

    encoder: str | None = Field(
        None,
        description="A local Hugging Face encoder folder with its tokenizer (BERT-class; the "
        "paper's is bert-base-uncased); default: the bundled all-MiniLM-L6-v2.",
    )
    max_length: int = Field(1024, ge=2, description="Tokens of a document read (truncated).")
    chunk_length: int = Field(
        512, ge=2, description="Tokens per chunk run through the encoder (all mean-pooled)."
    )
    lr: float = Field(5e-5, gt=0, description="Peak learning rate (AdamW).")
    epochs: int = Field(5, ge=1, description="Passes over the training probes.")
    batch_size: int = Field(32, ge=1, description="Documents per optimizer step and per batch.")
    warmup: float = Field(0.0, ge=0, lt=1, description="Share of the steps of linear warmup.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    eval_every: int | None = Field(
        20,
        ge=1,
        description="Optimizer steps between held-out evaluations (and after the last); "
        "null: after every epoch.",
    )
    holdout: float = Field(
        0.1, gt=0, lt=0.5, description="Share of the probes held out to choose the checkpoint."
    )


#: the defaults the scorer shares with the settings (declared once, in MatesFinetuneSettings)
_DEFAULT = MatesFinetuneSettings()
_FIELDS = tuple(MatesFinetuneSettings.model_fields)


def settings_of(**values: Any) -> MatesFinetuneSettings:
    """`MatesFinetuneSettings`, a bad value a `ConfigError`."""
    try:
        return MatesFinetuneSettings(**values)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(map(str, err['loc'])) or 'settings'}: {err['msg']}" for err in e.errors()
        )
        raise ConfigError(f"bad settings of the fine-tuned influence model: {problems}") from None


def default_encoder() -> str:
    from assay.common.embed import default_model_path

    return default_model_path()


@register_scorer("mates_finetune")
class MatesFinetunedScorer(Scorer):
    """MATES' influence model fine-tuned end to end (see the module's notes). `predict` is the
    z-scored predicted influence (lower = better for the target); `score` its negative."""

    def __init__(
        self,
        column: str = "mates",
        encoder: str | None = _DEFAULT.encoder,
        max_length: int = _DEFAULT.max_length,
        chunk_length: int = _DEFAULT.chunk_length,
        lr: float = _DEFAULT.lr,
        epochs: int = _DEFAULT.epochs,
        batch_size: int = _DEFAULT.batch_size,
        warmup: float = _DEFAULT.warmup,
        weight_decay: float = _DEFAULT.weight_decay,
        max_grad_norm: float = _DEFAULT.max_grad_norm,
        eval_every: int | None = _DEFAULT.eval_every,
        holdout: float = _DEFAULT.holdout,
        device: str | None = None,
        dtype: str | None = None,
    ):
        super().__init__(column)
        given = dict(locals())
        s = settings_of(**{k: given[k] for k in _FIELDS})
        for name in _FIELDS:
            setattr(self, name, getattr(s, name))
        check_device(device)
        check_dtype(dtype)
        self.device = device
        self.dtype = dtype
        self._model: Any = None  # the ChunkedRegressor, trained here or read on first use
        self._tokenizer: Any = None
        self._pad = 0
        self._folder: Path | None = None  # a saved model not read yet
        self.head: dict[str, Any] | None = None
        self.report: dict[str, Any] = {}
        self.probe_table: dict[str, np.ndarray] = {}

    @property
    def settings(self) -> MatesFinetuneSettings:
        return MatesFinetuneSettings(**{k: getattr(self, k) for k in _FIELDS})

    @property
    def is_fitted(self) -> bool:
        return self.head is not None

    @property
    def portable(self) -> bool:
        return self._model is None

    @property
    def runs_on(self) -> str:
        return check_device(self.device)

    def get_params(self) -> dict[str, Any]:
        """The settings, an automatic dtype written as the one it stands for here (as
        `hf_classifier` does)."""
        params = super().get_params()
        if check_dtype(self.dtype) == "auto":
            params["dtype"] = planned_dtype(self.dtype, self.device)
        return params

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_model": None, "_tokenizer": None}

    def _where(self) -> tuple[str, str]:
        from assay.common.lm import resolve_device, resolve_dtype

        device = resolve_device(self.device)
        return device, resolve_dtype(self.dtype, device)

    def _load(self, source: str | Path, seed: int = 0) -> None:
        from assay.selection.mates_encoder import load_encoder, make_regressor

        tokenizer, encoder = load_encoder(source, self.chunk_length)
        self._tokenizer, self._pad = tokenizer, int(tokenizer.pad_token_id)
        self._model = make_regressor(encoder, seed)

    def fit(
        self,
        texts: Sequence[str],
        influence: Sequence[float] | np.ndarray,
        *,
        ids: Sequence[str] | None = None,
        seed: int = 0,
        progress: bool = False,
    ) -> MatesFinetunedScorer:
        """Fine-tune on probed documents and their oracle influence (L_ref after - before);
        the parameters of the evaluation with the best held-out Spearman are kept."""
        import torch

        from assay.selection.mates import _influence_stats
        from assay.selection.mates_encoder import fine_tune, tokenize

        texts = list(texts)
        y_raw = np.asarray(influence, dtype=np.float64)
        _influence_stats(y_raw, len(texts))  # checks the values
        keys = list(ids) if ids is not None else [str(i) for i in range(len(texts))]
        train, val = holdout_split(keys, self.holdout, seed)
        mean, std = float(y_raw[train].mean()), float(y_raw[train].std())
        if std == 0:
            raise InputError("every training probe has the same oracle influence")
        y = (y_raw - mean) / std
        torch.manual_seed(seed)  # dropout
        self._load(self.encoder or default_encoder(), seed)
        docs = tokenize(self._tokenizer, texts, self.max_length)
        device, dtype = self._where()
        best, history = fine_tune(
            self._model,
            ([docs[i] for i in train], y[train]),
            ([docs[i] for i in val], y[val]),
            self.settings,
            pad=self._pad,
            device=device,
            dtype=dtype,
            seed=seed,
        )
        self.head = {"head": "finetune", "step": best["step"], "epoch": best["epoch"]}
        self._record(keys, y_raw, y, train, val, best, history, mean, std)
        return self

    def _record(
        self,
        keys: list[str],
        y_raw: np.ndarray,
        y: np.ndarray,
        train: np.ndarray,
        val: np.ndarray,
        best: dict[str, Any],
        history: list[dict[str, Any]],
        mean: float,
        std: float,
    ) -> None:
        """The probe table and the fit report."""
        self.probe_table, self.report = probe_record(
            keys, y_raw, y, train, val, best["_pred"], mean, std
        )
        self.report |= {
            "head": self.head,
            "spearman": best["spearman"],
            "candidates": history,
            "encoder": self.encoder or "all-MiniLM-L6-v2",
        }

    def _ready(self) -> None:
        if self.head is None:
            raise NotFittedError("MatesFinetunedScorer is not fitted: call fit() or load one")
        if self._model is None:
            from safetensors.torch import load_file

            assert self._folder is not None
            self._load(self._folder / "encoder")
            self._model.head.load_state_dict(load_file(str(self._folder / "head.safetensors")))
        device, _ = self._where()
        self._model.to(device).eval()

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        """Predicted z-scored oracle influence (lower = better for the target)."""
        from assay.selection.mates_encoder import predict, tokenize

        self._ready()
        if len(texts) == 0:
            return np.zeros(0, dtype=np.float64)
        device, dtype = self._where()
        docs = tokenize(self._tokenizer, texts, self.max_length)
        return predict(
            self._model, docs, chunk_length=self.chunk_length, pad=self._pad,
            batch_size=self.batch_size, device=device, dtype=dtype,
        )  # fmt: skip

    def score(self, texts: Sequence[str]) -> np.ndarray:
        return (-self.predict(texts)).astype(np.float32)

    def _save_state(self, folder: Path) -> None:
        from safetensors.torch import save_file

        self._ready()
        model = self._model
        tmp = folder / f".encoder.tmp-{host_name()}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        model.encoder.save_pretrained(str(tmp), safe_serialization=True)
        self._tokenizer.save_pretrained(str(tmp))
        shutil.rmtree(folder / "encoder", ignore_errors=True)
        tmp.rename(folder / "encoder")
        publish(folder / "encoder")
        head = {k: v.detach().cpu().contiguous() for k, v in model.head.state_dict().items()}
        with atomic_path(folder / "head.safetensors") as path:
            save_file(head, str(path))
        write_json(folder / "head.json", self.head)
        write_json(folder / "fit_report.json", self.report)
        if self.probe_table:
            write_probe_table(folder, self.probe_table)

    def _load_state(self, folder: Path) -> None:
        self.head = read_json(folder / "head.json")
        self._folder = folder
        if (folder / "fit_report.json").exists():
            self.report = read_json(folder / "fit_report.json")
