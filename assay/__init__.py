"""assay: score, select and mix language-model pretraining data."""

__version__ = "0.1.0"

from assay.exec.runner import LocalRunner, RayRunner, make_runner
from assay.exec.stats import corpus_stats
from assay.io.corpus import Corpus
from assay.io.scores import ScoreSet, read_scores
from assay.io.shards import CorpusError, ReadOptions
from assay.selection.base import load_scorer, make_scorer
from assay.selection.score import score_corpus
from assay.selection.select import SelectConfig, select

__all__ = [
    "Corpus",
    "CorpusError",
    "LocalRunner",
    "RayRunner",
    "ReadOptions",
    "ScoreSet",
    "SelectConfig",
    "__version__",
    "corpus_stats",
    "load_scorer",
    "make_runner",
    "make_scorer",
    "read_scores",
    "score_corpus",
    "select",
]
