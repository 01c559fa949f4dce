"""Megatron's indexed dataset (`.bin`/`.idx`, "MMIDIDX"), written and read from its layout.

The layout, as `megatron/core/datasets/indexed_dataset.py` of NVIDIA/Megatron-LM
(`_IndexWriter`, `_IndexReader`; megatron-core 0.16) writes and reads it:

- `<prefix>.bin`: the token ids of every sequence, one after another, in the index' dtype.
- `<prefix>.idx`, little-endian: the 9 bytes `MMIDIDX\\x00\\x00`; the version, `<Q` 1; the
  dtype code, `<B` (Megatron's `DType`: 1 uint8, 2 int8, 3 int16, 4 int32, 5 int64,
  6 float64, 7 float32, 8 uint16); the sequence count `<Q`; the document count `<Q`; then
  the sequence lengths (int32, one per sequence), the sequence pointers (int64 byte offsets
  into `.bin`, one per sequence) and the document indices (int64, document count of them:
  0, then the end of each document in sequences). A multimodal index adds one int8 mode
  per sequence, which assay never writes.

Here a sequence is a document (Megatron's `preprocess_data.py` without sentence splitting),
so the document indices are 0, 1, ..., n. Token ids take uint16 when they fit (Megatron's
`DType.optimal_dtype`: below 65,500 ids) and int32 otherwise (Megatron has no uint32).
The `.bin` file is also what OLMo-core's numpy datasets and datatrove's `.ds` files hold: the
raw ids, read with a memory map.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

from assay.errors import InputError, MissingError
from assay.util.files import temp_path_for
from assay.util.remote import publish

MAGIC = b"MMIDIDX\x00\x00"
VERSION = 1
DTYPE_CODES: dict[int, np.dtype] = {
    1: np.dtype(np.uint8),
    2: np.dtype(np.int8),
    3: np.dtype(np.int16),
    4: np.dtype(np.int32),
    5: np.dtype(np.int64),
    6: np.dtype(np.float64),
    7: np.dtype(np.float32),
    8: np.dtype(np.uint16),
}
CODE_OF = {dtype: code for code, dtype in DTYPE_CODES.items()}
HEADER_BYTES = len(MAGIC) + 8 + 1 + 8 + 8


def token_dtype(vocab_size: int) -> np.dtype:
    """Megatron's choice for ids below `vocab_size`: uint16 below 65,500, else int32."""
    return np.dtype(np.uint16) if vocab_size < 65500 else np.dtype(np.int32)


class TokenFileWriter:
    """A writer of token files as a context manager: `close()` (publish the finished files)
    when the block succeeds, `abort()` (remove the temporary ones) when it raises."""

    def close(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class IndexedWriter(TokenFileWriter):
    """Writes one `.bin`/`.idx` pair a document at a time (memory: 4 bytes per document).

    Both files are written under temporary names and renamed into place by `close()` (`.bin`
    first, so an `.idx` is never there without its data); `abort()` removes them."""

    def __init__(self, prefix: str | os.PathLike, dtype: np.dtype | type):
        self.prefix = Path(prefix)
        self.dtype = np.dtype(dtype)
        if self.dtype not in CODE_OF:
            raise InputError(f"Megatron's index has no code for {self.dtype}")
        self.prefix.parent.mkdir(parents=True, exist_ok=True)
        self.bin_path, self.idx_path = _paths(self.prefix)
        self._bin_tmp, self._idx_tmp = temp_path_for(self.bin_path), temp_path_for(self.idx_path)
        self._bin = open(self._bin_tmp, "wb")  # noqa: SIM115 - closed by close()/abort()
        self._lengths: list[np.ndarray] = []
        self.documents = 0
        self.tokens = 0

    def add(self, tokens: np.ndarray) -> None:
        """One document."""
        self.add_many(tokens, np.array([len(tokens)], dtype=np.int64))

    def add_many(self, tokens: np.ndarray, lengths: np.ndarray) -> None:
        """Several documents: their ids one after another, and their lengths."""
        if int(lengths.sum()) != len(tokens):
            raise InputError("the document lengths do not add up to the tokens given")
        np.ascontiguousarray(tokens, dtype=self.dtype).tofile(self._bin)
        self._lengths.append(np.asarray(lengths, dtype=np.int32))
        self.documents += len(lengths)
        self.tokens += len(tokens)

    def close(self) -> None:
        self._bin.close()
        lengths = np.concatenate(self._lengths) if self._lengths else np.zeros(0, np.int32)
        pointers = np.zeros(len(lengths), dtype=np.int64)
        if len(lengths) > 1:
            np.cumsum(lengths[:-1].astype(np.int64) * self.dtype.itemsize, out=pointers[1:])
        with open(self._idx_tmp, "wb") as f:
            f.write(MAGIC)
            f.write(struct.pack("<Q", VERSION))
            f.write(struct.pack("<B", CODE_OF[self.dtype]))
            f.write(struct.pack("<Q", len(lengths)))
            f.write(struct.pack("<Q", len(lengths) + 1))
            f.write(lengths.astype("<i4").tobytes())
            f.write(pointers.astype("<i8").tobytes())
            f.write(np.arange(len(lengths) + 1, dtype="<i8").tobytes())
        os.replace(self._bin_tmp, self.bin_path)
        os.replace(self._idx_tmp, self.idx_path)
        for path in (self.bin_path, self.idx_path):  # in a remote folder's mirror: uploaded
            publish(path)

    def abort(self) -> None:
        self._bin.close()
        for p in (self._bin_tmp, self._idx_tmp):
            p.unlink(missing_ok=True)


class IndexedFile:
    """A `.bin`/`.idx` pair read from the layout above (memory-mapped; nothing is copied)."""

    def __init__(self, prefix: str | os.PathLike):
        self.prefix = Path(prefix)
        bin_path, idx_path = _paths(self.prefix)
        if not idx_path.is_file() or not bin_path.is_file():
            raise MissingError(f"no Megatron dataset at {self.prefix} (.bin and .idx)")
        index = np.memmap(idx_path, dtype=np.uint8, mode="r")
        head = bytes(index[:HEADER_BYTES])
        if len(head) < HEADER_BYTES or head[: len(MAGIC)] != MAGIC:
            raise InputError(f"{idx_path} is not a Megatron index (no MMIDIDX header)")
        version, code, n_seq, n_doc = struct.unpack("<QBQQ", head[len(MAGIC) :])
        if version != VERSION or code not in DTYPE_CODES:
            raise InputError(f"{idx_path}: index version {version}, dtype code {code} unknown")
        self.dtype = DTYPE_CODES[code]
        at = HEADER_BYTES
        self.lengths = np.frombuffer(index, dtype="<i4", count=n_seq, offset=at)
        at += 4 * n_seq
        self.pointers = np.frombuffer(index, dtype="<i8", count=n_seq, offset=at)
        at += 8 * n_seq
        self.document_indices = np.frombuffer(index, dtype="<i8", count=n_doc, offset=at)
        self.data = np.memmap(bin_path, dtype=self.dtype.newbyteorder("<"), mode="r")

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def tokens(self) -> int:
        return int(self.lengths.sum(dtype=np.int64))

    def __getitem__(self, i: int) -> np.ndarray:
        start = int(self.pointers[i]) // self.dtype.itemsize
        return np.asarray(self.data[start : start + int(self.lengths[i])])


def count_tokens(prefix: str | os.PathLike) -> tuple[int, int]:
    """(documents, tokens) of a Megatron dataset, from its index alone."""
    f = IndexedFile(prefix)
    return len(f.document_indices) - 1, f.tokens


def _paths(prefix: Path) -> tuple[Path, Path]:
    return prefix.with_name(prefix.name + ".bin"), prefix.with_name(prefix.name + ".idx")
