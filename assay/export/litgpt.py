"""LitGPT: each domain as a litdata token dataset, and the data module that mixes them.

`litgpt pretrain` reads pretraining data through a `DataModule` named in its config (`data:`
with `class_path` and `init_args`); its own modules stream litdata datasets written by
`litdata.optimize` (`TextFiles`, `LitData`, and `TinyLlama`, which mixes two of them with
fixed weights). LitGPT reads no Megatron or raw token files, so this export writes the tokens
again, in litdata's layout (`litdata_tokens.py`): `<domain>/index.json` and its chunks, one
item per document as the source has them (ids, EOS included, as int32). Beside them:

- `assay_litgpt.py`: the data module (`AssayMixture`: a `StreamingDataset` of `TokensLoader`
  blocks per domain, drawn by `CombinedStreamingDataset` with the shares as weights);
- `litgpt.yaml`: its `data:` section (`class_path: assay_litgpt.AssayMixture`, `init_args`:
  the folder, the domains, the shares, the seed) and, given a budget, `train.max_tokens`.

    PYTHONPATH=export/ litgpt pretrain pythia-160m --config export/litgpt.yaml \\
        --tokenizer_dir checkpoints/...

Cost: one pass over the source's tokens, memory one 50 MB chunk.
"""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from assay.export.indexed import IndexedFile
from assay.export.litdata_tokens import LitdataTokensWriter
from assay.export.raw import read_datatrove
from assay.export.sources import Source, SourceFile, where
from assay.util.files import atomic_path

MODULE = "assay_litgpt.py"
CLASS_PATH = "assay_litgpt.AssayMixture"
BATCH_TOKENS = 1 << 22  # tokens read from a source file at a time


def write_litgpt(
    src: Source, shares: Mapping[str, float], root: Path, summary: dict, *, seed: int, **_: Any
) -> list[dict]:
    """Write each domain with a share as a litdata dataset, the data module and its config."""
    files = []
    for d in shares:
        folder = root / src.folders[d]
        writer = LitdataTokensWriter(folder)
        for f in src.domains[d]:
            for tokens, lengths in _documents(f):
                writer.add_many(tokens, lengths)
        index = writer.close()
        files.append(
            {
                "domain": d,
                "folder": str(folder.resolve()),
                "tokens": writer.tokens,
                "chunks": len(index["chunks"]),
            }
        )
    with atomic_path(root / MODULE) as tmp:
        shutil.copyfile(Path(__file__).with_name(MODULE), tmp)
    init_args = {
        "data_path": where(root),
        "domains": [src.folders[d] for d in shares],
        "weights": [float(s) for s in shares.values()],
        "seed": seed,
    }
    config: dict[str, Any] = {"data": {"class_path": CLASS_PATH, "init_args": init_args}}
    if summary.get("budget") is not None:
        config["train"] = {"max_tokens": int(summary["budget"])}
    with atomic_path(root / "litgpt.yaml") as tmp:
        tmp.write_text(
            _HEADER.format(data=init_args["data_path"]) + yaml.safe_dump(config, sort_keys=False)
        )
    return files


_HEADER = """\
# LitGPT pretraining data written by `assay export --to litgpt`: one litdata token dataset
# per domain under {data}, mixed by the data module of assay_litgpt.py beside this file.
#   PYTHONPATH=<this folder> litgpt pretrain <model> --config <this folder>/litgpt.yaml \\
#       --tokenizer_dir <the tokenizer the ids were made with>
"""


def _documents(f: SourceFile) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """A tokenized file's documents, a batch at a time: (ids one after another, lengths)."""
    if f.megatron is not None:
        data = IndexedFile(f.megatron)
        lengths = np.asarray(data.lengths, dtype=np.int64)
        starts = np.asarray(data.pointers, dtype=np.int64) // data.dtype.itemsize
        contiguous = bool(np.all(starts[1:] == starts[:-1] + lengths[:-1]))
    else:
        assert f.datatrove is not None and f.token_size is not None
        ids, ends = read_datatrove(f.datatrove, f.token_size)
        ends = ends.astype(np.int64)
        lengths = np.diff(ends, prepend=0)
        starts = ends - lengths
        contiguous = True
        data = None
    cuts = _batches(lengths)
    for a, b in itertools.pairwise(cuts):
        if a == b:
            continue
        if contiguous:
            lo, hi = int(starts[a]), int(starts[b - 1] + lengths[b - 1])
            tokens = data.data[lo:hi] if data is not None else ids[lo:hi]
        else:  # sequences stored out of order: gathered one by one
            tokens = np.concatenate([data[i] for i in range(a, b)])
        yield np.asarray(tokens), lengths[a:b]


def _batches(lengths: np.ndarray) -> list[int]:
    """Document cuts into batches of about BATCH_TOKENS tokens."""
    ends = np.cumsum(lengths)
    cuts = np.searchsorted(
        ends, np.arange(BATCH_TOKENS, int(ends[-1]) if len(ends) else 0, BATCH_TOKENS), side="right"
    )
    return [0, *sorted(set(int(c) for c in cuts) - {0, len(lengths)}), len(lengths)]
