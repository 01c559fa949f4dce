"""What a mixture is exported over: files grouped by domain, with their token counts.

A source is either a folder written by `materialize_mixture` (its manifest lists every file
and its counts) or a folder with one sub-folder per domain holding tokenized files: Megatron
datasets (`<name>.bin` + `<name>.idx`, as Megatron's `tools/preprocess_data.py` writes them;
counts from the index) and/or datatrove `.ds` files (counts from their size and index).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from assay.errors import InputError, MissingError
from assay.export.indexed import IndexedFile
from assay.export.materialize import MANIFEST
from assay.util.files import read_json
from assay.util.remote import mirror_root, remote_of


@dataclass(frozen=True)
class SourceFile:
    """One file of a domain, in each form it is there in (paths absolute)."""

    tokens: int
    documents: int
    megatron: str | None = None  # the prefix (without .bin/.idx)
    megatron_dtype: str | None = None
    datatrove: str | None = None  # the .ds file
    token_size: int | None = None
    text: str | None = None


@dataclass
class Source:
    root: Path
    domains: dict[str, list[SourceFile]] = field(default_factory=dict)
    folders: dict[str, str] = field(default_factory=dict)  # domain -> its folder name

    def tokens(self, domain: str) -> int:
        return sum(f.tokens for f in self.domains[domain])

    def documents(self, domain: str) -> int:
        return sum(f.documents for f in self.domains[domain])

    def require(self, kind: str, what: str) -> None:
        """Every file of every domain must be there as `kind` (megatron, datatrove, text)."""

        def lacks(f: SourceFile) -> bool:
            if kind == "raw":
                return f.megatron is None and f.datatrove is None
            return getattr(f, kind) is None

        missing = sorted(d for d, files in self.domains.items() if any(map(lacks, files)))
        if missing:
            fmt = "megatron" if kind == "raw" else kind
            raise InputError(
                f"{what} needs {fmt} files, and {self.root} has none for {missing}: "
                f"materialize the mixture with that format (assay materialize --formats {fmt})"
            )


def open_source(path: str | os.PathLike, kind: str) -> Source:
    """The files of `path` by domain, as `kind` (megatron, datatrove, raw: either, or text)
    files; raises if some domain has none of that kind."""
    root = Path(path)
    if (root / MANIFEST).is_file():
        source = _from_manifest(root)
    elif not root.is_dir():
        raise MissingError(f"no materialized mixture or tokenized folder at {root}")
    else:
        source = _from_tree(root, kind)
    source.require(kind, f"exporting {kind} files")
    return source


def _from_tree(root: Path, kind: str) -> Source:
    source = Source(root.resolve())
    if kind == "text":
        raise InputError(
            f"{root} has no {MANIFEST}: text exports read a materialized mixture (the token "
            "counts of its files come from its manifest)"
        )
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = _megatron_files(sub) if kind in ("megatron", "raw") else []
        if not files and kind in ("datatrove", "raw"):
            files = _datatrove_files(sub)
        if files:
            source.domains[sub.name] = files
            source.folders[sub.name] = sub.name
    if not source.domains:
        raise InputError(
            f"{root} holds no domain folders of {kind} files (Megatron .bin/.idx, datatrove "
            f".ds), and no {MANIFEST}"
        )
    return source


def _from_manifest(root: Path) -> Source:
    manifest = read_json(root / MANIFEST)
    base = root.resolve()
    source = Source(base)
    for domain, info in manifest["domains"].items():
        source.folders[domain] = info["folder"]
        source.domains[domain] = [
            SourceFile(
                tokens=int(part["tokens"]),
                documents=int(part["documents"]),
                megatron=str(base / part["megatron"]) if "megatron" in part else None,
                megatron_dtype=manifest.get("megatron_dtype"),
                datatrove=str(base / part["datatrove"]) if "datatrove" in part else None,
                token_size=manifest.get("datatrove_token_size"),
                text=str(base / part["text"]) if "text" in part else None,
            )
            for part in info["files"]
            if part["documents"] > 0
        ]
    return source


def _megatron_files(folder: Path) -> list[SourceFile]:
    out = []
    for idx in sorted(folder.glob("*.idx")):
        prefix = idx.with_suffix("")
        if not prefix.with_name(prefix.name + ".bin").is_file():
            raise MissingError(f"{idx} has no {prefix.name}.bin beside it")
        f = IndexedFile(prefix)
        out.append(
            SourceFile(
                tokens=f.tokens,
                documents=len(f.document_indices) - 1,
                megatron=str(prefix.resolve()),
                megatron_dtype=str(f.dtype),
            )
        )
    return out


def _datatrove_files(folder: Path) -> list[SourceFile]:
    out = []
    for ds in sorted(folder.glob("*.ds")):
        size = _token_size_of(ds)
        index = ds.with_name(ds.name + ".index")
        docs = os.path.getsize(index) // 8 if index.is_file() else 0
        out.append(
            SourceFile(
                tokens=os.path.getsize(ds) // size,
                documents=docs,
                datatrove=str(ds.resolve()),
                token_size=size,
            )
        )
    return out


def _token_size_of(ds: Path) -> int:
    meta = ds.with_name(ds.name + ".metadata")
    if not meta.is_file():
        raise MissingError(f"{ds} has no .metadata beside it (its bytes per token)")
    first = meta.read_text().splitlines()[0] if meta.read_text() else ""
    size = first.rsplit("|", 1)[-1]
    if size not in ("2", "4"):
        raise InputError(f"{meta}: cannot read the bytes per token from {first!r}")
    return int(size)


def where(path: str | os.PathLike) -> str:
    """A path as a trainer is told it: its remote URL when it lies in a remote folder's mirror
    (also when the mirrors' folder is named through a symbolic link), else the absolute path."""
    real = Path(path).resolve()
    url = remote_of(path) or remote_of(real)
    if url is None:
        try:
            url = remote_of(mirror_root() / real.relative_to(mirror_root().resolve()))
        except ValueError:
            url = None
    return url or str(real)


def olmo_dtype(f: SourceFile) -> str:
    """The numpy dtype OLMo-core must read a file's raw ids with (int32 ids read as uint32
    are the same numbers: ids are never negative)."""
    if f.megatron is not None:
        return {"uint16": "uint16", "int32": "uint32"}.get(f.megatron_dtype or "", "uint32")
    return "uint16" if f.token_size == 2 else "uint32"


def raw_path(f: SourceFile) -> str:
    """The file of raw token ids (OLMo-core's numpy format): the .bin, else the .ds."""
    if f.megatron is not None:
        return f.megatron + ".bin"
    assert f.datatrove is not None
    return f.datatrove
