"""datatrove's tokenized files (`.ds`), the format nanotron's Nanoset reads.

As `src/datatrove/pipeline/tokens/tokenizer.py` of huggingface/datatrove (`TokenizedFile`)
writes them and `DatatroveFolderDataset` (read by nanotron's `src/nanotron/data/nanoset.py`
from every `*.ds` file of a folder) reads them:

- `<name>.ds`: the token ids one after another, little-endian, `token_size` bytes each
  (2: uint16 while ids fit, else 4: uint32);
- `<name>.ds.index`: the end of each document, in tokens, as little-endian uint64;
- `<name>.ds.metadata`: text lines `<tokenizer>|<token_size>`, the token count, and the
  count in a readable form.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from assay.errors import ConfigError, InputError
from assay.export.indexed import TokenFileWriter
from assay.util.files import temp_path_for
from assay.util.remote import publish


class DatatroveWriter(TokenFileWriter):
    """One `.ds` file and its index and metadata, a batch of documents at a time; the files
    are renamed into place on `close()` (the `.ds` last)."""

    def __init__(self, path: str | os.PathLike, token_size: int, tokenizer: str | None = None):
        if token_size not in (2, 4):
            raise ConfigError(f"datatrove writes 2 or 4 bytes per token, not {token_size}")
        self.path = Path(path)
        self.dtype = np.dtype("<u2" if token_size == 2 else "<u4")
        self.token_size = token_size
        self.tokenizer = tokenizer or "Unknown Tokenizer"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.finals = [self.path, *(self.path.with_name(self.path.name + s) for s in SIDECARS)]
        self.temps = [temp_path_for(p) for p in self.finals]
        self._ds = open(self.temps[0], "wb")  # noqa: SIM115 - closed by close()/abort()
        self._index = open(self.temps[1], "wb")  # noqa: SIM115
        self.tokens = 0

    def add_many(self, tokens: np.ndarray, lengths: np.ndarray) -> None:
        if int(np.sum(lengths)) != len(tokens):
            raise InputError("the document lengths do not add up to the tokens given")
        if len(tokens) and int(np.max(tokens)) > np.iinfo(self.dtype).max:
            raise InputError(f"token ids above {np.iinfo(self.dtype).max} need 4 bytes each")
        np.ascontiguousarray(tokens, dtype=self.dtype).tofile(self._ds)
        ends = self.tokens + np.cumsum(np.asarray(lengths, dtype=np.uint64))
        ends.astype("<u8").tofile(self._index)
        self.tokens += len(tokens)

    def close(self) -> None:
        self._ds.close()
        self._index.close()
        self.temps[2].write_text(
            f"{self.tokenizer}|{self.token_size}\n{self.tokens}\n{_readable(self.tokens)}"
        )
        for tmp, final in reversed(list(zip(self.temps, self.finals, strict=True))):
            os.replace(tmp, final)
            publish(final)  # in a remote folder's mirror: uploaded, the .ds last

    def abort(self) -> None:
        self._ds.close()
        self._index.close()
        for tmp in self.temps:
            tmp.unlink(missing_ok=True)


SIDECARS = (".index", ".metadata")


def read_datatrove(path: str | os.PathLike, token_size: int) -> tuple[np.ndarray, np.ndarray]:
    """A `.ds` file's token ids (memory-mapped) and its document ends."""
    p = Path(path)
    ids = np.memmap(p, dtype="<u2" if token_size == 2 else "<u4", mode="r")
    ends = np.fromfile(p.with_name(p.name + ".index"), dtype="<u8")
    return ids, ends


def ds_tokens(path: str | os.PathLike, token_size: int) -> int:
    """Tokens in a `.ds` file, from its size (what nanotron counts)."""
    return os.path.getsize(path) // token_size


def _readable(n: int) -> str:
    for unit, scale in (("T", 10**12), ("G", 10**9), ("M", 10**6), ("k", 10**3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}T"
    return f"{n} T"
