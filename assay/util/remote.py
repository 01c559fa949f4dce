"""Remote locations (`s3://`, `gs://`, `hf://`, `memory://`... through fsspec).

Corpora are read from a remote store directly, streaming (`assay.io.remote`). Everything else
assay writes or reads back (scores, selections, models, run directories) is worked on in a
**local mirror** of the remote folder and published file by file:

* `local_path(url)` pulls the remote folder into its mirror (`mirror_root()/<hash of url>/`)
  and returns the mirror's path; the mirror is made equal to the remote (files the remote lacks
  are removed, so a file written here but never published is redone, not trusted).
* Every atomic write inside a mirror (`util.files.atomic_path`, shard outputs, stats) calls
  `publish(final)` once the file is complete: the file is uploaded whole to its remote key (an
  object store replaces an object atomically). A shard's stats file, the record that its output
  is complete, is written after the output, so it is published after it too: a run killed at
  any point leaves on the remote either a finished shard with its stats, or no stats (redone).
  `unpublish` removes a remote file where assay removes the local one (stats before a redo).
* Resume therefore works on another machine: the mirror is pulled again, and the runner finds
  what was finished.

The mirror is a cache: delete it at any time. Locks are local to a machine (one writer per
folder on this machine); do not write one remote folder from two machines at once.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from assay.errors import ConfigError, MissingError

_INDEX = "_remote.json"


def is_remote(path: Any) -> bool:
    """A URL of a filesystem other than the local one (`file://` counts as local)."""
    if not isinstance(path, str | os.PathLike):
        return False
    p = os.fspath(path)
    return isinstance(p, str) and "://" in p and not p.startswith("file://")


def filesystem(url: str) -> tuple[Any, str]:
    """The fsspec filesystem of `url` and the path within it."""
    try:
        from fsspec.core import url_to_fs
    except ImportError as e:  # pragma: no cover - fsspec comes with datasets
        raise ConfigError(f"{url}: remote paths need fsspec (pip install fsspec s3fs)") from e
    try:
        return url_to_fs(url)
    except (ImportError, ValueError) as e:
        raise ConfigError(f"{url}: no filesystem for this URL ({e})") from e


def join(url: str, *parts: str) -> str:
    return "/".join([url.rstrip("/"), *(p.strip("/") for p in parts)])


def mirror_root() -> Path:
    """Where mirrors live: `$ASSAY_REMOTE_CACHE`, else `<ASSAY_CACHE or ~/.cache/assay>/remote`."""
    explicit = os.environ.get("ASSAY_REMOTE_CACHE")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("ASSAY_CACHE", Path.home() / ".cache" / "assay")) / "remote"


def _key(url: str) -> str:
    return hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:20]


def mirror_of(url: str) -> Path:
    """The local mirror folder of a remote folder (created, and indexed for `remote_of`)."""
    url = url.rstrip("/")
    root = mirror_root()
    local = root / _key(url)
    local.mkdir(parents=True, exist_ok=True)
    index = root / f"{_key(url)}{_INDEX}"
    if not index.exists():
        tmp = index.with_name(index.name + f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({"url": url}))
        os.replace(tmp, index)
    return local


@functools.lru_cache(maxsize=1024)
def _url_of_mirror(root: str, key: str) -> str | None:
    index = Path(root) / f"{key}{_INDEX}"
    try:
        return json.loads(index.read_text())["url"]
    except (OSError, ValueError, KeyError):
        return None


def remote_of(local: str | os.PathLike) -> str | None:
    """The remote URL a path inside a mirror stands for; None for any other local path."""
    root = mirror_root()
    p = Path(os.path.abspath(local))
    try:
        rel = p.relative_to(root)
    except ValueError:
        return None
    if not rel.parts:
        return None
    url = _url_of_mirror(str(root), rel.parts[0])
    if url is None:
        return None
    rest = rel.parts[1:]
    return join(url, *rest) if rest else url


def publish(final: str | os.PathLike) -> None:
    """Upload a finished file (or a folder's files) of a mirror to its remote key."""
    url = remote_of(final)
    if url is None:
        return
    fs, path = filesystem(url)
    local = Path(final)
    if local.is_dir():
        for f in sorted(q for q in local.rglob("*") if q.is_file()):
            fs.put_file(str(f), f"{path}/{f.relative_to(local).as_posix()}")
    elif local.exists():
        fs.put_file(str(local), path)


def publish_changed(folder: str | os.PathLike) -> int:
    """Upload the files of a mirror folder that the remote lacks or holds an older or
    different-sized copy of (files written other than through `atomic_path`); returns how
    many. Called when the last writer of an output folder is done."""
    url = remote_of(folder)
    local = Path(folder)
    if url is None or not local.is_dir():
        return 0
    fs, path = filesystem(url)
    fs.invalidate_cache()
    remote = fs.find(path, detail=True) if fs.exists(path) else {}
    base = path.rstrip("/")
    sent = 0
    for f in sorted(q for q in local.rglob("*") if q.is_file()):
        rel = f.relative_to(local).as_posix()
        if _private(rel):
            continue
        info = remote.get(f"{base}/{rel}")
        st = f.stat()
        if info is not None and info.get("size") == st.st_size:
            modified = info.get("LastModified") or info.get("mtime") or info.get("updated")
            stamp = getattr(modified, "timestamp", None)
            if stamp is None or stamp() >= st.st_mtime - 1:
                continue
        fs.put_file(str(f), f"{base}/{rel}")
        sent += 1
    return sent


def unpublish(local: str | os.PathLike) -> None:
    """Remove the remote counterpart of a file (or folder) removed from a mirror."""
    url = remote_of(local)
    if url is None:
        return
    fs, path = filesystem(url)
    if fs.exists(path):
        fs.rm(path, recursive=fs.isdir(path))


def pull(url: str) -> Path:
    """Make the mirror of `url` equal to the remote folder (if it exists) and return it.

    Files are compared by size (and by the object's ETag/checksum where the store gives one,
    remembered from the last pull); those that differ are downloaded, through a temporary name.
    """
    url = url.rstrip("/")
    fs, path = filesystem(url)
    fs.invalidate_cache()  # what is there now, not what an earlier listing saw
    local = mirror_of(url)
    remote: dict[str, dict[str, Any]] = {}
    if fs.exists(path):
        if not fs.isdir(path):
            raise ConfigError(f"{url} is a file; a folder is needed here")
        for name, info in fs.find(path, detail=True).items():
            if info.get("type", "file") == "file":
                rel = name[len(path.rstrip("/")) + 1 :] if name != path else Path(name).name
                remote[rel] = info
    seen_path = mirror_root() / f"{_key(url)}.pulled.json"
    seen: dict[str, str] = json.loads(seen_path.read_text()) if seen_path.exists() else {}
    for f in sorted(q for q in local.rglob("*") if q.is_file()):
        rel = f.relative_to(local).as_posix()
        if rel not in remote and not _private(rel):
            f.unlink()  # written here but never published: not trusted
    for rel, info in remote.items():
        target = local / rel
        tag = str(info.get("ETag") or info.get("etag") or info.get("checksum") or "")
        same_size = target.exists() and target.stat().st_size == info.get("size")
        if same_size and (not tag or seen.get(rel) in (None, tag)):
            seen[rel] = tag
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.pull{os.getpid()}")
        fs.get_file(f"{path}/{rel}", str(tmp))
        os.replace(tmp, target)
        seen[rel] = tag
    tmp = seen_path.with_name(seen_path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(seen))
    os.replace(tmp, seen_path)
    _prune_empty(local)
    return local


def _private(rel: str) -> bool:
    """Hidden names (locks, temporary files and folders) belong to this machine: never
    published, never removed by a pull."""
    return any(part.startswith(".") for part in rel.split("/"))


def _prune_empty(folder: Path) -> None:
    for d in sorted((q for q in folder.rglob("*") if q.is_dir()), reverse=True):
        if not any(d.iterdir()):
            d.rmdir()


def local_path(path: str | os.PathLike, *, must_exist: bool = False) -> str:
    """`path` itself when local; for a remote folder, its pulled mirror (see the module)."""
    if not is_remote(path):
        return os.fspath(path)
    url = os.fspath(path)
    if must_exist:
        fs, p = filesystem(url)
        if not fs.exists(p):
            raise MissingError(f"{url} does not exist")
    return str(pull(url))


def clear_mirror(url: str) -> None:
    """Forget the local mirror of `url` (the remote is untouched)."""
    local = mirror_root() / _key(url.rstrip("/"))
    shutil.rmtree(local, ignore_errors=True)
