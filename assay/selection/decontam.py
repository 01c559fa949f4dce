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

An n-gram of one word repeated is left out of the index (`skip_repeats`; datatrove keeps it):
after digit runs become "0", a solution that lists 18 numbers holds "0 0 ... 0", which matches
every table of numbers in a corpus (in the demo pool, 67 sympy docstrings and CPython files
"overlapped" one competition-math solution that way, and nothing else of it).

The fitted index is a sorted array of unique uint64 n-gram hashes and, for each hash, the
target examples it came from (`item_ptr`/`item_ids`, CSR). Scoring is vectorised per batch:
the batch' normalised text is one byte array, each word's 64-bit hash is read off its prefix
sums, the word hashes are combined into rolling n-gram hashes with numpy, windows that cross documents are dropped, and
membership is a bit table of the hashes' top 24 bits, then `np.searchsorted` on the index
for the few windows that pass it.
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from assay.errors import ConfigError, InputError, MissingError
from assay.selection.base import NotFittedError, Scorer, register_scorer
from assay.util.config import Strict
from assay.util.files import atomic_path, read_json, read_parquet, write_json
from assay.util.hashing import mix64

NGRAMS_COLUMN = "contam_ngrams"
ITEM_COLUMN = "contam_item"
REPORT_FILE = "contamination.json"

#: punctuation deleted by the normalisation: datatrove's set (typographic and CJK marks, ASCII
#: punctuation, control characters other than tab and newline)
PUNCTUATION = (
    "!/—”:％１〈&(、━\\【#%「」，】；+^]~“《„';’{|∶´[=-`*．（–？！：$～«〉,><》)?）。…@_.\"}►»"
    + "".join(chr(c) for lo, hi in ((0, 9), (11, 13), (13, 32), (127, 160)) for c in range(lo, hi))
)
_DELETE_PUNCT = str.maketrans({c: " " if c.isspace() else None for c in PUNCTUATION})
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
    skip_repeats: bool = Field(
        True,
        description="Leave out of the index the n-grams of one word repeated (a run of numbers, "
        "which the normalisation makes all 0): they match any table of numbers; false indexes "
        "them, as datatrove does.",
    )


_DEFAULT = DecontamSettings()


@register_scorer("decontam")
class DecontamScorer(Scorer):
    """Counts each document's word n-grams found in target examples (`contam_ngrams`) and names
    the example it overlaps most (`contam_item`, -1 for none).

    >>> scorer = DecontamScorer().fit(load_targets("assay_mmlu_dev"))
    """

    def __init__(
        self,
        n: int = _DEFAULT.n,
        min_words: int = _DEFAULT.min_words,
        skip_repeats: bool = _DEFAULT.skip_repeats,
    ):
        super().__init__(NGRAMS_COLUMN)
        if n < 1 or min_words < 1:
            raise ConfigError(f"n and min_words must be at least 1, not {n} and {min_words}")
        self.n = n
        self.min_words = min_words
        self.skip_repeats = skip_repeats
        self.hashes: np.ndarray | None = None  # sorted unique uint64 n-gram hashes
        self.item_ptr = np.zeros(1, dtype=np.int64)  # CSR: hash i -> item_ids[ptr[i]:ptr[i+1]]
        self.item_ids = np.zeros(0, dtype=np.int64)
        self.lengths = np.zeros(0, dtype=np.int64)  # window lengths in the index (n and shorter)
        self.targets: list[str] = []
        self.report: dict[str, Any] = {}
        self._filter: np.ndarray | None = None  # derived from hashes, never saved

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
        wh, lens = position_hashes(targets)
        short = lens[(lens >= self.min_words) & (lens < self.n)]
        self.lengths = np.unique(np.append(short, self.n)).astype(np.int64)
        hashes, items, repeats = [], [], 0
        for length in self.lengths.tolist():
            # an example gives its n-grams, or its whole sequence when shorter than n
            owner = lens >= self.n if length == self.n else lens == length
            h, doc = window_hashes(wh, lens, length)
            keep = owner[doc]
            if self.skip_repeats and length > 1:
                one_word = keep & one_word_windows(wh, lens, length)
                repeats += int(one_word.sum())
                keep &= ~one_word
            hashes.append(h[keep])
            items.append(doc[keep])
        h, it = np.concatenate(hashes), np.concatenate(items)
        if len(h) == 0:  # an empty index would find nothing in any corpus, silently
            raise InputError(
                f"none of the {len(targets):,} target examples has {min(self.min_words, self.n)} "
                "words or more "
                f"(after normalisation): nothing to decontaminate against; lower min_words or n"
            )
        pairs = np.unique(np.stack([h, it.astype(np.uint64)]), axis=1)  # by hash, then item
        uniq, first = np.unique(pairs[0], return_index=True)
        self.hashes, self._filter = uniq, None
        self.item_ptr = np.append(first, pairs.shape[1]).astype(np.int64)
        self.item_ids = pairs[1].astype(np.int64)
        self.targets = targets
        self.report = {
            "targets": len(targets),
            "ngrams": len(uniq),
            "n": self.n,
            "short_targets_whole": len(short),
            "short_targets_skipped": int((lens < min(self.min_words, self.n)).sum()),
            "repeat_ngrams_skipped": repeats,
        }
        return self

    # -- scoring -------------------------------------------------------------------------------
    def score(self, texts: Sequence[str]) -> np.ndarray:
        return self.score_table(texts)[NGRAMS_COLUMN]

    def score_table(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        if self.hashes is None:
            raise NotFittedError("DecontamScorer is not fitted: call fit() or load a saved one")
        counts, items = [np.zeros(0)], [np.zeros(0)]
        for a, b in char_chunks(texts):
            count, item = self._score_chunk(texts[a:b])
            counts.append(count)
            items.append(item)
        return {
            NGRAMS_COLUMN: np.concatenate(counts).astype(np.float32),
            ITEM_COLUMN: np.concatenate(items).astype(np.float32),
        }

    def _score_chunk(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        assert self.hashes is not None
        if self._filter is None:  # one bit per 2^40 hashes: most windows stop here
            self._filter = np.zeros(1 << 24, dtype=bool)
            self._filter[self.hashes >> np.uint64(40)] = True
        wh, lens = position_hashes(texts)
        count = np.zeros(len(texts), dtype=np.int64)
        hit_docs, hit_pos = [], []
        for length in self.lengths.tolist():
            h, doc = window_hashes(wh, lens, length)
            maybe = np.flatnonzero(self._filter[h >> np.uint64(40)])
            h, doc = h[maybe], doc[maybe]
            pos = np.minimum(np.searchsorted(self.hashes, h), len(self.hashes) - 1)
            hit = self.hashes[pos] == h
            count += np.bincount(doc[hit], minlength=len(texts))
            hit_docs.append(doc[hit])
            hit_pos.append(pos[hit])
        best = self._best_items(np.concatenate(hit_docs), np.concatenate(hit_pos), len(texts))
        return count, best

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
        self._filter = None
        with open(folder / "targets.jsonl", encoding="utf-8") as f:
            self.targets = [json.loads(line) for line in f]
        if (folder / "fit_report.json").exists():
            self.report = read_json(folder / "fit_report.json")


# ---------------------------------------------------------------------------------------------
# Normalisation and hashing

#: characters hashed at once: a batch is cut into chunks of about this many (memory: ~60 bytes
#: a character)
CHUNK_CHARS = 1 << 21


def char_chunks(texts: Sequence[str], chars: int = CHUNK_CHARS) -> list[tuple[int, int]]:
    """Ranges of `texts` of about `chars` characters each, in order (none for no texts)."""
    out, start, size = [], 0, 0
    for i, t in enumerate(texts):
        size += len(t)
        if size >= chars:
            out.append((start, i + 1))
            start, size = i + 1, 0
    if start < len(texts):
        out.append((start, len(texts)))
    return out


class _StripMarks(dict):
    """`str.translate`'s table deleting combining marks (category Mn), filled per character as
    text meets it (building it for every code point costs seconds per process)."""

    def __missing__(self, code: int) -> int | None:
        value = None if unicodedata.category(chr(code)) == "Mn" else code
        self[code] = value
        return value


_STRIP_MARKS = _StripMarks()


def normalize(text: str) -> str:
    """datatrove's `simplify_text` with its defaults: lower-case, whitespace to spaces,
    punctuation deleted, diacritics stripped, digit runs to "0" (runs of spaces are left to
    `split()`)."""
    text = text.lower().translate(_DELETE_PUNCT)
    if not text.isascii():
        text = unicodedata.normalize("NFD", text).translate(_STRIP_MARKS)
    return _NUMBERS.sub("0", text)


# ASCII text is normalised as bytes in one pass: upper to lower case, whitespace to a space,
# digits to "0" (their runs are collapsed on the batch' array), punctuation deleted
_ASCII_FROM = bytes(range(65, 91)) + b"123456789"
_ASCII_TO = bytes(range(97, 123)) + b"000000000"
_ASCII_SPACE = bytes(c for c in range(128) if chr(c).isspace())
_ASCII_TABLE = bytes.maketrans(_ASCII_FROM + _ASCII_SPACE, _ASCII_TO + b" " * len(_ASCII_SPACE))
_ASCII_DELETE = bytes(c for c in range(128) if chr(c) in PUNCTUATION and not chr(c).isspace())


def normalized_bytes(text: str) -> bytes:
    """`normalize(text)` as UTF-8, words separated by spaces (runs of "0" not yet collapsed in
    ASCII text)."""
    if text.isascii():
        return text.encode("ascii").translate(_ASCII_TABLE, _ASCII_DELETE)
    return " ".join(normalize(text).split()).encode("utf-8")


_POWERS = (np.ones(1, dtype=np.uint64), np.ones(1, dtype=np.uint64))
_P_INV = np.uint64(pow(int(_P), -1, 1 << 64))


def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """P^i and P^-i (mod 2^64) for i < n, kept and grown by doubling."""
    global _POWERS
    if len(_POWERS[0]) < n:
        size = max(n, 2 * len(_POWERS[0]))
        with np.errstate(over="ignore"):
            up = np.cumprod(np.full(size, _P, dtype=np.uint64)) * _P_INV
            down = np.cumprod(np.full(size, _P_INV, dtype=np.uint64)) * _P
        _POWERS = (up, down)
    return _POWERS[0][:n], _POWERS[1][:n]


def position_hashes(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Stable 64-bit hashes of every word of a batch, in order, and each document's word count.

    The batch' normalised bytes are one array; a word's hash is a polynomial hash of its bytes
    mod 2^64, read off prefix sums (h(s..e) = P^(e-1) * (A[e-1] - A[s-1]) with A the running sum
    of byte_j * P^-j), then mixed: no Python work per word."""
    parts = [normalized_bytes(t) for t in texts]
    buf = np.frombuffer(b" ".join(parts) + b" ", dtype=np.uint8)
    doc = np.repeat(np.arange(len(parts), dtype=np.int64), [len(p) + 1 for p in parts])
    zero = buf == 48
    keep = np.ones(len(buf), dtype=bool)
    keep[1:] = ~(zero[1:] & zero[:-1])  # a run of "0" (digits) is one "0"
    buf, doc = buf[keep], doc[keep]
    space = buf == 32
    word = ~space
    first = word.copy()
    first[1:] &= space[:-1]
    last = word.copy()
    last[:-1] &= space[1:]
    starts, ends = np.flatnonzero(first), np.flatnonzero(last)
    up, down = _powers(len(buf))
    with np.errstate(over="ignore"):
        acc = np.cumsum((buf.astype(np.uint64) + np.uint64(1)) * down)
        before = np.where(starts > 0, acc[np.maximum(starts - 1, 0)], np.uint64(0))
        wh = up[ends] * (acc[ends] - before)
    lens = np.bincount(doc[starts], minlength=len(parts)).astype(np.int64)
    return mix64(wh, 0), lens


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


def one_word_windows(wh: np.ndarray, lens: np.ndarray, k: int) -> np.ndarray:
    """For each window of `window_hashes(wh, lens, k)`, in its order: whether its k words are
    one word repeated (k > 1)."""
    m = len(wh) - k + 1
    if m <= 0:
        return np.zeros(0, dtype=bool)
    same = np.concatenate([[0], np.cumsum(wh[1:] == wh[:-1])])  # equal neighbours so far
    repeated = same[k - 1 : m + k - 1] - same[:m] == k - 1
    doc = np.repeat(np.arange(len(lens), dtype=np.int64), lens)
    return repeated[doc[:m] == doc[k - 1 :]]


# ---------------------------------------------------------------------------------------------
# Fitting from a source of targets, and the report


def fit_decontam(
    targets: Any,
    settings: DecontamSettings | None = None,
    *,
    fields: Sequence[str] | None = None,
    max_targets: int | None = None,
    seed: int = 0,
    also: Sequence[str | os.PathLike] = (),
    **options: Any,
) -> DecontamScorer:
    """The decontamination index of `targets` (a built-in benchmark name, a JSONL/JSON/parquet
    file of records, or a list of texts; see `load_targets`), and of every example of each
    source in `also` (more benchmarks, e.g. the evaluation set, read with their default fields),
    indexed after them in order. `settings` or keyword arguments (n=, min_words=) are
    `DecontamSettings`. The fit report's `sources` says which examples came from which source."""
    from assay.common.targets import load_targets

    base = settings.model_dump(exclude_unset=True) if settings is not None else {}
    cfg = DecontamSettings.model_validate({**base, **options})
    examples = load_targets(targets, fields, max_items=max_targets, seed=seed)
    name = str(targets) if isinstance(targets, str | os.PathLike) else "texts"
    sources = [{"source": name, "targets": len(examples)}]
    for source in also:
        more = load_targets(source)
        sources.append({"source": str(source), "targets": len(more)})
        examples = examples + more
    scorer = DecontamScorer(**cfg.model_dump()).fit(examples)
    scorer.report["sources"] = sources
    return scorer


def _item_source(scorer: DecontamScorer | None, item: int) -> dict[str, Any]:
    """Which source an indexed example came from, and its index there (none if unknown)."""
    start = 0
    for entry in scorer.report.get("sources", []) if scorer is not None else []:
        if item < start + entry["targets"]:
            return {"source": entry["source"], "source_item": item - start}
        start += entry["targets"]
    return {}


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
    With the fitted `scorer`, each example's source (and index there, when it was fitted on
    several) and text (its first `preview` characters) are shown."""
    import polars as pl

    folder = Path(scores_dir)
    files = _score_files(folder)
    if not files:
        raise MissingError(f"{folder} holds no score files")
    docs = 0
    per_item: dict[int, list[int]] = {}
    for path in files:
        frame = read_parquet(path, columns=[NGRAMS_COLUMN, ITEM_COLUMN])
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
        row: dict[str, Any] = {"item": item, **_item_source(scorer, item)}
        row.update(documents=n_docs, ngrams=n_grams)
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
