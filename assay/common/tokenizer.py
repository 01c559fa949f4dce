"""Tokenizers for proxy models: train a small byte-level BPE on a corpus sample, or load one.

Small vocabularies matter on CPU: at a 50k vocabulary the embedding and output layers dominate a
proxy's cost (a 16M-parameter GPT trains at a third of the speed of a 5M one with an 8k vocab).
Proxies of one mixture search must share one tokenizer; bits per byte, not loss per token, is
what compares across tokenizers.

Trained tokenizers are saved as ordinary Hugging Face tokenizer folders (`tokenizer.json`
plus configs), so `AutoTokenizer.from_pretrained(folder)` and lm-eval load them unchanged.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from assay.errors import ConfigError, MissingError
from assay.io.corpus import Corpus
from assay.util.files import write_json

EOS = "<|endoftext|>"
PAD = "<|pad|>"
SPECIAL_TOKENS = [EOS, PAD]
MIN_VOCAB_SIZE = 256 + len(SPECIAL_TOKENS)
#: Far above any proxy's needs (GPT-4's is 100k, Gemma's 256k); a typo like 10**12 would
#: otherwise make the BPE trainer abort the whole process while allocating.
MAX_VOCAB_SIZE = 1 << 20

log = logging.getLogger(__name__)


def train_tokenizer(
    corpus: Corpus,
    vocab_size: int,
    out_dir: str | os.PathLike,
    *,
    sample_docs: int = 20_000,
    seed: int = 0,
    min_frequency: int = 2,
) -> Any:
    """Train a byte-level BPE tokenizer on a uniform sample of `corpus` and save it.

    Byte-level means every string is representable (no unknown tokens), so bits per byte are
    exact. Returns a `transformers.PreTrainedTokenizerFast`.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if isinstance(vocab_size, bool) or not MIN_VOCAB_SIZE <= vocab_size <= MAX_VOCAB_SIZE:
        raise ConfigError(
            f"vocab_size must be between {MIN_VOCAB_SIZE} (the 256 bytes and special tokens) "
            f"and {MAX_VOCAB_SIZE:,}, not {vocab_size!r}"
        )
    corpus.check_output(out_dir, "tokenizer folder")
    texts = corpus.sample(sample_docs, seed=seed).get_column("text").to_list()
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    log.info("training a %d-token BPE tokenizer on %d documents", vocab_size, len(texts))
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS, bos_token=EOS, pad_token=PAD
    )
    out = Path(out_dir)
    fast.save_pretrained(str(out))
    write_json(
        out / "assay_tokenizer.json",
        {
            "vocab_size": vocab_size,
            "sample_docs": len(texts),
            "seed": seed,
            "corpus": [s.name for s in corpus.shards],
        },
    )
    log.info("tokenizer saved in %s", out)
    return fast


def load_tokenizer(path: str | os.PathLike, gguf_file: str | None = None) -> Any:
    """Load a local Hugging Face tokenizer folder (or the tokenizer inside a GGUF file).

    Never reaches a hub: a path that does not exist is an error, not a model name to download.
    """
    from transformers import AutoTokenizer

    p = Path(path)
    if not p.exists():
        raise MissingError(
            f"no tokenizer at {p}: give a local tokenizer folder (nothing is downloaded)"
        )
    kwargs: dict[str, Any] = {"local_files_only": True}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    tok = AutoTokenizer.from_pretrained(str(p), **kwargs)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def token_dtype(vocab_size: int) -> str:
    """The smallest unsigned integer type that holds every token id."""
    return "uint16" if vocab_size <= 1 << 16 else "uint32"
