"""The n-gram machinery of the `ngram_lm` scorer: tokens of a batch as 64-bit hashes, the hashed
n-gram keys ending at each token, counting, interpolated modified Kneser-Ney estimation, and a
numpy open-addressing hash table.

Tokens (CCNet normalises a line as lower case, accents stripped, digits as 0, then applies
SentencePiece; here words take SentencePiece's place): lower-cased words and runs of punctuation
(`\\w+|[^\\w\\s]+`, split in numpy over a batch's bytes by `assay.selection.dsir`), ASCII digits
read as 0, accents stripped (NFD, combining marks dropped) and Unicode punctuation read as ASCII
in texts that are not ASCII (CCNet's `normalize(accent, case, numbers, punct=1)`). Each
line of a text is a sentence, `<s> w1 ... wn </s>`, as KenLM scores CCNet's paragraphs. (A
text that is still not ASCII after stripping accents is split by Python's regex and its words
joined by spaces: its lines become one sentence.)

An n-gram is its 64-bit key: a word's hash, or `mix64(key of its first n-1 words * P + hash of
its last word) | 1` (odd: 0 marks an empty slot). Two n-grams share a key with probability
2^-63 a pair (the model's n-grams are never compared as strings), so collisions are negligible
below billions of n-grams; when they happen, the two n-grams' counts are merged. The model's
size is that of the reference's distinct n-grams (16 bytes a slot, at most 4 slots an n-gram):
no n-gram is pruned.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from assay.errors import InputError
from assay.selection.dsir import _word_hashes, _word_spans
from assay.util.hashing import mix64

WORD_PUNCT = re.compile(r"\w+|[^\w\s]+")
#: combining marks (Unicode's combining diacritical blocks), dropped after NFD
_MARKS = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")
_P = np.uint64(0x9E3779B97F4A7C15)
#: the hashes of the sentence markers (no word hashes to them but by a 2^-64 chance)
BOS = np.uint64(0x51C2E33F7A2B1D05)
EOS = np.uint64(0x2F6B0C81D94E3A77)
_DIGITS = np.arange(256, dtype=np.uint8)
_DIGITS[ord("0") : ord("9") + 1] = ord("0")
_ONE = np.uint64(1)


def _punctuation() -> dict[int, str]:
    """Unicode punctuation read as its ASCII counterpart, as CCNet's normaliser does."""
    same = {
        ",": "，、", ".": "。", '"': "„“”«»「」《》", "'": "´’‘", ":": "∶：", "?": "？", "!": "！",
        "(": "（", ")": "）", ";": "；", "-": "–━►", " - ": "—", ". ": "．", "~": "～",
        "...": "…", "<": "〈", ">": "〉", "[": "【", "]": "】", "%": "％",
    }  # fmt: skip
    return {ord(c): ascii_ for ascii_, chars in same.items() for c in chars}


_PUNCTUATION = _punctuation()


def normalise(text: str) -> str:
    """A text that is not ASCII with its accents stripped (NFD, combining diacritical marks
    dropped) and its Unicode punctuation read as ASCII (curly quotes, dashes, full-width
    signs): most such texts become ASCII, and take the batch tokenizer's fast path."""
    if text.isascii():
        return text
    return _MARKS.sub("", unicodedata.normalize("NFD", text)).translate(_PUNCTUATION)


def words(line: str) -> list[str]:
    """The tokens of one line, as the batch tokenizer finds them (for references and tests)."""
    out = WORD_PUNCT.findall(normalise(line).lower())
    return [re.sub(r"[0-9]", "0", w) for w in out]


def combine(prefix: np.ndarray, last: np.ndarray) -> np.ndarray:
    """The key of an n-gram from its first n-1 words' key and its last word's hash."""
    with np.errstate(over="ignore"):
        return mix64(prefix * _P + last, 0x4E47) | _ONE


@dataclass
class Stream:
    """A batch as one token stream: `<s> words </s>` per sentence, each text's in order.

    `pos` is each token's position in its sentence (0 for `<s>`), `doc` its text's number;
    `keys[k - 1]` the key of the k-gram ending at each token (valid where `pos >= k - 1`)."""

    tok: np.ndarray
    pos: np.ndarray
    doc: np.ndarray
    keys: list[np.ndarray]


def stream(texts: Sequence[str], order: int) -> Stream:
    """Tokens of `texts` and the keys of their n-grams up to `order` (no Python step per word
    for ASCII texts)."""
    texts = [normalise(t) for t in texts]
    buf, starts, lengths, doc = _word_spans(texts)
    h = _word_hashes(_DIGITS[buf], starts, lengths) | _ONE
    n = len(h)
    lines = np.cumsum(buf == 0x0A)[starts] if n else np.zeros(0, dtype=np.int64)
    new = np.ones(n, dtype=bool)
    if n > 1:
        new[1:] = (doc[1:] != doc[:-1]) | (lines[1:] != lines[:-1])
    sid = np.cumsum(new) - 1
    first = np.flatnonzero(new)
    length = np.diff(np.append(first, n))
    # a text without words is one empty sentence, `<s> </s>`
    empty = np.flatnonzero(np.bincount(doc, minlength=len(texts)) == 0)
    s_doc = np.concatenate([doc[first], empty])
    rank = np.empty(len(s_doc), dtype=np.int64)
    rank[np.argsort(s_doc, kind="stable")] = np.arange(len(s_doc))
    s_len = np.empty(len(s_doc), dtype=np.int64)
    s_len[rank] = np.concatenate([length, np.zeros(len(empty), dtype=np.int64)])
    s_doc = np.sort(s_doc, kind="stable")
    off = np.concatenate([[0], np.cumsum(s_len + 2)])
    total = int(off[-1])
    tok = np.full(total, EOS, dtype=np.uint64)
    tok[off[:-1]] = BOS
    in_sent = np.arange(n) - first[sid]
    tok[off[rank[sid]] + 1 + in_sent] = h
    s_of = np.repeat(np.arange(len(s_doc)), s_len + 2)
    pos = np.arange(total) - off[s_of]
    docs = s_doc[s_of]
    keys = [tok]
    for _ in range(1, order):
        prev = keys[-1]
        k = np.zeros(total, dtype=np.uint64)
        if total > 1:
            k[1:] = combine(prev[:-1], tok[1:])
        keys.append(k)
    return Stream(tok, pos, docs, keys)


@dataclass
class Counts:
    """The distinct n-grams of one order: sorted keys, raw counts, whether each begins with
    `<s>`, and (order >= 2) the keys of its first and of its last n-1 words."""

    keys: np.ndarray
    counts: np.ndarray
    bos: np.ndarray
    prefix: np.ndarray | None
    suffix: np.ndarray | None

    @staticmethod
    def of(s: Stream, k: int) -> Counts:
        valid = np.flatnonzero(s.pos >= k - 1)
        keys = s.keys[k - 1][valid]
        u, first, counts = np.unique(keys, return_index=True, return_counts=True)
        at = valid[first]
        bos = s.pos[at] == k - 1
        if k == 1:
            return Counts(u, counts, bos, None, None)
        return Counts(u, counts, bos, s.keys[k - 2][at - 1], s.keys[k - 2][at])

    @staticmethod
    def merge(parts: list[Counts]) -> Counts:
        if len(parts) == 1:
            return parts[0]
        keys = np.concatenate([p.keys for p in parts])
        u, first, inv = np.unique(keys, return_index=True, return_inverse=True)
        counts = np.bincount(inv, weights=np.concatenate([p.counts for p in parts]))
        bos = np.concatenate([p.bos for p in parts])[first]
        if parts[0].prefix is None:
            return Counts(u, counts.astype(np.int64), bos, None, None)
        prefix = np.concatenate([p.prefix for p in parts])[first]
        suffix = np.concatenate([p.suffix for p in parts])[first]
        return Counts(u, counts.astype(np.int64), bos, prefix, suffix)


def discounts(adjusted: np.ndarray) -> np.ndarray:
    """Modified Kneser-Ney's D1, D2, D3+ from the counts of counts (Chen & Goodman 1998):
    Y = n1 / (n1 + 2 n2), Dj = j - (j + 1) Y n(j+1) / nj. Where a count of counts is zero or a
    discount falls outside (0, j), 0.5, 1 and 1.5 stand in (tiny reference sets)."""
    n = np.bincount(np.minimum(adjusted, 5), minlength=6)[1:5].astype(np.float64)
    out = np.array([0.5, 1.0, 1.5])
    if n[0] > 0 and n[1] > 0:
        y = n[0] / (n[0] + 2 * n[1])
        for j in range(3):
            if n[j] > 0:
                d = (j + 1) - (j + 2) * y * n[j + 1] / n[j]
                if 0 < d < j + 1:
                    out[j] = d
    return out


def _adjusted(c: Counts, above: Counts | None) -> np.ndarray:
    """Kneser-Ney's counts: raw counts at the highest order and for n-grams that begin with
    `<s>`; elsewhere the number of distinct words seen before the n-gram."""
    if above is None:
        return c.counts.copy()
    left = np.bincount(np.searchsorted(c.keys, above.suffix), minlength=len(c.keys))
    return np.where(c.bos, c.counts, left).astype(np.int64)


@dataclass
class Level:
    """One order's n-grams: key, alpha (the discounted share of its count in its context) and
    gamma (as a context: the mass its continuations leave to the lower order)."""

    keys: np.ndarray
    alpha: np.ndarray
    gamma: np.ndarray
    discounts: np.ndarray


def estimate(counts: list[Counts]) -> tuple[list[Level], float]:
    """Interpolated modified Kneser-Ney from the counts of orders 1..n; also 1/V, the uniform
    share of an unknown word (V: the words seen, `</s>` and `<unk>`).

    p_k(w|h) = alpha_k(hw) + gamma_k(h) p_(k-1)(w|h'), alpha_k(hw) = (a(hw) - D(a(hw))) / a(h.),
    gamma_k(h) = (D1 N1(h.) + D2 N2(h.) + D3+ N3+(h.)) / a(h.), p_0 = 1/V; an unseen context
    has gamma 1 (its n-grams fall through to the lower order)."""
    order = len(counts)
    adjusted = [
        _adjusted(counts[k], counts[k + 1] if k + 1 < order else None) for k in range(order)
    ]
    gammas = [np.ones(len(c.keys)) for c in counts]
    levels: list[Level] = []
    for k in range(order):
        a = adjusted[k]
        if k == 0:
            a = np.where(counts[0].keys == BOS, 0, a)
        d = discounts(a[a > 0])
        disc = np.where(a > 0, d[np.clip(a, 1, 3) - 1], 0.0)
        if k == 0:
            ctx = np.zeros(len(a), dtype=np.int64)
            n_ctx = 1
        else:
            ctx = np.searchsorted(counts[k - 1].keys, counts[k].prefix)
            n_ctx = len(counts[k - 1].keys)
        total = np.bincount(ctx, weights=a, minlength=n_ctx)
        left = np.bincount(ctx, weights=disc, minlength=n_ctx)
        alpha = (a - disc) / np.maximum(total[ctx], 1e-300)
        if k == 0:
            if total[0] <= 0:
                raise InputError("the n-gram model needs reference text: it has no words")
            gamma0 = left[0] / total[0]
        else:
            seen = total > 0
            gammas[k - 1][seen] = left[seen] / total[seen]
        levels.append(Level(counts[k].keys, alpha, gammas[k], d))
    vocab = int((counts[0].keys != BOS).sum()) + 1
    levels[0].alpha = levels[0].alpha + gamma0 / vocab
    levels[0].alpha[levels[0].keys == BOS] = 0.0
    return levels, gamma0 / vocab


class Table:
    """Keys in a power-of-two array with linear probing (load at most 1/2; 0 marks an empty
    slot: keys are odd), one slot past the end for a key that is not there (alpha 0, gamma 1).

    `data` is (slots + 1) x 2 uint64: a slot's key, then its alpha and gamma as two float32, so
    that a key and its values share a cache line (`slots`, `alpha` and `gamma` are views)."""

    def __init__(self, data: np.ndarray):
        self.data = data
        values = data.view(np.float32)
        self.slots = data[:-1, 0]
        self.alpha, self.gamma = values[:, 2], values[:, 3]
        self.mask = np.uint64(len(self.slots) - 1)

    @classmethod
    def build(cls, level: Level) -> Table:
        n = len(level.keys)
        cap = 1 << max(4, int(2 * n - 1).bit_length())
        table = cls(np.zeros((cap + 1, 2), dtype=np.uint64))
        slots = table.slots
        where = np.empty(n, dtype=np.int64)
        pending = np.arange(n)
        s = (level.keys & np.uint64(cap - 1)).astype(np.int64)
        while len(pending):
            free = np.flatnonzero(slots[s] == 0)
            won, first = np.unique(s[free], return_index=True)
            winners = pending[free[first]]
            slots[won] = level.keys[winners]
            where[winners] = won
            placed = np.zeros(len(pending), dtype=bool)
            placed[free[first]] = True
            pending, s = pending[~placed], (s[~placed] + 1) & (cap - 1)
        table.gamma[:] = 1.0
        table.alpha[where], table.gamma[where] = level.alpha, level.gamma
        return table

    def values(self, slot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """alpha and gamma of slots (one gather)."""
        v = self.data[slot].view(np.float32)
        return v[:, 2], v[:, 3]

    def find(self, q: np.ndarray) -> np.ndarray:
        """The slot of each key, or the last slot (len(slots)) for a key that is not there."""
        cap = len(self.slots)
        s = (q & self.mask).astype(np.int64)
        got = self.slots[s]
        hit = got == q
        out = np.where(hit, s, cap)
        pending = np.flatnonzero(~hit & (got != 0))  # probe on past other keys
        q, s = q[pending], (s[pending] + 1) & (cap - 1)
        while len(pending):
            got = self.slots[s]
            hit = got == q
            out[pending[hit]] = s[hit]
            go = ~hit & (got != 0)
            pending, q, s = pending[go], q[go], (s[go] + 1) & (cap - 1)
        return out


def token_log10(tables: list[Table], s: Stream) -> np.ndarray:
    """log10 p of every token of the stream under the model (0 for `<s>`, which is not
    predicted): p_1 = alpha_1(w) (or 1/V for an unknown word, stored as the missing slot's
    alpha), then p_k = alpha_k(hw) + gamma(h) p_(k-1) while the sentence holds k tokens.

    A k-gram is looked up only where its last k-1 words were found: the model holds the
    suffix of every n-gram it holds, so elsewhere it is missing (alpha 0, gamma 1)."""
    total = len(s.tok)
    p = None
    prev_gamma = None
    found = None
    for k, table in enumerate(tables, start=1):
        cap = len(table.slots)
        if found is None:
            slot = table.find(s.keys[0])
        else:
            ask = np.flatnonzero(found & (s.pos >= k - 1))
            slot = np.full(total, cap, dtype=np.int64)
            slot[ask] = table.find(s.keys[k - 1][ask])
        found = slot != cap
        alpha, gamma = table.values(slot)
        if p is None:
            p = alpha.astype(np.float64)
        else:
            use = s.pos >= k - 1
            g = np.ones(total, dtype=np.float32)
            g[1:] = prev_gamma[:-1]
            p = np.where(use, alpha + g * p, p)
        prev_gamma = np.where(s.pos >= k - 1, gamma, np.float32(1.0))
    return np.log10(np.where(s.pos == 0, 1.0, p))
