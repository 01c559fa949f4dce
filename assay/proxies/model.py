"""Proxy model presets (small Llama- or GPT-2-style causal LMs) and loading of local models.

Presets, Llama-style (RoPE, SwiGLU, RMSNorm, tied embeddings), at their default vocabulary:

| preset | vocab  | d_model | layers | heads | ffn  | params (total / non-embedding) |
|--------|--------|---------|--------|-------|------|--------------------------------|
| tiny   | 2,048  | 128     | 4      | 4     | 384  | 1.1M / 0.85M                   |
| xs     | 8,192  | 256     | 4      | 4     | 768  | 5.5M / 3.4M                    |
| 5m     | 8,192  | 256     | 6      | 4     | 768  | 7.2M / 5.1M                    |
| s      | 16,384 | 512     | 8      | 8     | 1536 | 36M / 27M                      |
| m      | 32,768 | 768     | 8      | 12    | 2048 | 82M / 57M                      |
| l      | 32,768 | 768     | 16     | 12    | 2048 | 138M / 113M                    |

Paper-scale presets, for the recipes of `recipes/paper/` (GPU scale; Llama-style shapes of the
papers' proxy sizes, the SwiGLU width about 8/3 x d_model so a layer has the parameters of a
GELU MLP of 4 x d_model):

| preset | vocab  | d_model | layers | heads | ffn  | params (total / non-embedding) | stands for |
|--------|--------|---------|--------|-------|------|--------------------------------|------------|
| 1m     | 50,432 | 256     | 2      | 8     | 512  | 14M / 1.3M                     | RegMix's tinyllama_1M |
| 160m   | 50,304 | 768     | 12     | 12    | 2048 | 124M / 85M                     | Pythia-160M; DoReMi/BiMix's 12 x 768 |
| 350m   | 32,768 | 1024    | 24     | 16    | 2816 | 342M / 308M                    | CLIMB's 350M proxy |
| 410m   | 50,304 | 1024    | 24     | 16    | 2816 | 360M / 308M                    | Pythia-410M (MATES) |
| 1b     | 50,304 | 2048    | 16     | 16    | 5632 | 925M / 822M                    | Pythia-1B, DCLM/PreSelect 1B |
| 7b     | 50,432 | 4096    | 32     | 32    | 11008| 6.7B / 6.5B                    | DCLM's 7B (Llama-2-7B shape) |

`preset_parameters` counts a preset's parameters from its shape (no model is built).

The vocabulary actually used is the tokenizer's. On this project's 2-core CPU the Llama-style
`tiny` trains at about 15k tokens/s and `xs` at about 4.5k (GPT-2-style: 6.6k and 2.6k), so
Llama-style is the default; `arch="gpt2"` builds the same sizes with learned positions and a
GELU MLP of 4 x d_model. RegMix's 1M-parameter proxies correspond to `tiny`/`xs`; CLIMB's
62M-350M ones to `m`/`l` and up. `5m` has 6x `tiny`'s non-embedding parameters (5.6M in all
with a 2,048-token vocabulary): the larger model of `benchmarks/mixing_transfer.py`.

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
    "5m": Preset(8192, 256, 6, 4, 768),
    "s": Preset(16384, 512, 8, 8, 1536),
    "m": Preset(32768, 768, 8, 12, 2048),
    "l": Preset(32768, 768, 16, 12, 2048),
    "1m": Preset(50432, 256, 2, 8, 512),
    "160m": Preset(50304, 768, 12, 12, 2048),
    "350m": Preset(32768, 1024, 24, 16, 2816),
    "410m": Preset(50304, 1024, 24, 16, 2816),
    "1b": Preset(50304, 2048, 16, 16, 5632),
    "7b": Preset(50432, 4096, 32, 32, 11008),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ConfigError(f"unknown proxy preset {name!r}; choose from {', '.join(PRESETS)}")
    return PRESETS[name]


def preset_parameters(
    preset: str, vocab_size: int | None = None, seq_len: int = 256, arch: str = "llama"
) -> dict[str, int]:
    """A preset's parameters as `build_model` makes them, counted from its shape: `total` (the
    tied embedding once) and `non_embedding` (all but the token embedding), as
    `assay.common.lm.count_parameters` counts a built model."""
    p = get_preset(preset)
    vocab, d = vocab_size or p.vocab_size, p.d_model
    if arch == "llama":  # q, k, v, o; gate, up, down; two RMSNorms; a final RMSNorm
        layer = 4 * d * d + 3 * d * p.d_ffn + 2 * d
        rest = d
    elif arch == "gpt2":  # biased attention and 4 x d MLP, two LayerNorms; positions, final norm
        layer = (4 * d * d + 4 * d) + (8 * d * d + 5 * d) + 4 * d
        rest = seq_len * d + 2 * d
    else:
        raise ConfigError(f"unknown architecture {arch!r}; use 'llama' or 'gpt2'")
    non_embedding = p.n_layers * layer + rest
    return {"total": non_embedding + vocab * d, "non_embedding": non_embedding}


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
