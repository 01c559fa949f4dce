"""Small file and hashing helpers shared by every module that writes output.

Everything assay writes goes through `atomic_path`: a crash, a kill or an exception leaves either
the old file or no file, never half of one. That is what lets "the output exists" mean "the work
is done" for resumable runs.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import gzip
import hashlib
import io
import json
import os
import re
import socket
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from assay.errors import StateError
from assay.util import zstd
from assay.util.hashing import config_hash
from assay.util.remote import publish

COMPRESSIONS = {".gz": "gzip", ".zst": "zstd"}
#: Leading bytes of each compressed format: a file is read by what it holds, not by its name.
MAGIC = {b"\x1f\x8b": "gzip", b"\x28\xb5\x2f\xfd": "zstd"}
BOM = b"\xef\xbb\xbf"


def compression_of(path: str | os.PathLike) -> str | None:
    """The compression implied by a file name, or None (for choosing how to *write* a file)."""
    for suffix, kind in COMPRESSIONS.items():
        if str(path).endswith(suffix):
            return kind
    return None


def sniff_compression(path: str | os.PathLike) -> str | None:
    """The compression a file really has, from its first bytes (a gzip file named .jsonl is
    still gzip); None for plain files."""
    with open(path, "rb") as f:
        head = f.read(4)
    for magic, kind in MAGIC.items():
        if head.startswith(magic):
            return kind
    return None


def open_stream(path: str | os.PathLike | BinaryIO, kind: str | None) -> BinaryIO:
    """A binary stream of a file's decompressed bytes (`kind`: 'gzip', 'zstd' or None); the
    caller closes it. `path` may also be an open binary file (a remote object's stream)."""
    if kind == "gzip":
        # ISA-L's igzip decompresses about twice as fast as zlib; fall back to the standard
        # library where it is not installed.
        try:
            from isal import igzip as gzip_impl
        except ImportError:
            gzip_impl = gzip
        return gzip_impl.open(path, "rb")  # type: ignore[return-value]
    if kind == "zstd":
        raw = path if hasattr(path, "read") else open(path, "rb")  # noqa: SIM115
        try:
            stream = zstd.reader(raw, closefd=True)
        except ValueError:
            raw.close()
            raise
        return io.BufferedReader(stream, buffer_size=1 << 20)  # type: ignore[arg-type]
    return path if hasattr(path, "read") else open(path, "rb")  # type: ignore[return-value]


@contextlib.contextmanager
def open_read(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Open a possibly compressed file (detected from its bytes) for streaming binary reads."""
    with open_stream(path, sniff_compression(path)) as f:
        yield f


@contextlib.contextmanager
def open_write(path: str | os.PathLike, compression: str | None) -> Iterator[BinaryIO]:
    """Open a file for streaming binary writes, compressing as asked."""
    if compression == "gzip":
        # Level 6 is gzip's default; level 3 loses ~5% size and writes twice as fast.
        # mtime=0 and no file name in the header: the same content gives the same bytes.
        with (
            open(path, "wb") as raw,
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=3, mtime=0) as f,
        ):
            yield f  # type: ignore[misc]
    elif compression == "zstd":
        import zstandard

        with (
            open(path, "wb") as raw,
            zstandard.ZstdCompressor(level=3).stream_writer(raw, closefd=False) as f,
        ):
            yield f  # type: ignore[misc]
    else:
        with open(path, "wb") as f:
            yield f


@functools.cache
def host_name() -> str:
    """This machine's name as it appears in temporary and lock file names (no '-' or '/')."""
    return re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname()) or "localhost"


#: `.tmp-<host>-<pid>-<8 hex>.<final name>`; the host has no '-', so the name parses back.
_TEMP_NAME = re.compile(r"^\.tmp-(?P<host>[A-Za-z0-9_.]+?)-(?P<pid>\d+)-[0-9a-f]{8}\.")


def temp_path_for(final: Path) -> Path:
    """A unique hidden sibling of `final`; renaming it onto `final` is atomic on POSIX.

    The final name is kept as the suffix so that writers can still tell the format from it,
    and the leading dot keeps corpus discovery from ever reading a half-written file. The host
    and pid in the name say whose file it is, for `remove_stale_temps` on shared storage.
    """
    return final.with_name(f".tmp-{host_name()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.{final.name}")


def remove_stale_temps(folder: str | os.PathLike) -> int:
    """Delete temporary files left in `folder` by dead processes of this host (a killed run).

    Only files whose name carries this host and the pid of a process that no longer runs are
    removed: on storage shared by several machines (Ray nodes), another host's temporary file
    may belong to a live writer, and this host cannot tell. Names without a host are left alone.
    """
    removed = 0
    root = Path(folder)
    if not root.is_dir():
        return 0
    me = host_name()
    for f in root.rglob(".tmp-*"):
        m = _TEMP_NAME.match(f.name)
        if m is None or m["host"] != me:
            continue
        pid = int(m["pid"])
        if pid == os.getpid() or pid_alive(pid):
            continue
        with contextlib.suppress(FileNotFoundError):
            if f.is_dir():
                import shutil

                shutil.rmtree(f)
            else:
                f.unlink()
            removed += 1
    return removed


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class OutputError(StateError):
    """An output cannot be written (disk full, read-only or missing folder, no permission)."""

    def __init__(self, path: str | os.PathLike, cause: OSError):
        self.path, self.cause = str(path), cause
        reason = _OS_REASONS.get(cause.errno or 0, cause.strerror or str(cause))
        super().__init__(f"cannot write {self.path}: {reason}")

    def __reduce__(self):  # keep the fields when the error crosses a process boundary
        return (OutputError, (self.path, self.cause))


_OS_REASONS = {
    errno.ENOSPC: "no space left on the device (disk full)",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOTDIR: "a parent of this path is a file, not a folder",
    errno.EISDIR: "a folder is in the way",
    errno.ENAMETOOLONG: "the name is too long",
}


#: errors that only a write can cause; others are blamed on the output only when they name it
_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


@contextlib.contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Turn an OS error while writing `path` (disk full, read-only, a file in the way) into an
    `OutputError` that names it; an error reading some input passes through unchanged."""
    try:
        yield
    except OSError as e:
        target, named = Path(path), getattr(e, "filename", None)
        # the output, a file beside it (its temporary) or a folder above it
        ours = named is not None and (
            Path(str(named)).is_relative_to(target.parent) or target.is_relative_to(str(named))
        )
        if e.errno in _WRITE_ERRNOS or (ours and e.errno in _OS_REASONS):
            raise OutputError(named or path, e) from e
        raise


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; rename it onto `final` only if the block succeeds."""
    final = Path(final)
    with writing(final):
        final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(final)
    try:
        with writing(final):
            yield tmp
            os.replace(tmp, final)
        publish(final)  # a file of a remote folder's mirror goes to the remote, whole
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON atomically, sorted and indented so that files diff well."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def json_normal(obj: Any) -> Any:
    """`obj` as it reads back from JSON (tuples become lists...), for comparing with a saved one."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def fingerprint(path: str | os.PathLike, edge_bytes: int = 1 << 20) -> dict[str, Any]:
    """A cheap identity of an input file: size, mtime and a hash of its first and last MiB.

    Hashing whole shards would cost a full read of the corpus on every run; head+tail+size
    catches the realistic accidents (a regenerated, truncated or appended shard), and the
    modification time catches an edit in the middle. Computed once per file version and process.
    """
    p = Path(path)
    st = p.stat()
    digest = _edges_digest(str(p), st.st_size, st.st_mtime_ns, st.st_ino, edge_bytes)
    return {
        "path": str(p),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "sha256_edges": digest,
    }


@functools.lru_cache(maxsize=65536)
def _edges_digest(path: str, size: int, mtime_ns: int, inode: int, edge_bytes: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(edge_bytes))
        if size > 2 * edge_bytes:
            f.seek(size - edge_bytes)
            h.update(f.read(edge_bytes))
    return h.hexdigest()


def content_id(path: str | os.PathLike, *, mtime: bool = True) -> dict[str, Any]:
    """What a resumed output compares to know its input is unchanged: the fingerprint without
    the path (a moved corpus is the same corpus), and without the mtime for derived files
    that assay rewrites with the same bytes (a scorer saved again)."""
    fp = fingerprint(path)
    del fp["path"]
    if not mtime:
        del fp["mtime_ns"]
    return fp


def folder_fingerprint(
    folder: str | os.PathLike, suffixes: tuple[str, ...] | None = None, *, mtime: bool = True
) -> str | None:
    """One hash of the files in a folder (a saved model), or None when it is not a folder."""
    root = Path(folder)
    if not root.is_dir():
        return None
    files = sorted(
        f
        for f in root.rglob("*")
        if f.is_file() and not f.name.startswith(".") and (suffixes is None or f.suffix in suffixes)
    )
    return config_hash(
        [[f.relative_to(root).as_posix(), content_id(f, mtime=mtime)] for f in files]
    )


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a whole (small) file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def read_parquet(path: str | os.PathLike, **kwargs: Any) -> Any:
    """`polars.read_parquet` on exactly this file: '[', '*' or '?' in a name is not a glob."""
    import polars as pl

    return pl.read_parquet(path, glob=False, **kwargs)


def iter_parquet(
    path: str | os.PathLike, columns: list[str] | None = None, batch_rows: int = 1 << 16
) -> Iterator[Any]:
    """A parquet file as polars DataFrames of at most `batch_rows` rows, in file order: memory
    holds a batch (and a row group), never the whole file."""
    import polars as pl
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as f:
        for batch in f.iter_batches(batch_size=batch_rows, columns=columns):
            yield pl.from_arrow(batch)


def concat_column(files: Sequence[str | os.PathLike], name: str, dtype: Any) -> Any:
    """One column of several parquet files, in file and row order, as a numpy array of `dtype`,
    read a batch at a time (memory: the array and one batch)."""
    import numpy as np

    out = np.empty(sum(parquet_rows(f) for f in files), dtype=dtype)
    at = 0
    for f in files:
        for part in iter_parquet(f, [name]):
            out[at : at + part.height] = part.get_column(name).to_numpy()
            at += part.height
    return out


def parquet_rows(path: str | os.PathLike) -> int:
    """The number of rows of a parquet file, from its footer."""
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as f:
        return int(f.metadata.num_rows)


def package_versions(names: list[str]) -> dict[str, str | None]:
    """Installed versions of distributions (None when absent), for run records."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out
