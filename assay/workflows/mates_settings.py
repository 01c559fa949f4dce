"""The settings of a staged MATES run, apart from the run itself so that the stage functions
(`assay.workflows.mates_selection`) take them whole."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field, field_validator, model_serializer

from assay.common.embed import EMBEDDER_HELP
from assay.common.lm import DeviceSettings
from assay.proxies.train import TrainConfig
from assay.selection.mates import DEFAULT_ALPHAS, HEADS
from assay.selection.mates_finetune import MatesFinetuneSettings
from assay.workflows.proxy_batch import ProxyOptions


def mates_train_config(**overrides: Any) -> TrainConfig:
    """Training settings for staged MATES runs: one WSD schedule with 4% warmup over all stages
    (the paper's), every selected token seen at most once per stage (consume-once)."""
    base = {"schedule": "wsd", "warmup": 0.04, "decay_fraction": 0.1, "max_epochs": 1.0}
    return TrainConfig(**{**base, **overrides})


#: The paper's probing and selection settings (Pythia-410M on C4): the official probe script
#: takes 10,000 one-step probes per GPU on 8 GPUs (`probe_oracle_data_influence.py`: `range(10000)`
#: per rank, ranks 0-7 in `scripts/probe_oracle_data_influence.sh`), so 80,000 oracle values per
#: stage, against 1,024 LAMBADA (OpenAI) examples in batches of 32, keeping |pool| // 5 at
#: tau 0.5 after every 10k-step stage (5 stages). The code takes the same 80,000 for the 1B model
#: (nothing in it depends on the model size); a different count for 1B is not in the code.
PAPER_PRESET: dict[str, Any] = {
    "probes": 80_000,
    "keep": 0.2,
    "tau": 0.5,
    "stages": 5,
    "ref_batch_size": 32,
}
#: reference examples the paper probes against (`max_targets` / `targets.max_items`)
PAPER_REFERENCE_EXAMPLES = 1024


def paper_settings(stage_tokens: int, **overrides: Any) -> MatesSettings:
    """`MatesSettings` at the paper's probing scale (`PAPER_PRESET`), the rest as given; the
    paper's stage is 10k steps of 512 x 1,024 tokens (`stage_tokens=5_242_880_000`)."""
    return MatesSettings(**{**PAPER_PRESET, "stage_tokens": stage_tokens, **overrides})


#: the settings only Group-MATES reads
GROUP_FIELDS = (
    "trajectory_length",
    "docs_per_cluster",
    "bootstrap_rounds",
    "bootstrap_rollouts",
    "bootstrap_beams",
    "bootstrap_candidates",
)


def _unless(default: Any) -> Callable[[Any], bool]:
    """`exclude_if` of a setting added after MATES steps were first run: it is left out of
    dumps at its default, so that those steps keep their settings hash."""
    return lambda value: value == default


class MatesSettings(ProxyOptions, DeviceSettings):
    """A staged MATES run (or its random twin): stages, selection, probes, the influence model
    and the proxies' training. From Python, `embedder` may also be a dict of `Embedder`
    settings (`{"model": ..., "cache": False}`). `device` is where the oracle probes, the
    reference loss and the influence model's embedder run, `dtype` the precision of a probe's
    training step (the proxies themselves train where accelerate puts them)."""

    method: Literal["mates", "random"] = Field(
        "mates", description="'mates', or 'random' (the same staged run, random selection)."
    )
    group: bool = Field(False, description="Group-MATES: relational influence, greedy selection.")
    stage_tokens: int = Field(ge=1, description="Training tokens per stage.")
    stages: int = Field(2, ge=1, description="Stages (consume-once pools of the corpus).")
    keep: float = Field(0.2, gt=0, le=1, description="Share of each stage's pool kept.")
    tau: float = Field(0.5, gt=0, description="Gumbel top-k temperature.")
    probes: int = Field(300, ge=10, description="Oracle probes per stage.")
    embedder: str | dict[str, Any] | None = Field(None, description=EMBEDDER_HELP)
    train: TrainConfig = Field(
        default_factory=mates_train_config,
        description="Training settings (default: one WSD schedule over all stages).",
    )
    heads: list[str] = Field(
        list(HEADS),
        description="Heads of the influence model on the frozen embeddings (ridge, mlp); the "
        "one with the best held-out Spearman is kept.",
        exclude_if=_unless(list(HEADS)),
    )
    alphas: list[float] = Field(
        list(DEFAULT_ALPHAS),
        description="Ridge penalties the influence model tries.",
        exclude_if=_unless(list(DEFAULT_ALPHAS)),
    )
    holdout: float = Field(
        0.2,
        description="Share of the probes held out to choose the influence model.",
        exclude_if=_unless(0.2),
    )
    influence_model: Literal["frozen", "finetune"] = Field(
        "frozen",
        description="The influence model: 'frozen' (heads on frozen embeddings) or 'finetune' "
        "(the paper's: an encoder fine-tuned end to end, see finetune).",
        exclude_if=_unless("frozen"),
    )
    finetune: MatesFinetuneSettings = Field(
        default_factory=MatesFinetuneSettings,
        description="The fine-tuned influence model (influence_model: finetune); it runs on "
        "device in dtype.",
        exclude_if=_unless(MatesFinetuneSettings()),
    )

    @field_validator("influence_model")
    @classmethod
    def _finetune_is_individual(cls, v: str, info: Any) -> str:
        if v == "finetune" and info.data.get("group"):
            raise ValueError(
                "'finetune' is MATES' individual influence model; Group-MATES (group: true) "
                "fits its relational model on embeddings"
            )
        return v

    ref_batch_size: int | None = Field(
        None,
        description="Target examples per forward pass (default: 8 on a CPU, 32 on a GPU).",
        exclude_if=_unless(None),
    )
    trajectory_length: int = Field(
        10,
        description="Group-MATES: documents per rollout (official: 10).",
        exclude_if=_unless(10),
    )
    docs_per_cluster: int = Field(
        200,
        description="Group-MATES: documents per cluster of the greedy selection.",
        exclude_if=_unless(200),
    )
    bootstrap_rounds: int = Field(
        1,
        ge=0,
        description="Group-MATES: rounds of bootstrap rollouts (chosen by beam search under the "
        "current relational model, probed, the model refitted on every rollout so far); "
        "official: 1, 0: random rollouts only.",
        exclude_if=_unless(1),
    )
    bootstrap_rollouts: int | None = Field(
        None,
        ge=2,
        description="Group-MATES: bootstrap rollouts per round, half with the lowest and half "
        "with the highest predicted influence (default: as many as the random rollouts; "
        "official: 2 x 10,000 against 20,000).",
        exclude_if=_unless(None),
    )
    bootstrap_beams: int = Field(
        5,
        ge=1,
        description="Group-MATES: next documents each rollout of the beam proposes per step "
        "(official: 5).",
        exclude_if=_unless(5),
    )
    bootstrap_candidates: int | None = Field(
        None,
        ge=1,
        description="Group-MATES: documents of the stage pool the beam search picks from, a "
        "seeded sample (default: the random rollouts' documents; officially both draw from "
        "one pool).",
        exclude_if=_unless(None),
    )

    @model_serializer(mode="wrap")
    def _group_fields_when_grouped(self, handler: Any, info: Any) -> Any:
        """Group-MATES' settings are left out of dumps at their defaults (plain MATES steps keep
        their settings hash) but are always in a Group-MATES run's, so that a step made with
        other defaults (before bootstrap rollouts: length 4, none) never matches."""
        data = handler(self)
        if self.group and isinstance(data, dict):
            for name in GROUP_FIELDS:
                if (info.include is None or name in info.include) and not (
                    info.exclude and name in info.exclude
                ):
                    data.setdefault(name, getattr(self, name))
        return data

    reference_scoring: Literal["continuation", "whole"] = Field(
        "continuation",
        description="'continuation': the reference loss scores only each target example's "
        "continuation (its context conditions the model), as the official code, where the "
        "targets have a split (built-in benchmarks; context_fields/continuation_fields); "
        "'whole': every token of each example.",
        exclude_if=_unless("continuation"),
    )
    selection: Literal["gumbel", "gumbel_official"] = Field(
        "gumbel",
        description="'gumbel': Gumbel top-k, argtopk(-pred/tau + G), sampling in proportion to "
        "softmax(-pred/tau); 'gumbel_official': the official code's biased form, the k smallest "
        "of pred/tau + G (for exact replication).",
        exclude_if=_unless("gumbel"),
    )

    @field_validator("train", mode="before")
    @classmethod
    def _over_mates_defaults(cls, v: Any) -> Any:
        """Settings given as a mapping apply over the staged defaults, not TrainConfig's."""
        return {**mates_train_config().model_dump(), **v} if isinstance(v, dict) else v
