"""The on-disk embedding cache: one SQLite table of vectors per model and settings.

A row is a text's 64-bit hash (the key) and its float32 vector (the bytes). A lookup asks the
table for the keys of one batch only (an indexed query), so its cost does not grow with the
cache and a worker holds nothing but the batch (and SQLite's page cache, 2 MB): an `Embedder`
called once per batch costs about the same at the millionth document as at the first. Rows are
appended in insertion order with a separate unique index on the key, so a write adds vectors
at the end of the file and only the small index (about 20 bytes a key) takes random writes;
keying the table itself by the hash made every write land on a random page.

Several processes on one machine may read and write one folder at once (a process pool's
workers, Ray workers on that node): SQLite serialises the writers (write-ahead log, a busy
wait of up to ten minutes), each `put` is one transaction, so a killed worker leaves every
finished one and never half of one, and a key already stored is kept (the same text gives the
same vector). The folder must be on a local disk of the machine, as SQLite's write-ahead log
needs (the default, `~/.cache/assay/embeddings`, is).

Caches written by earlier versions (`chunk-*.npz` files) are moved into the table the first
time their folder is opened, one file per transaction.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

import numpy as np

DB_FILE = "vectors.sqlite"

#: keys per SELECT (well under SQLite's smallest limit on bound parameters, 999)
QUERY_KEYS = 500

#: pages (4 KiB) of write-ahead log between two copies into the table
CHECKPOINT_PAGES = 10_000

#: connections inherited over a fork are never used nor closed (closing one could checkpoint
#: the parent's database under it); they are kept here so the garbage collector leaves them be
_INHERITED: list[sqlite3.Connection] = []


class EmbeddingCache:
    """Vectors already computed for one model: `get(keys)` and `put(keys, vectors)`, keys being
    `stable_hash64` of the texts (uint64).

    The object pickles as its folder; each process (and a fork) opens its own connection on
    first use.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"folder": self.folder}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["folder"])  # type: ignore[misc]

    def close(self) -> None:
        """Close this process' connection (a later call opens another)."""
        with self._lock:
            if self._conn is not None:
                if self._pid == os.getpid():
                    self._conn.close()
                else:
                    _INHERITED.append(self._conn)
            self._conn = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def _db(self, create: bool) -> sqlite3.Connection | None:
        """This process' connection (None when nothing is cached yet and `create` is false)."""
        if self._conn is not None and self._pid != os.getpid():
            _INHERITED.append(self._conn)
            self._conn = None
        if self._conn is None:
            path = self.folder / DB_FILE
            legacy = sorted(self.folder.glob("chunk-*.npz")) if self.folder.exists() else []
            if not create and not legacy and not path.exists():
                return None
            self.folder.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                path, timeout=600.0, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")  # WAL: durable to a crash, never corrupt
            # copy the log into the table every ~40 MB, not 4: an index page that several
            # batches touch is written back once
            conn.execute(f"PRAGMA wal_autocheckpoint={CHECKPOINT_PAGES}")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS vectors (key INTEGER NOT NULL UNIQUE, vector BLOB NOT NULL)"
            )
            self._conn, self._pid = conn, os.getpid()
            for chunk in legacy:
                self._import(chunk)
        return self._conn

    def _import(self, chunk: Path) -> None:
        """Move one chunk of the former cache format into the table (several processes may do
        it at once: inserting is idempotent and the file may already be gone)."""
        try:
            with np.load(chunk) as z:
                keys, vectors = z["keys"], z["vectors"]
        except FileNotFoundError:
            return
        self._insert(keys, vectors)
        chunk.unlink(missing_ok=True)

    def get(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(found mask, vectors of the found keys in order)."""
        with self._lock:
            conn = self._db(create=False)
            if conn is None or not len(keys):
                return np.zeros(len(keys), dtype=bool), None
            signed = np.ascontiguousarray(keys, dtype=np.uint64).view(np.int64)
            wanted = np.unique(signed)
            rows: list[tuple[int, bytes]] = []
            for a in range(0, len(wanted), QUERY_KEYS):
                part = wanted[a : a + QUERY_KEYS].tolist()
                marks = ",".join("?" * len(part))
                sql = f"SELECT key, vector FROM vectors WHERE key IN ({marks})"
                rows += conn.execute(sql, part).fetchall()
        if not rows:
            return np.zeros(len(keys), dtype=bool), None
        got = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32)
        vecs = vecs.reshape(len(rows), -1)
        order = np.argsort(got)
        got, vecs = got[order], vecs[order]
        pos = np.searchsorted(got, signed).clip(max=len(got) - 1)
        found = got[pos] == signed
        return found, vecs[pos[found]]

    def put(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        if not len(keys):
            return
        with self._lock:
            self._db(create=True)
            self._insert(keys, vectors)

    def _insert(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        conn = self._conn
        assert conn is not None
        signed = np.ascontiguousarray(keys, dtype=np.uint64).view(np.int64)
        order = np.argsort(signed)  # in key order: the index is walked once, not jumped about
        signed = signed[order].tolist()
        rows = np.ascontiguousarray(vectors, dtype=np.float32)[order]
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(
                "INSERT OR IGNORE INTO vectors (key, vector) VALUES (?, ?)",
                zip(signed, (r.tobytes() for r in rows), strict=True),
            )
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


__all__ = ["DB_FILE", "EmbeddingCache"]
