"""Decontamination: find documents that contain benchmark text, by hashed word n-grams.

Target-driven selection (BETR, PreSelect, MASS, MATES) pulls a corpus toward benchmark text, so
a selection may hold the benchmark itself. `DecontamScorer` is fitted on target examples (any
source `load_targets` reads) and scores each document with two columns:

- `contam_ngrams`: how many of the document's word n-grams are n-grams of some target example
  (every occurrence counts), 0 for a clean document;
- `contam_item`: the index (in the fitted target list) of the example the document shares most
  n-grams with, ties to the lowest index; -1 when it shares none (score columns are float32
  without nulls, so -1 stands for "none").

Text is normalised as datatrove's n-gram decontamination does (`datatrove/utils/text.py`,
`simplify_text` with its default `TextNormConfig`, used by `pipeline/decont/n_grams.py`):
lower-case; delete punctuation (datatrove's character set: ASCII and common CJK/typographic
punctuation, and control characters); strip diacritics (NFD, drop combining marks); every run of
digits becomes "0"; then words are split on whitespace (datatrove tokenises with nltk's
`word_tokenize`, which after this normalisation mostly splits on whitespace too; it also splits
a few contractions such as "cannot", which we do not). An n-gram is n consecutive words, n = 13
by default (the GPT-3 paper's; datatrove's default is 12).

A target example shorter than n words: datatrove (through nltk's `ngrams`) takes no n-gram from
it at all. Here it contributes its whole word sequence as one shorter "n-gram", matched against
the document's windows of that length, when it has at least `min_words` words (8, the GPT-3
paper's smallest n); `min_words=n` gives datatrove's behaviour.

The fitted index is a sorted array of unique uint64 n-gram hashes and, for each hash, the
target examples it came from (`item_ptr`/`item_ids`, CSR). Scoring is vectorised per batch:
words get ids (one dict pass), the ids' 64-bit word hashes are combined into rolling n-gram
hashes with numpy over the whole batch, windows that cross documents are dropped, and
membership is one `np.searchsorted` on the index.
"""

from __future__ import annotations

import json
import re
import sys
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from assay.errors import ConfigError, InputError, MissingError
from assay.selection.base import NotFittedError, Scorer, register_scorer
from assay.util.config import Strict
from assay.util.files import atomic_path, read_json, write_json
from assay.util.hashing import mix64, stable_hash64

NGRAMS_COLUMN = "contam_ngrams"
ITEM_COLUMN = "contam_item"
REPORT_FILE = "contamination.json"

#: punctuation deleted by the normalisation: datatrove's set (typographic and CJK marks, ASCII
#: punctuation, control characters other than tab and newline)
PUNCTUATION = (
    "!/—”:％１〈&(、━\\【#%「」，】；+^]~“《„';’{|∶´[=-`*．（–？！：$～«〉,><》)?）。…@_.\"}►»"
    + "".join(chr(c) for lo, hi in ((0, 9), (11, 13), (13, 32), (127, 160)) for c in range(lo, hi))
)
_DELETE_PUNCT = str.maketrans("", "", PUNCTUATION)
_NUMBERS = re.compile(r"\d+")
#: the rolling hash' multiplier (odd, so multiplication is a bijection of uint64)
_P = np.uint64(0x100000001B3)


class DecontamSettings(Strict):
    """The decontamination index' options: what `fit_decontam` takes, and (with its targets and
    corpus) the `decontaminate` step."""

    n: int = Field(13, ge=1, description="Words per n-gram (GPT-3: 13; datatrove: 12).")
    min_words: int = Field(
        8,
        ge=1,
        description="A target example shorter than n words is matched whole when it has at "
        "least this many words; set it to n to skip short examples, as datatrove does.",
    )


_DEFAULT = DecontamSettings()


@register_scorer("decontam")
class DecontamScorer(Scorer):
    """Counts each document's word n-grams found in target examples (`contam_ngrams`) and names
    the example it overlaps most (`contam_item`, -1 for none).

    >>> scorer = DecontamScorer().fit(load_targets("assay_mmlu_dev"))
    """

    def __init__(self, n: int = _DEFAULT.n, min_words: int = _DEFAULT.min_words):
        super().__init__(NGRAMS_COLUMN)
        if n < 1 or min_words < 1:
            raise ConfigError(f"n and min_words must be at least 1, not {n} and {min_words}")
        self.n = n
        self.min_words = min_words
        self.hashes: np.ndarray | None = None  # sorted unique uint64 n-gram hashes
        self.item_ptr = np.zeros(1, dtype=np.int64)  # CSR: hash i -> item_ids[ptr[i]:ptr[i+1]]
        self.item_ids = np.zeros(0, dtype=np.int64)
        self.lengths = np.zeros(0, dtype=np.int64)  # window lengths in the index (n and shorter)
        self.targets: list[str] = []
        self.report: dict[str, Any] = {}

    @property
    def is_fitted(self) -> bool:
        return self.hashes is not None

    @property
    def columns(self) -> list[str]:
        return [NGRAMS_COLUMN, ITEM_COLUMN]

    # -- fitting -------------------------------------------------------------------------------
    def fit(self, targets: Sequence[str]) -> DecontamScorer:
        """Index every n-gram of `targets` (texts, one per example; their order names them)."""
        targets = [str(t) for t in targets]
        if not targets:
            raise InputError("decontamination needs target examples: the target set is empty")
        words = [normalize(t).split() for t in targets]
        wh, lens = position_hashes(words)
        short = lens[(lens >= self.min_words) & (lens < self.n)]
        self.lengths = np.unique(np.append(short, self.n)).astype(np.int64)
        hashes, items = [], []
        for length in self.lengths.tolist():
            # an example gives its n-grams, or its whole sequence when shorter than n
            owner = lens >= self.n if length == self.n else lens == length
            h, doc = window_hashes(wh, lens, length)
            keep = owner[doc]
            hashes.append(h[keep])
            items.append(doc[keep])
        h, it = np.concatenate(hashes), np.concatenate(items)
        pairs = np.unique(np.stack([h, it.astype(np.uint64)]), axis=1)  # by hash, then item
        uniq, first = np.unique(pairs[0], return_index=True)
        self.hashes = uniq
        self.item_ptr = np.append(first, pairs.shape[1]).astype(np.int64)
        self.item_ids = pairs[1].astype(np.int64)
        self.targets = targets
        self.report = {
            "targets": len(targets),
            "ngrams": len(uniq),
            "n": self.n,
            "short_targets_whole": len(short),
            "short_targets_skipped": int((lens < min(self.min_words, self.n)).sum()),
        }
        return self

    # -- scoring -------------------------------------------------------------------------------
    def score(self, texts: Sequence[str]) -> np.ndarray:
        return self.score_table(texts)[NGRAMS_COLUMN]

    def score_table(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        if self.hashes is None:
            raise NotFittedError("DecontamScorer is not fitted: call fit() or load a saved one")
        wh, lens = position_hashes([normalize(t).split() for t in texts])
        count = np.zeros(len(texts), dtype=np.int64)
        hit_docs, hit_pos = [], []
        for length in self.lengths.tolist():
            h, doc = window_hashes(wh, lens, length)
            pos = np.searchsorted(self.hashes, h)
            pos[pos == len(self.hashes)] = 0
            hit = self.hashes[pos] == h if len(self.hashes) else np.zeros(len(h), dtype=bool)
            count += np.bincount(doc[hit], minlength=len(texts))
            hit_docs.append(doc[hit])
            hit_pos.append(pos[hit])
        best = self._best_items(np.concatenate(hit_docs), np.concatenate(hit_pos), len(texts))
        return {
            NGRAMS_COLUMN: count.astype(np.float32),
            ITEM_COLUMN: best.astype(np.float32),
        }

    def _best_items(self, docs: np.ndarray, pos: np.ndarray, n_docs: int) -> np.ndarray:
        """Per document, the target example with most of its matched n-grams (lowest index on
        a tie), -1 for none: each matched hash counts once for every example it came from."""
        best = np.full(n_docs, -1, dtype=np.int64)
        if not len(docs):
            return best
        start, stop = self.item_ptr[pos], self.item_ptr[pos + 1]
        per = stop - start
        rep_docs = np.repeat(docs, per)
        offs = np.arange(per.sum()) - np.repeat(np.cumsum(per) - per, per)
        items = self.item_ids[np.repeat(start, per) + offs]
        pairs, counts = np.unique(np.stack([rep_docs, items]), axis=1, return_counts=True)
        order = np.lexsort((pairs[1], -counts, pairs[0]))  # by doc, most hits, lowest item
        d = pairs[0][order]
        first = np.ones(len(d), dtype=bool)
        first[1:] = d[1:] != d[:-1]
        best[d[first]] = pairs[1][order][first]
        return best

    # -- persistence ---------------------------------------------------------------------------
    def _save_state(self, folder: Path) -> None:
        for name in ("hashes", "item_ptr", "item_ids", "lengths"):
            with atomic_path(folder / f"{name}.npy") as tmp, open(tmp, "wb") as f:
                np.save(f, getattr(self, name), allow_pickle=False)
        with atomic_path(folder / "targets.jsonl") as tmp, open(tmp, "w", encoding="utf-8") as f:
            for t in self.targets:
                f.write(json.dumps(t, ensure_ascii=False) + "\n")
        write_json(folder / "fit_report.json", self.report)

    def _load_state(self, folder: Path) -> None:
        if not (folder / "hashes.npy").exists():
            raise MissingError(f"{folder} holds no decontamination index (no hashes.npy)")
        for name in ("hashes", "item_ptr", "item_ids", "lengths"):
            setattr(self, name, np.load(folder / f"{name}.npy", allow_pickle=False))
        with open(folder / "targets.jsonl", encoding="utf-8") as f:
            self.targets = [json.loads(line) for line in f]
        if (folder / "fit_report.json").exists():
            self.report = read_json(folder / "fit_report.json")


# ---------------------------------------------------------------------------------------------
# Normalisation and hashing


def _combining_marks() -> dict[int, None]:
    return {c: None for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) == "Mn"}


_STRIP_MARKS: dict[int, None] | None = None


def normalize(text: str) -> str:
    """datatrove's `simplify_text` with its defaults: lower-case, punctuation deleted,
    diacritics stripped, digit runs to "0" (whitespace is left to `split()`)."""
    global _STRIP_MARKS
    text = text.lower().translate(_DELETE_PUNCT)
    if not text.isascii():
        if _STRIP_MARKS is None:
            _STRIP_MARKS = _combining_marks()
        text = unicodedata.normalize("NFD", text).translate(_STRIP_MARKS)
    return _NUMBERS.sub("0", text)


def word_ids(words: list[list[str]]) -> tuple[np.ndarray, list[str], np.ndarray]:
    """The batch' words as ids into its unique words: (ids in order, the unique words, each
    document's word count)."""
    flat = [w for ws in words for w in ws]
    uniq = list(dict.fromkeys(flat))
    index = {w: i for i, w in enumerate(uniq)}
    ids = np.fromiter(map(index.__getitem__, flat), dtype=np.int64, count=len(flat))
    lens = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
    return ids, uniq, lens


def position_hashes(words: list[list[str]]) -> tuple[np.ndarray, np.ndarray]:
    """Stable 64-bit hashes (the same in every process) of every word of a batch, in order, and
    each document's word count: each distinct word is hashed once."""
    ids, uniq, lens = word_ids(words)
    wh = stable_hash64(uniq) if uniq else np.zeros(0, dtype=np.uint64)
    return wh[ids], lens


def window_hashes(wh: np.ndarray, lens: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of every window of `k` consecutive words inside a document (a polynomial rolling
    hash of the word hashes, then mixed with k), and the document of each."""
    total = len(wh)
    if total < k:
        return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64)
    m = total - k + 1
    with np.errstate(over="ignore"):
        acc = wh[:m].copy()
        for j in range(1, k):
            acc *= _P
            acc += wh[j : m + j]
    doc = np.repeat(np.arange(len(lens), dtype=np.int64), lens)
    inside = doc[:m] == doc[k - 1 :]
    return mix64(acc[inside], k), doc[:m][inside]


# ---------------------------------------------------------------------------------------------
# Fitting from a source of targets, and the report


def fit_decontam(
    targets: Any,
    settings: DecontamSettings | None = None,
    *,
    fields: Sequence[str] | None = None,
    max_targets: int | None = None,
    seed: int = 0,
    **options: Any,
) -> DecontamScorer:
    """The decontamination index of `targets` (a built-in benchmark name, a JSONL/JSON/parquet
    file of records, or a list of texts; see `load_targets`). `settings` or keyword arguments
    (n=, min_words=) are `DecontamSettings`."""
    from assay.common.targets import load_targets

    base = settings.model_dump(exclude_unset=True) if settings is not None else {}
    cfg = DecontamSettings.model_validate({**base, **options})
    examples = load_targets(targets, fields, max_items=max_targets, seed=seed)
    return DecontamScorer(n=cfg.n, min_words=cfg.min_words).fit(examples)


def _score_files(scores_dir: Path) -> list[Path]:
    return sorted(
        p
        for p in scores_dir.rglob("*.parquet")
        if not any(part.startswith("_") for part in p.relative_to(scores_dir).parts)
    )


def contamination_report(
    scores_dir: str | Path, scorer: DecontamScorer | None = None, *, preview: int = 200
) -> dict[str, Any]:
    """How many scored documents overlap the targets, and with which target examples: per
    example (by `contam_item`, the one each document overlaps most) the number of documents and
    of matched n-grams, most documents first. Reads the two columns of one score file at a time.
    With the fitted `scorer`, each example's text is shown (its first `preview` characters)."""
    import polars as pl

    folder = Path(scores_dir)
    files = _score_files(folder)
    if not files:
        raise MissingError(f"{folder} holds no score files")
    docs = 0
    per_item: dict[int, list[int]] = {}
    for path in files:
        frame = pl.read_parquet(path, columns=[NGRAMS_COLUMN, ITEM_COLUMN])
        docs += frame.height
        hits = (
            frame.filter(pl.col(NGRAMS_COLUMN) > 0)
            .group_by(ITEM_COLUMN)
            .agg(pl.len().alias("docs"), pl.col(NGRAMS_COLUMN).sum().alias("ngrams"))
        )
        for item, n_docs, n_grams in hits.iter_rows():
            acc = per_item.setdefault(int(item), [0, 0])
            acc[0] += int(n_docs)
            acc[1] += int(n_grams)
    items = []
    for item, (n_docs, n_grams) in sorted(per_item.items(), key=lambda kv: (-kv[1][0], kv[0])):
        row: dict[str, Any] = {"item": item, "documents": n_docs, "ngrams": n_grams}
        if scorer is not None and 0 <= item < len(scorer.targets):
            row["text"] = scorer.targets[item][:preview]
        items.append(row)
    return {
        "documents": docs,
        "contaminated": sum(v[0] for v in per_item.values()),
        "items": items,
    }


def write_contamination_report(
    scores_dir: str | Path, scorer: DecontamScorer | None = None
) -> dict[str, Any]:
    """`contamination_report` written beside the scores, as `contamination.json`."""
    report = contamination_report(scores_dir, scorer)
    write_json(Path(scores_dir) / REPORT_FILE, report)
    return report
