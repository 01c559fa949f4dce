"""Guards that keep assay from ever writing over, into or under a user's data.

* `check_output`: an output that equals, contains or lies inside one of its inputs is refused
  before anything is written (symlinks resolved).
* Markers: every folder assay creates for its outputs carries `_assay.json`. Corpus discovery
  skips such folders nested under a folder it searches, assay writes into an existing folder
  only if it is empty or one of its own, and it deletes a folder only if the marker is there.
* `folder_lock`: one writer per output folder. The lock is a file created atomically (a hard
  link, or an exclusive create where links are not supported) that names its host and pid;
  a lock left by a dead process of this host is broken, any other lock refuses the second
  writer with a message naming the holder.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from assay.errors import StateError
from assay.util.files import host_name, pid_alive, writing
from assay.util.remote import is_remote, publish_changed, remote_of

MARKER = "_assay.json"
#: bookkeeping that folders written by earlier assay versions hold instead of the marker
LEGACY_MARKERS = (
    "_stats.json",
    "_stats",
    "_select",
    "_selection.json",
    "_scores.json",
    "step.json",  # a recipe step's folder
)
LOCK_NAME = ".assay-lock"


class UnsafeOutputError(StateError):
    """An output that would write over, into or around an input, or over files assay did not
    write; nothing has been written."""


class FolderLockedError(StateError):
    """Another process is writing the same output folder."""


# ---------------------------------------------------------------------------------------------
# Outputs against inputs


def _real(path: str | os.PathLike) -> Path:
    return Path(os.path.realpath(os.fspath(path)))


def check_output(
    out: str | os.PathLike,
    inputs: Iterable[str | os.PathLike],
    what: str = "output",
    *,
    may_contain: bool = False,
) -> None:
    """Refuse an output path that is, contains or lies inside any input (files or folders).

    Real paths are compared, so a symlink to an input is that input. `may_contain` allows an
    output folder around the inputs, for inputs that are assay's own intermediates kept there
    under names the outputs never take (a token cache in a search folder).
    """
    if is_remote(out) or any(is_remote(i) for i in inputs):
        _check_remote_output(out, inputs, what, may_contain)
        return
    o = _real(out)
    for raw in inputs:
        i = _real(raw)
        if o == i:
            raise UnsafeOutputError(
                f"the {what} {os.fspath(out)} is the input {os.fspath(raw)}: writing it would "
                "destroy the input; choose another folder"
            )
        if o.is_relative_to(i):
            raise UnsafeOutputError(
                f"the {what} {os.fspath(out)} lies inside the input {os.fspath(raw)}: the next "
                "read of that input would include assay's outputs; choose a folder outside it"
            )
        if i.is_relative_to(o) and not may_contain:
            raise UnsafeOutputError(
                f"the {what} {os.fspath(out)} contains the input {os.fspath(raw)}: outputs "
                "could replace it; choose a folder that holds none of the inputs"
            )


def _check_remote_output(
    out: str | os.PathLike, inputs: Iterable[str | os.PathLike], what: str, may_contain: bool
) -> None:
    """`check_output` for URLs: the same rules on normalised URLs (a local path and a URL
    never overlap; a mirror of a remote folder stands for that folder)."""
    o = _as_url(out)
    for raw in inputs:
        i = _as_url(raw)
        if o == i:
            raise UnsafeOutputError(f"the {what} {o} is the input {i}; choose another folder")
        if o.startswith(i + "/"):
            raise UnsafeOutputError(f"the {what} {o} lies inside the input {i}")
        if i.startswith(o + "/") and not may_contain:
            raise UnsafeOutputError(f"the {what} {o} contains the input {i}")


def _as_url(path: str | os.PathLike) -> str:
    p = os.fspath(path)
    if is_remote(p):
        scheme, rest = p.split("://", 1)
        return f"{scheme}://{rest.rstrip('/')}"
    return remote_of(p) or f"file://{os.path.realpath(p)}"


# ---------------------------------------------------------------------------------------------
# Markers


def is_assay_output(folder: str | os.PathLike) -> bool:
    """Whether assay made this folder (its marker, or the bookkeeping of older versions)."""
    f = Path(folder)
    return any((f / name).exists() for name in (MARKER, *LEGACY_MARKERS))


def mark_output(folder: str | os.PathLike, kind: str) -> None:
    """Create `folder` if needed and mark it as assay's, after checking it may be written.

    An existing folder must be empty (hidden files aside) or already assay's: files assay did
    not write are never mixed with (or replaced by) its outputs.
    """
    f = Path(folder)
    check_writable_folder(f)
    if not (f / MARKER).exists():
        from assay.util.files import write_json

        write_json(f / MARKER, {"made_by": "assay", "kind": kind})


def check_writable_folder(folder: str | os.PathLike) -> None:
    f = Path(folder)
    if f.exists() and not f.is_dir():
        raise UnsafeOutputError(f"the output {f} is a file, not a folder")
    if f.is_dir() and not is_assay_output(f):
        foreign = [p.name for p in f.iterdir() if not p.name.startswith(".")]
        if foreign:
            shown = ", ".join(sorted(foreign)[:3]) + (", ..." if len(foreign) > 3 else "")
            raise UnsafeOutputError(
                f"the output folder {f} holds files that assay did not write ({shown}); "
                "choose a new or empty folder"
            )


def safe_rmtree(folder: str | os.PathLike, within: str | os.PathLike) -> None:
    """Delete `folder` only if it lies strictly inside `within` and assay made it."""
    if not Path(folder).exists():
        return
    _check_deletable(folder, within)
    shutil.rmtree(_real(folder))


def _check_deletable(folder: str | os.PathLike, within: str | os.PathLike) -> None:
    f, root = _real(folder), _real(within)
    if f == root or not f.is_relative_to(root):
        raise UnsafeOutputError(f"refusing to delete {folder}: it is not inside {within}")
    if not ((f / MARKER).exists() or (f / "step.json").exists()):
        raise UnsafeOutputError(
            f"refusing to delete {folder}: it has no {MARKER}, so assay did not make it; "
            "move it away and run again"
        )


def safe_clear(folder: str | os.PathLike, within: str | os.PathLike) -> None:
    """Empty `folder` (keeping the folder and a lock held on it) under the same conditions as
    `safe_rmtree`: strictly inside `within`, and made by assay."""
    f = Path(folder)
    children = [c for c in f.iterdir() if c.name != LOCK_NAME] if f.exists() else []
    if not children:
        return
    _check_deletable(f, within)
    for child in children:
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


# ---------------------------------------------------------------------------------------------
# One writer per folder

_held: dict[Path, int] = {}
_held_guard = threading.RLock()


def _proc_start(pid: int) -> str | None:
    """When a process started (Linux), so that a reused pid is not taken for the lock holder."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return None


def _read_lock(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _is_stale(holder: dict[str, Any]) -> bool:
    if holder.get("host") != host_name():
        return False  # another machine's process: this host cannot tell whether it runs
    pid = int(holder.get("pid", -1))
    if pid <= 0 or not pid_alive(pid):
        return True
    started = holder.get("proc_start")
    return started is not None and _proc_start(pid) not in (None, started)


def _create_exclusive(path: Path, content: str) -> bool:
    """Create `path` holding `content` unless it exists; True if this call created it."""
    tmp = path.with_name(f"{path.name}.{host_name()}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
    tmp.write_text(content)
    try:
        os.link(tmp, path)  # atomic, whole content at once, and safe on NFS
        return True
    except FileExistsError:
        return False
    except OSError:  # no hard links here (some FUSE mounts): an exclusive create instead
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(content)
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _break_stale(path: Path, seen: dict[str, Any]) -> None:
    """Remove a stale lock, unless another process broke (and re-took) it meanwhile."""
    breaker = path.with_name(path.name + ".break")
    with contextlib.suppress(FileNotFoundError):
        if time.time() - breaker.stat().st_mtime > 60:  # a breaker that died mid-way
            breaker.unlink()
    if not _create_exclusive(breaker, str(os.getpid())):
        return
    try:
        if _read_lock(path) == seen:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    finally:
        with contextlib.suppress(FileNotFoundError):
            breaker.unlink()


def _acquire(folder: Path) -> None:
    with writing(folder / LOCK_NAME):
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / LOCK_NAME
        me = {
            "host": host_name(),
            "pid": os.getpid(),
            "proc_start": _proc_start(os.getpid()),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": " ".join(sys.argv[:6])[:300],
        }
        for _ in range(5):
            if _create_exclusive(path, json.dumps(me)):
                return
            holder = _read_lock(path)
            if holder is not None and _is_stale(holder):
                _break_stale(path, holder)
                continue
            if holder is None and not path.exists():
                continue  # released meanwhile
            who = (
                f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('since')}"
                f" ({holder.get('command')})"
                if holder
                else "a process that is starting"
            )
            raise FolderLockedError(
                f"{folder} is being written by another assay process ({who}); two writers "
                "would mix their outputs. Wait for it to finish, or use another folder. If "
                f"that process is gone (its machine crashed), delete {path}"
            )
        raise FolderLockedError(f"could not lock {folder}: its lock changed hands repeatedly")


def _release(folder: Path) -> None:
    path = folder / LOCK_NAME
    holder = _read_lock(path)
    if holder and holder.get("host") == host_name() and holder.get("pid") == os.getpid():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike) -> Iterator[None]:
    """Hold the write lock of `folder` (created if missing) for the block; re-entrant within
    a process, so a function that locks can call another that locks the same folder."""
    key = _real(folder)
    with _held_guard:
        if key in _held:
            _held[key] += 1
        else:
            _acquire(key)
            _held[key] = 1
    try:
        yield
        if _held.get(key) == 1:  # the outermost writer is done: a mirror's stragglers go up
            publish_changed(key)
    finally:
        with _held_guard:
            _held[key] -= 1
            if _held[key] == 0:
                del _held[key]
                _release(key)
