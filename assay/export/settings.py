"""The options of materializing and exporting a mixture, declared once: the library calls
take them (or the same names as keyword arguments), the `materialize` and `export` steps
inherit them, and the command line makes its flags from them."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from assay.util.config import Strict


class BudgetSettings(Strict):
    """How many tokens a mixture spends, and how often a domain may be repeated for them."""

    budget: int | None = Field(
        None,
        ge=1,
        description="Training tokens the mixture is for (materialize: none takes every "
        "document once; export: none writes the weights as they are).",
    )
    max_epochs: float = Field(
        1.0, gt=0, description="Most passes over any domain's tokens within the budget."
    )
    on_cap: Literal["redistribute", "error"] = Field(
        "redistribute",
        description="When a domain's share needs more than max_epochs passes: give the excess "
        "to the other domains in proportion to their weights, or refuse.",
    )
    seed: int | None = Field(None, description="Seed of the documents taken (default: 0).")


class MaterializeSettings(BudgetSettings):
    """What `materialize_mixture` writes."""

    formats: list[Literal["text", "megatron", "datatrove"]] = Field(
        ["text", "megatron"],
        min_length=1,
        description="text (shards of the records), megatron (.bin/.idx) and/or datatrove "
        "(.ds, what nanotron reads).",
    )
    text_format: Literal["jsonl.zst", "jsonl.gz", "jsonl", "parquet"] = Field(
        "jsonl.zst", description="Format of the text shards."
    )


class ExportSettings(BudgetSettings):
    """What `export_mixture` writes."""

    to: Literal["megatron", "olmo-core", "nanotron", "hf", "litgpt"] = Field(
        description="The trainer: megatron, olmo-core, nanotron, hf (datasets' "
        "interleave_datasets) or litgpt (litdata token datasets and a data module)."
    )
    global_batch_size: int | None = Field(
        None, ge=1, description="olmo-core: tokens per optimizer step (its global_batch_size)."
    )
