"""Finding a corpus' shards: files, folders (searched recursively) and globs."""

from __future__ import annotations

import glob as globlib
import os
from collections.abc import Sequence
from pathlib import Path

from assay.errors import InputError, MissingError
from assay.io.arrow import saved_dataset_files
from assay.io.hub import hf_dataset_inputs, is_hf_dataset
from assay.io.remote import remote_inputs
from assay.io.shards import FOLDER_SUFFIXES, FileShard, Shard, format_of
from assay.io.view import VIEW_FILE, LabelledShard, is_view, read_view
from assay.util.guard import is_assay_output
from assay.util.remote import is_remote


def _has_magic(p: str) -> bool:
    return any(ch in p for ch in "*?[")


def _hidden(rel: Path) -> bool:
    return any(part.startswith((".", "_")) for part in rel.parts)


def _folder_files(root: Path) -> list[Path]:
    """Data files under `root`, in name order, skipping hidden and '_' names and the output
    folders assay wrote inside it (a selection written under its own input is not input)."""
    files: list[Path] = []
    for folder, dirs, names in os.walk(root):
        here = Path(folder)
        dirs[:] = sorted(
            d for d in dirs if not d.startswith((".", "_")) and not is_assay_output(here / d)
        )
        files += [
            here / n for n in names if not n.startswith((".", "_")) and n.endswith(FOLDER_SUFFIXES)
        ]
    return sorted(files, key=lambda f: f.relative_to(root).as_posix())


def _glob_files(pattern: str, root: Path) -> list[Path]:
    """Files matching a glob, without hidden or '_' names below its fixed prefix, nor files
    inside assay's output folders below it."""
    out = []
    for m in sorted(Path(m) for m in globlib.glob(pattern, recursive=True)):
        if not m.is_file():
            continue
        rel = m.relative_to(root) if m.is_relative_to(root) else Path(m.name)
        if _hidden(rel):
            continue
        folders = [root.joinpath(*rel.parts[:i]) for i in range(1, len(rel.parts))]
        if any(is_assay_output(f) for f in folders):
            continue
        out.append(m)
    return out


def discover_inputs(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
) -> tuple[list[Shard], list[str]]:
    """Shards and the input locations they came from (folders, files, glob matches; a view's
    sources and side-cars)."""
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    found: list[tuple[Path, Path] | Shard] = []  # (file, root), or a ready shard
    inputs: list[str] = []
    for raw in paths:
        p = os.fspath(raw)
        if is_remote(p):  # a remote store (`assay.io.remote`): streamed
            remote_shards, remote_names = remote_inputs(p)
            found += remote_shards
            inputs += remote_names
            continue
        if is_hf_dataset(p):  # a dataset by name (`assay.io.hub`)
            hub_shards, hub_inputs = hf_dataset_inputs(p)
            found += hub_shards
            inputs += hub_inputs
            continue
        view = p if is_view(p) else os.path.dirname(p) if Path(p).name == VIEW_FILE else None
        if view is not None and is_view(view):  # a view folder, or its _view.json
            view_shards, view_inputs = read_view(view)
            found += view_shards
            inputs += view_inputs
        elif os.path.isdir(p) and (saved := saved_dataset_files(p)) is not None:
            found += [(f, Path(p)) for f in saved]  # a Hugging Face dataset (save_to_disk)
            inputs.append(p)
        elif os.path.isdir(p):
            files = _folder_files(Path(p))
            if not files:
                raise MissingError(
                    f"no corpus files ({', '.join(FOLDER_SUFFIXES)}) under folder {p!r}"
                )
            found += [(f, Path(p)) for f in files]
            inputs.append(p)
        elif os.path.exists(p):  # a file, even one whose name has glob characters
            found.append((Path(p), Path(p).parent))
            inputs.append(p)
        elif _has_magic(p):
            prefix = p[: min(p.index(ch) for ch in "*?[" if ch in p)]
            root = Path(prefix) if prefix.endswith(os.sep) else Path(prefix).parent
            files = _glob_files(p, root)
            if not files:
                raise MissingError(f"no corpus files match {p!r}")
            found += [(f, root) for f in files]
            inputs += [str(f) for f in files]
            if "**" in p:  # a recursive pattern reads anything that appears under its root
                inputs.append(str(root))
        else:
            raise MissingError(f"corpus file not found: {p!r}")
    return _named_shards(found), inputs


def _named_shards(found: list[tuple[Path, Path] | Shard]) -> list[Shard]:
    """One shard per file, named by its path under the folder given (a view's shards keep
    their names); two files under one name, or names differing only by format, are refused."""
    shards: list[Shard] = []
    seen: dict[str, str] = {}
    for item in found:
        if isinstance(item, LabelledShard):
            shard, where = item, f"{item.path} (labelled by {item.sidecar})"
        elif isinstance(item, Shard):
            shard, where = item, getattr(item, "path", "") or item.name
        else:
            f, root = item
            format_of(f.name)  # raises for unsupported types, naming the file
            name = f.relative_to(root).as_posix() if root != Path("") else f.as_posix()
            shard, where = FileShard(name=name, path=str(f.resolve())), str(f.resolve())
        if shard.name in seen and seen[shard.name] != where:
            raise InputError(
                f"two input files map to the same shard name {shard.name!r} "
                f"({seen[shard.name]} and {where}); pass their common parent folder instead"
            )
        if shard.name not in seen:
            seen[shard.name] = where
            shards.append(shard)
    stems: dict[str, str] = {}
    for s in shards:
        if s.stem in stems:
            raise InputError(
                f"shards {stems[s.stem]!r} and {s.name!r} differ only by format; their outputs "
                "would collide"
            )
        stems[s.stem] = s.name
    return shards


def discover_shards(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Shard]:
    """Resolve files, folders (searched recursively) and globs into named shards.

    A shard's name is its path relative to the folder given (or the fixed prefix of a glob), so
    outputs mirror the input layout. Hidden files and names starting with '_' are ignored in
    folders: that is where assay keeps its own bookkeeping; so are folders assay wrote (they
    hold `_assay.json`) below the folder given. A path that exists is taken as it is, even with
    '[' or '*' in its name; only a path that does not exist is tried as a glob. A folder holding
    `_view.json` (or that file) is a view: its shards are the files it names, read with their
    side-car column (`assay.io.view`).
    """
    return discover_inputs(paths)[0]
