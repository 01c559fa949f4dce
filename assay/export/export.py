"""Export a mixture as the data configuration a trainer reads as it is.

    export_mixture("mixture.yaml", "materialized/", to="megatron", out="export/",
                   budget=100_000_000_000, max_epochs=4)

The source (`sources.py`) is a materialized mixture or a folder of tokenized files by domain.
Each domain's share of the training tokens is the mixture's weight, or, given the budget the
trainer will spend, the share `allocate_tokens` leaves it under the epoch cap: a domain that
would be repeated more than `max_epochs` times is cut to that and its excess redistributed to
the others in proportion to their weights (`on_cap="error"` refuses instead). None of these
trainers caps repetition by itself except OLMo-core, so the capped shares are what is written
(and OLMo-core is also given the cap). The formats, from the trainers' own code:

- megatron: `data_args.txt`, the `--data-path` blend for `--data-args-path` (Megatron-LM
  `megatron/training/arguments.py`; parsed by `get_blend_from_list` in
  `megatron/core/datasets/utils.py`): "weight prefix" pairs, one per file, the weight being
  the domain's share x the file's tokens / the domain's tokens (Megatron normalizes them and
  draws sequences in those proportions, `BlendedDataset`). Also `megatron.json`.
- olmo-core: `olmo_core.yaml`, a `SourceMixtureDatasetConfig` (OLMo-core
  `src/olmo_core/data/source_mixture.py`): `source_list.sources` of `source_name`,
  `target_ratio`, `paths` (raw token files: the `.bin` files are read as numpy token files),
  `max_repetition_ratio` (the epoch cap, at least 1) and `max_source_fraction` (a cap below
  one epoch); `requested_tokens` and `global_batch_size`.
- nanotron: `nanotron.yaml`, a data stage whose `dataset.dataset_folder` maps each domain's
  folder of datatrove `.ds` files to its weight (`NanosetDatasetsArgs`, nanotron
  `src/nanotron/config/config.py`; `Nanoset` draws samples of `sequence_length` tokens in
  those proportions).
- hf: `hf_interleave.json`, the arguments of `datasets.interleave_datasets`: one dataset per
  domain (`builder` and `data_files` for `load_dataset`), `probabilities` per document (a
  domain's token share / its mean document length, normalized), `seed`, `stopping_strategy`
  ("all_exhausted" when some domain is to be repeated, else "first_exhausted"), and
  `documents`: how many to take for the budget.
- litgpt: each domain again as a litdata token dataset (`<domain>/index.json` and chunks, what
  LitGPT's data modules stream), `assay_litgpt.py` (a `DataModule` mixing them with
  `CombinedStreamingDataset` and the shares as weights) and `litgpt.yaml` (its `data:` section
  for `litgpt pretrain --config`, and `train.max_tokens` for a budget); see `litgpt.py`.

Every export also writes `export.json`: the shares, the allocation and every file's weight.

A file in the local mirror of a remote folder (a remote run directory's materialized sample,
`assay.util.remote`) is named by its remote URL (`s3://...`) for the trainers that read object
storage themselves: Megatron-LM (an object-storage blend, `--object-storage-cache-path`),
OLMo-core (remote numpy paths) and LitGPT (litdata's remote `input_dir`); the mirror is a cache
and may be gone when training starts. nanotron's folders and `hf`'s data files stay local paths.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from assay.common.budget import OnCap, allocate_tokens
from assay.common.mixture import Mixture, resolve_mixture
from assay.errors import ConfigError
from assay.export.litgpt import write_litgpt
from assay.export.settings import ExportSettings
from assay.export.sources import Source, olmo_dtype, open_source, raw_path, where
from assay.util.files import atomic_path, write_json
from assay.util.remote import local_path

TARGETS: tuple[str, ...] = ("megatron", "olmo-core", "nanotron", "hf", "litgpt")
KIND = {
    "megatron": "megatron",
    "olmo-core": "raw",
    "nanotron": "datatrove",
    "hf": "text",
    "litgpt": "raw",
}


def export_mixture(
    mixture: Mixture | Mapping[str, float] | str | os.PathLike | None,
    source: str | os.PathLike,
    out: str | os.PathLike,
    settings: ExportSettings | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Write the configuration a trainer (`to`) reads for `mixture` over `source` into the
    folder `out`; returns the summary written to `export.json`. `settings` (or keyword
    arguments, which override it) are `ExportSettings`. A mixture of None (or "natural")
    takes each domain in proportion to its tokens: for a materialized sample, the sample
    itself; 'uniform', 'domain=weight,...' and mixture files are read as everywhere."""
    base = settings.model_dump(exclude_unset=True) if settings is not None else {}
    cfg = ExportSettings.model_validate({**base, **options})
    to, budget, max_epochs, on_cap = cfg.to, cfg.budget, cfg.max_epochs, cfg.on_cap
    seed, global_batch_size = (0 if cfg.seed is None else cfg.seed), cfg.global_batch_size
    src = open_source(local_path(source, must_exist=True), KIND[to])  # remote: its mirror
    counts = {d: src.tokens(d) for d in src.domains}
    mix = resolve_mixture("natural" if mixture is None else mixture, counts)
    shares, summary = domain_shares(mix, counts, budget, max_epochs, on_cap)
    root = Path(local_path(out))  # a remote folder: its mirror, published file by file
    if root.resolve() == src.root or root.resolve().is_relative_to(src.root):
        raise ConfigError(f"write the export outside its source {src.root}")
    writer = {
        "megatron": _megatron,
        "olmo-core": _olmo,
        "nanotron": _nanotron,
        "hf": _hf,
        "litgpt": write_litgpt,
    }[to]
    files = writer(src, shares, root, summary, seed=seed, global_batch_size=global_batch_size)
    summary.update(target=to, source=str(src.root), seed=seed, files=files)
    write_json(root / "export.json", summary)
    return summary


def domain_shares(
    mixture: Mixture,
    tokens: Mapping[str, int],
    budget: int | None,
    max_epochs: float,
    on_cap: OnCap,
) -> tuple[dict[str, float], dict[str, Any]]:
    """Each domain's share of the training tokens: the mixture's, capped for a budget."""
    Mixture.uniform([d for d, w in mixture.items() if w > 0]).check_domains(tokens)
    empty = sorted(d for d in mixture.domains if mixture[d] > 0 and tokens[d] == 0)
    if empty:
        raise ConfigError(f"the mixture gives weight to domains without tokens: {empty}")
    summary: dict[str, Any] = {"mixture": mixture.to_dict(), "domain_tokens": dict(tokens)}
    if budget is None:
        shares = {d: w for d, w in mixture.items() if w > 0}
        summary["note"] = "no budget: the mixture's weights as they are (no epoch cap applied)"
    else:
        alloc = allocate_tokens(mixture, tokens, budget, max_epochs, on_cap=on_cap)
        shares = {d: n / alloc.budget for d, n in alloc.tokens.items() if n > 0}
        summary.update(alloc.to_dict())
    summary["shares"] = shares
    return shares, summary


def _file_weights(src: Source, shares: Mapping[str, float]) -> list[tuple[str, Any, float]]:
    """(domain, file, weight) for every file of every domain with a share: the share split
    among the domain's files in proportion to their tokens."""
    out = []
    for d, share in shares.items():
        total = src.tokens(d)
        for f in src.domains[d]:
            if f.tokens:
                out.append((d, f, share * f.tokens / total))
    return out


def _megatron(src: Source, shares: Mapping[str, float], root: Path, summary: dict, **_: Any):
    blend = [(d, where(f.megatron), w) for d, f, w in _file_weights(src, shares)]
    words = [w for _, prefix, weight in blend for w in (_num(weight), prefix)]
    with atomic_path(root / "data_args.txt") as tmp:
        tmp.write_text(" ".join(words) + "\n")
    write_json(root / "megatron.json", {"data_path": words})
    return [{"domain": d, "prefix": prefix, "weight": w} for d, prefix, w in blend]


def _olmo(
    src: Source,
    shares: Mapping[str, float],
    root: Path,
    summary: dict,
    *,
    global_batch_size: int | None,
    **_: Any,
):
    if global_batch_size is None or global_batch_size < 1:
        raise ConfigError("olmo-core's mixture needs --global-batch-size (tokens per step)")
    max_epochs = float(summary.get("max_epochs", 1.0))
    requested = summary.get("budget")
    if requested is None:  # the most tokens these shares can take within the caps
        requested = min(math.floor(src.tokens(d) * max_epochs / s) for d, s in shares.items())
    dtypes = {olmo_dtype(f) for d in shares for f in src.domains[d]}
    if len(dtypes) > 1:
        raise ConfigError(f"the source mixes token widths {sorted(dtypes)}; OLMo-core reads one")
    sources = [
        {
            "source_name": d,
            "target_ratio": float(s),
            "paths": [where(raw_path(f)) for f in src.domains[d] if f.tokens],
            "max_repetition_ratio": max(max_epochs, 1.0),
            "max_source_fraction": min(max_epochs, 1.0),
        }
        for d, s in shares.items()
    ]
    config = {
        "source_list": {"sources": sources},
        "requested_tokens": int(requested),
        "global_batch_size": int(global_batch_size),
    }
    _write_yaml(root / "olmo_core.yaml", config)
    summary["olmo_core_dtype"] = dtypes.pop()
    return [{"domain": s["source_name"], "paths": s["paths"]} for s in sources]


def _nanotron(
    src: Source, shares: Mapping[str, float], root: Path, summary: dict, *, seed: int, **_: Any
):
    folders = {}
    for d, share in shares.items():
        dirs = {str(Path(f.datatrove).parent) for f in src.domains[d] if f.datatrove}
        if len(dirs) != 1:
            raise ConfigError(f"nanotron reads one folder per domain; {d} has {sorted(dirs)}")
        folders[dirs.pop()] = float(share)
    stage = {
        "name": "assay mixture",
        "start_training_step": 1,
        "data": {"dataset": {"dataset_folder": folders}, "num_loading_workers": 1, "seed": seed},
    }
    _write_yaml(root / "nanotron.yaml", {"data_stages": [stage]})
    return [{"folder": k, "weight": v} for k, v in folders.items()]


def _hf(src: Source, shares: Mapping[str, float], root: Path, summary: dict, *, seed: int, **_):
    per_doc = {d: s * src.documents(d) / src.tokens(d) for d, s in shares.items()}
    total = sum(per_doc.values())
    datasets = []
    for d in shares:
        paths = [f.text for f in src.domains[d] if f.documents]
        datasets.append({"domain": d, "builder": _builder(paths), "data_files": paths})
    epochs = summary.get("epochs_per_domain", {})
    spec: dict[str, Any] = {
        "datasets": datasets,
        "probabilities": [per_doc[d] / total for d in shares],
        "seed": seed,
        "stopping_strategy": "all_exhausted"
        if any(e > 1 + 1e-9 for e in epochs.values())
        else "first_exhausted",
    }
    if summary.get("budget") is not None:
        spec["documents"] = math.ceil(summary["budget"] * total)
    write_json(root / "hf_interleave.json", spec)
    return datasets


def _builder(paths: list[str]) -> str:
    kinds = {"parquet" if p.endswith(".parquet") else "json" for p in paths}
    if len(kinds) != 1:
        raise ConfigError(f"a domain's text files mix formats: {paths[:3]}")
    return kinds.pop()


def _write_yaml(path: Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(obj, sort_keys=False))


def _num(x: float) -> str:
    return f"{x:.12g}"
