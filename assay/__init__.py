"""assay: score, select and mix language-model pretraining data."""

__version__ = "0.1.0"

from assay.corpus import Corpus, CorpusError, ReadOptions, corpus_stats
from assay.runner import LocalRunner, RayRunner, make_runner
from assay.scores import ScoreSet, read_scores, score_corpus
from assay.selection.base import load_scorer, make_scorer
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
