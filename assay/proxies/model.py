"""Proxy model presets (small Llama- or GPT-2-style causal LMs) and loading of local models.

Presets, Llama-style (RoPE, SwiGLU, RMSNorm, tied embeddings), at their default vocabulary:

| preset | vocab  | d_model | layers | heads | ffn  | params (total / non-embedding) |
|--------|--------|---------|--------|-------|------|--------------------------------|
| tiny   | 2,048  | 128     | 4      | 4     | 384  | 1.1M / 0.85M                   |
| xs     | 8,192  | 256     | 4      | 4     | 768  | 5.5M / 3.4M                    |
| s      | 16,384 | 512     | 8      | 8     | 1536 | 36M / 27M                      |
| m      | 32,768 | 768     | 8      | 12    | 2048 | 82M / 57M                      |
| l      | 32,768 | 768     | 16     | 12    | 2048 | 138M / 113M                    |

The vocabulary actually used is the tokenizer's. On this project's 2-core CPU the Llama-style
`tiny` trains at about 15k tokens/s and `xs` at about 4.5k (GPT-2-style: 6.6k and 2.6k), so
Llama-style is the default; `arch="gpt2"` builds the same sizes with learned positions and a
GELU MLP of 4 x d_model. RegMix's 1M-parameter proxies correspond to `tiny`/`xs`; CLIMB's
62M-350M ones to `m`/`l` and up.

Checkpoints are saved as safetensors; models are only ever loaded from local folders.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from assay.errors import ConfigError


@dataclass(frozen=True)
class Preset:
    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    d_ffn: int


PRESETS: dict[str, Preset] = {
    "tiny": Preset(2048, 128, 4, 4, 384),
    "xs": Preset(8192, 256, 4, 4, 768),
    "s": Preset(16384, 512, 8, 8, 1536),
    "m": Preset(32768, 768, 8, 12, 2048),
    "l": Preset(32768, 768, 16, 12, 2048),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ConfigError(f"unknown proxy preset {name!r}; choose from {', '.join(PRESETS)}")
    return PRESETS[name]


def build_model(
    preset: str,
    vocab_size: int | None = None,
    seq_len: int = 256,
    arch: str = "llama",
    seed: int = 0,
) -> Any:
    """A freshly initialised causal LM of the preset's size (deterministic for a seed)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    p = get_preset(preset)
    vocab = vocab_size or p.vocab_size
    torch.manual_seed(seed)
    if arch == "llama":
        cfg = LlamaConfig(
            vocab_size=vocab,
            hidden_size=p.d_model,
            num_hidden_layers=p.n_layers,
            num_attention_heads=p.n_heads,
            num_key_value_heads=p.n_heads,
            intermediate_size=p.d_ffn,
            max_position_embeddings=seq_len,
            tie_word_embeddings=True,
            bos_token_id=None,
            eos_token_id=None,
            pad_token_id=None,
        )
        model = LlamaForCausalLM(cfg)
    elif arch == "gpt2":
        cfg = GPT2Config(
            vocab_size=vocab,
            n_embd=p.d_model,
            n_layer=p.n_layers,
            n_head=p.n_heads,
            n_positions=seq_len,
            bos_token_id=None,
            eos_token_id=None,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
        )
        model = GPT2LMHeadModel(cfg)
    else:
        raise ConfigError(f"unknown architecture {arch!r}; use 'llama' or 'gpt2'")
    model.config.assay = {"preset": preset, "arch": arch, **asdict(p), "vocab_size": vocab}
    return model


def save_model(model: Any, out_dir: str | os.PathLike, tokenizer: Any = None) -> Path:
    """Save weights as safetensors (and the tokenizer beside them) into a folder."""
    from transformers.utils import logging as hf_logging

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hf_logging.disable_progress_bar()
    model.save_pretrained(str(out), safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out))
    return out
