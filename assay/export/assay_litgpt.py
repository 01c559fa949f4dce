"""A LitGPT data module for a mixture exported by assay (`assay export --to litgpt`).

assay does not import this file: `export_mixture` copies it beside the domains' litdata
datasets, and LitGPT imports it from there (`PYTHONPATH=<export folder>`), named in the
`data:` section of `litgpt.yaml` (`class_path: assay_litgpt.AssayMixture` and its
`init_args`), as `litgpt pretrain --config` takes any `DataModule`. It does what LitGPT's own
`TinyLlama` module does for SlimPajama and Starcoder, for any domains and weights: one
`StreamingDataset` of `TokensLoader` blocks (the model's `max_seq_length` + 1 tokens) per
domain, drawn by `CombinedStreamingDataset(weights=..., iterate_over_all=False)`; each block
comes from domain i with probability weights[i], so the weights are the domains' token shares.
An epoch ends when one domain runs out; `litgpt pretrain` then starts another, so a domain is
repeated as often as its share of `train.max_tokens` needs. There is no held-out split: as
LitGPT's `LitData` module without `split_names`, validation reads the same mixture, unshuffled.
"""

import os
from dataclasses import dataclass, field
from pathlib import Path

from litgpt.data import DataModule
from litgpt.tokenizer import Tokenizer
from torch.utils.data import DataLoader


@dataclass
class AssayMixture(DataModule):
    """Streams the domains of an assay export in the mixture's proportions."""

    data_path: str | Path
    """The export folder (one litdata dataset per domain folder); it may be remote (s3://)."""
    domains: list[str]
    """The domains' folders under data_path."""
    weights: list[float]
    """Each domain's share of the training tokens (the same order)."""
    seed: int = 42
    """The seed of the shuffles and of the draws between domains."""
    num_workers: int = 8
    """How many DataLoader processes to use for loading."""

    batch_size: int = field(init=False, repr=False, default=1)
    seq_length: int = field(init=False, repr=False, default=2048)

    def __post_init__(self) -> None:
        super().__init__()
        if len(self.domains) != len(self.weights) or not self.domains:
            raise ValueError("`domains` and `weights` must be lists of the same length")
        if any(w < 0 for w in self.weights) or sum(self.weights) <= 0:
            raise ValueError("`weights` must be non-negative and not all zero")

    def connect(
        self,
        tokenizer: Tokenizer | None = None,
        batch_size: int = 1,
        max_seq_length: int | None = None,
    ) -> None:
        self.batch_size = batch_size
        self.seq_length = max_seq_length + 1  # the next token of the last one as well

    def train_dataloader(self) -> DataLoader:
        return self._dataloader(train=True)

    def val_dataloader(self) -> DataLoader:
        return self._dataloader(train=False)

    def _dataloader(self, train: bool) -> DataLoader:
        from litdata.streaming import (
            CombinedStreamingDataset,
            StreamingDataLoader,
            StreamingDataset,
            TokensLoader,
        )

        root = str(self.data_path).rstrip("/")
        datasets = [
            StreamingDataset(
                input_dir=f"{root}/{d}" if "://" in root else os.path.join(root, d),
                item_loader=TokensLoader(block_size=self.seq_length),
                shuffle=train,
                drop_last=True,
                seed=self.seed,
            )
            for d in self.domains
        ]
        combined = CombinedStreamingDataset(
            datasets=datasets, seed=self.seed, weights=self.weights, iterate_over_all=False
        )
        return StreamingDataLoader(
            combined,
            batch_size=self.batch_size,
            pin_memory=True,
            num_workers=self.num_workers,
            drop_last=True,
        )
