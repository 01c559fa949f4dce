"""Mixtures handed to trainers: materialized as shards (text, Megatron `.bin`/`.idx`,
datatrove `.ds`) and exported as the data configuration of Megatron, OLMo-core, nanotron and
Hugging Face `datasets`."""

from assay.export.export import TARGETS, domain_shares, export_mixture
from assay.export.indexed import IndexedFile, IndexedWriter
from assay.export.materialize import FORMATS, materialize_mixture, plan_sample

__all__ = [
    "FORMATS",
    "TARGETS",
    "IndexedFile",
    "IndexedWriter",
    "domain_shares",
    "export_mixture",
    "materialize_mixture",
    "plan_sample",
]
