"""litdata's optimized token datasets (`index.json` + `chunk-<rank>-<i>.bin`), what LitGPT's
pretraining data modules stream with `StreamingDataset(item_loader=TokensLoader(...))`.

The layout, as `litdata/streaming/writer.py` of Lightning-AI/litdata (`BinaryWriter`,
`_create_chunk`, `write_chunks_index`, `_merge_no_wait`) writes it and `TokensLoader`
(`litdata/streaming/item_loader.py`) reads it, for the items LitGPT's `prepare_*` scripts and
`TextFiles` write (one 1-D int32 tensor of token ids per document, `Tokenizer.encode`'s dtype):

- `chunk-0-<i>.bin`: little-endian uint32 item count n, n + 1 uint32 byte offsets of the items
  (from the file's start: the first is the header's size, 4 * (n + 2)), then the items' bytes:
  each the document's ids as int32, without a header of its own (litdata's
  `no_header_tensor` serializer).
- `index.json`: `{"chunks": [...], "config": {...}, "updated_at": "..."}`; a chunk is
  `{"chunk_bytes", "chunk_size" (items), "dim" (tokens), "filename"}`; the config names the
  serializer (`"data_format": ["no_header_tensor:16"]`, 16 being torch.int32 in litdata's
  `_TORCH_DTYPES_MAPPING`), the flattened item spec of a bare tensor, no compression or
  encryption, and `"item_loader": "TokensLoader"`.

`TokensLoader(block_size=b)` skips each chunk's header and cuts its tokens into `dim // b`
blocks; a block never spans two chunks, so up to b - 1 tokens at the end of each chunk are
not read (chunks are 50 MB here, as LitGPT's `TextFiles` writes them: 12.5M tokens).
`read_litdata` is an independent reader of this layout, for checks.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from assay.errors import InputError
from assay.util.files import atomic_path
from assay.util.remote import unpublish

INDEX = "index.json"
DATA_FORMAT = "no_header_tensor:16"  # torch.int32, as litgpt's Tokenizer.encode returns
TOKEN = np.dtype("<i4")
CHUNK_BYTES = 50_000_000  # LitGPT's TextFiles: optimize(..., chunk_bytes="50MB")
# the flattened spec of a single tensor item (litdata.utilities._pytree.treespec_dumps)
DATA_SPEC = json.dumps([1, {"type": None, "context": None, "children_spec": []}])


class LitdataTokensWriter:
    """Writes one litdata token dataset into a folder, a batch of documents at a time; memory:
    one chunk. Each chunk is renamed into place whole and `index.json` is written last, so a
    folder with an index is complete."""

    def __init__(self, folder: str | os.PathLike, chunk_bytes: int = CHUNK_BYTES):
        self.folder = Path(folder)
        self.chunk_bytes = int(chunk_bytes)
        self.chunks: list[dict] = []
        self._docs: list[np.ndarray] = []
        self._lengths: list[np.ndarray] = []
        self._bytes = 0
        self.tokens = 0
        _remove_old(self.folder)

    def add_many(self, tokens: np.ndarray, lengths: np.ndarray) -> None:
        """Documents: their ids one after another, and their lengths (each becomes an item)."""
        lengths = np.asarray(lengths, dtype=np.int64)
        if int(lengths.sum()) != len(tokens):
            raise InputError("the document lengths do not add up to the tokens given")
        if len(tokens) and int(np.max(tokens)) > np.iinfo(TOKEN).max:
            raise InputError("token ids above 2**31 - 1 do not fit litdata's int32 tokens")
        at = 0
        while len(lengths):
            cost = np.cumsum(lengths * TOKEN.itemsize + 4)  # an item's bytes and its offset
            k = int(np.searchsorted(cost, self.chunk_bytes - self._bytes, side="right"))
            if k == 0 and not self._docs:
                k = 1  # a document larger than a chunk is a chunk of its own (as litdata's)
            if k:
                n = int(lengths[:k].sum())
                self._docs.append(np.asarray(tokens[at : at + n]))
                self._lengths.append(lengths[:k])
                self._bytes += int(cost[k - 1])
                at, lengths = at + n, lengths[k:]
            if len(lengths):
                self._flush()

    def close(self) -> dict:
        """Write the last chunk and `index.json`; returns the index."""
        if self._docs:
            self._flush()
        index = {
            "chunks": self.chunks,
            "config": config(self.chunk_bytes),
            "updated_at": _stamp(self.chunks),
        }
        with atomic_path(self.folder / INDEX) as tmp:
            tmp.write_text(json.dumps(index, sort_keys=True))
        return index

    def _flush(self) -> None:
        lengths = np.concatenate(self._lengths)
        n = len(lengths)
        header = 4 * (n + 2)
        offsets = header + np.concatenate([[0], np.cumsum(lengths * TOKEN.itemsize)])
        if offsets[-1] >= 2**32:
            raise InputError("a litdata chunk is addressed with uint32: a document is too long")
        name = f"chunk-0-{len(self.chunks)}.bin"
        with atomic_path(self.folder / name) as tmp, open(tmp, "wb") as f:
            np.array([n], dtype="<u4").tofile(f)
            offsets.astype("<u4").tofile(f)
            for doc in self._docs:
                np.ascontiguousarray(doc, dtype=TOKEN).tofile(f)
        dim = int(lengths.sum())
        self.chunks.append(
            {"chunk_bytes": int(offsets[-1]), "chunk_size": n, "dim": dim, "filename": name}
        )
        self.tokens += dim
        self._docs, self._lengths, self._bytes = [], [], 0


def config(chunk_bytes: int) -> dict:
    """The `config` of `index.json`, as litdata's `BinaryWriter.get_config` writes it for
    uncompressed int32 token tensors."""
    return {
        "chunk_bytes": chunk_bytes,
        "chunk_size": None,
        "compression": None,
        "compression_batch_size": None,
        "compression_level": None,
        "data_format": [DATA_FORMAT],
        "data_spec": DATA_SPEC,
        "encryption": None,
        "ipc_compression": None,
        "item_loader": "TokensLoader",
        "types": "tensor",
    }


def _stamp(chunks: list[dict]) -> str:
    """`updated_at`: litdata names its local cache of a remote dataset after it, so it must
    change with the contents; here a number derived from the chunk table (the same data gives
    the same index, byte for byte)."""
    digest = hashlib.sha256(json.dumps(chunks, sort_keys=True).encode()).hexdigest()
    return str(int(digest[:12], 16))


def _remove_old(folder: Path) -> None:
    """A folder written before: its index first (so it is never read half replaced), then the
    chunks it listed."""
    index = folder / INDEX
    if not index.is_file():
        return
    old = json.loads(index.read_text())
    for path in [index, *(folder / c["filename"] for c in old.get("chunks", []))]:
        path.unlink(missing_ok=True)
        unpublish(path)  # in a remote folder's mirror: removed there too


def read_litdata(folder: str | os.PathLike) -> Iterator[np.ndarray]:
    """The items (documents) of a litdata token dataset, read from the layout above."""
    folder = Path(folder)
    index = json.loads((folder / INDEX).read_text())
    if index["config"].get("data_format") != [DATA_FORMAT]:
        raise InputError(f"{folder}: not a dataset of int32 token tensors")
    for chunk in index["chunks"]:
        data = np.fromfile(folder / chunk["filename"], dtype=np.uint8)
        n = int(data[:4].view("<u4")[0])
        if n != chunk["chunk_size"] or len(data) != chunk["chunk_bytes"]:
            raise InputError(f"{folder / chunk['filename']} does not match {INDEX}")
        offsets = data[4 : 4 * (n + 2)].view("<u4").astype(np.int64)
        for a, b in itertools.pairwise(offsets):
            yield data[a:b].view(TOKEN)
