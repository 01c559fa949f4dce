"""Small file and hashing helpers shared by every module that writes output.

Everything assay writes goes through `atomic_path`: a crash, a kill or an exception leaves either
the old file or no file, never half of one. That is what lets "the output exists" mean "the work
is done" for resumable runs.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

COMPRESSIONS = {".gz": "gzip", ".zst": "zstd"}


def compression_of(path: str | os.PathLike) -> str | None:
    """The compression implied by a file name, or None."""
    for suffix, kind in COMPRESSIONS.items():
        if str(path).endswith(suffix):
            return kind
    return None


@contextlib.contextmanager
def open_read(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Open a possibly compressed file for streaming binary reads."""
    kind = compression_of(path)
    if kind == "gzip":
        # ISA-L's igzip decompresses about twice as fast as zlib; fall back to the standard
        # library where it is not installed.
        try:
            from isal import igzip as gzip_impl
        except ImportError:
            gzip_impl = gzip
        with gzip_impl.open(path, "rb") as f:
            yield f  # type: ignore[misc]
    elif kind == "zstd":
        import zstandard

        with open(path, "rb") as raw:
            reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
            with io.BufferedReader(reader, buffer_size=1 << 20) as f:
                yield f  # type: ignore[misc]
    else:
        with open(path, "rb") as f:
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


def temp_path_for(final: Path) -> Path:
    """A unique hidden sibling of `final`; renaming it onto `final` is atomic on POSIX.

    The final name is kept as the suffix so that writers can still tell the format from it,
    and the leading dot keeps corpus discovery from ever reading a half-written file.
    """
    return final.with_name(f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}.{final.name}")


def remove_stale_temps(folder: str | os.PathLike) -> int:
    """Delete temporary files left in `folder` by processes that no longer run (a killed run).

    Temporary names carry the writer's pid, so files of a run still in progress are kept.
    """
    removed = 0
    root = Path(folder)
    if not root.is_dir():
        return 0
    for f in root.rglob(".tmp-*"):
        try:
            pid = int(f.name.split("-", 2)[1])
        except (IndexError, ValueError):
            continue
        if pid == os.getpid() or _pid_alive(pid):
            continue
        with contextlib.suppress(FileNotFoundError):
            f.unlink()
            removed += 1
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; rename it onto `final` only if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(final)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON atomically, sorted and indented so that files diff well."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def stable_hash64(values: list[str], seed: int = 0) -> np.ndarray:
    """64-bit hashes of strings that never change across runs, machines or library versions.

    polars' and Python's own hashes are salted or unstable between versions, which would break
    "same seed, same selection". blake2b is in the standard library and fast enough (about a
    million ids per second) for the per-document keys of sampling and selection.
    """
    key = seed.to_bytes(8, "little", signed=True)
    out = np.empty(len(values), dtype=np.uint64)
    blake = hashlib.blake2b
    for i, v in enumerate(values):
        out[i] = int.from_bytes(blake(v.encode("utf-8"), digest_size=8, key=key).digest(), "little")
    return out


def mix64(h: np.ndarray, seed: int) -> np.ndarray:
    """Re-hash 64-bit values with a seed (splitmix64 finaliser), vectorised."""
    with np.errstate(over="ignore"):
        z = h.astype(np.uint64) ^ np.uint64((seed * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def uniform_from_hash(h: np.ndarray) -> np.ndarray:
    """Map 64-bit hashes to floats strictly inside (0, 1)."""
    return ((h >> np.uint64(11)).astype(np.float64) + 0.5) * (1.0 / (1 << 53))


def fingerprint(path: str | os.PathLike, edge_bytes: int = 1 << 20) -> dict[str, Any]:
    """A cheap identity of an input file: size, mtime and a hash of its first and last MiB.

    Hashing whole shards would cost a full read of the corpus on every run; head+tail+size
    catches the realistic accidents (a regenerated, truncated or appended shard).
    """
    p = Path(path)
    st = p.stat()
    h = hashlib.sha256()
    with open(p, "rb") as f:
        h.update(f.read(edge_bytes))
        if st.st_size > 2 * edge_bytes:
            f.seek(st.st_size - edge_bytes)
            h.update(f.read(edge_bytes))
    return {
        "path": str(p),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "sha256_edges": h.hexdigest(),
    }


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


def config_hash(obj: Any) -> str:
    """A short, order-independent hash of a JSON-able configuration."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]
