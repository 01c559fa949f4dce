"""Hugging Face datasets by name: `hf-dataset:NAME?config=C&split=S&streaming=true`.

Anywhere a corpus path is accepted (the library, the command line, recipes) a path may name a
dataset that `datasets.load_dataset` finds: one in the local Hugging Face cache (offline, by the
name it was downloaded under), a local dataset folder, or the Hub when there is a network.
Without `streaming` the dataset is prepared as `datasets` does (Arrow files in its cache) and
assay reads those files memory-mapped, one shard each, so resume compares their content like
any file's. With `streaming=true` nothing is prepared: the records stream from the data files,
in one shard, and resume compares the dataset's name, config, split and revision.

Query keys: `config` (the configuration name), `split` (default `train`), `revision`,
`data_dir`, `streaming` (true/false).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from assay.errors import ConfigError, InputError
from assay.io.shards import FileShard, HFIterableShard

SCHEME = "hf-dataset:"
_KEYS = ("config", "split", "revision", "data_dir", "streaming")


def is_hf_dataset(path: str | os.PathLike) -> bool:
    return isinstance(path, str) and path.startswith(SCHEME)


def parse_hf_dataset(uri: str) -> dict[str, Any]:
    """`hf-dataset:org/name?config=c&split=test` -> {'name': 'org/name', 'config': 'c', ...}."""
    body = uri[len(SCHEME) :]
    name, _, query = body.partition("?")
    name = name.strip()
    if not name:
        raise ConfigError(f"{uri!r}: give a dataset name after {SCHEME!r}")
    pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    spec: dict[str, Any] = {"name": name, "split": "train", "streaming": False}
    for key, value in pairs:
        if key not in _KEYS:
            raise ConfigError(f"{uri!r}: unknown key {key!r}; use {', '.join(_KEYS)}")
        if key == "streaming":
            if value.lower() not in ("true", "false", "1", "0"):
                raise ConfigError(f"{uri!r}: streaming is true or false, not {value!r}")
            spec[key] = value.lower() in ("true", "1")
        else:
            spec[key] = value
    return spec


def _load(spec: dict[str, Any]) -> Any:
    import datasets

    kwargs = {k: spec[k] for k in ("revision", "data_dir") if k in spec}
    try:
        return datasets.load_dataset(
            spec["name"],
            spec.get("config"),
            split=spec["split"],
            streaming=spec["streaming"],
            **kwargs,
        )
    except (FileNotFoundError, ConnectionError, ValueError) as e:
        offline = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("HF_DATASETS_OFFLINE")
        hint = (
            ""
            if offline
            else " (without a network, set HF_HUB_OFFLINE=1 to use the local cache only)"
        )
        raise InputError(f"{SCHEME}{spec['name']}: cannot load it: {e}{hint}") from e


def hf_dataset_inputs(uri: str) -> tuple[list[FileShard | HFIterableShard], list[str]]:
    """The shards of a named dataset, and the local places it reads (none when streamed)."""
    spec = parse_hf_dataset(uri)
    dataset = _load(spec)
    if spec["streaming"]:
        label = [spec["name"], spec.get("config"), spec["split"], spec.get("revision")]
        return [HFIterableShard(name=f"{spec['split']}-00000", dataset=dataset, label=label)], []
    files = [Path(f["filename"]) for f in dataset.cache_files]
    if not files:  # a dataset held in memory (no cache file): `Corpus.from_hf` takes those
        raise InputError(f"{uri}: the dataset has no Arrow cache files to read")
    if getattr(dataset, "_indices", None) is not None:
        raise InputError(f"{uri}: the dataset has an indices mapping; save_to_disk it first")
    shards = [FileShard(name=f.name, path=str(f.resolve())) for f in files]
    return shards, [str(f) for f in files]
