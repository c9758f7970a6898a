"""The FAISS index of utterance embeddings: choice of index type, build, search.

Inner product over unit vectors is cosine similarity. Exact search (``Flat``) up to ``EXACT_MAX`` vectors; past that
an HNSW graph with a build setting high enough for recall@10 >= 0.98 (FAISS's default efConstruction of 40 gave
0.49-0.83 at 1M). The choice can be overridden with any FAISS index-factory string.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .errors import BundleError

# Exact search over 20k x 384 takes well under 1 ms on one core; past that HNSW is faster at equal recall.
EXACT_MAX = 20_000
HNSW_FACTORY = "HNSW32,Flat"
HNSW_EF_CONSTRUCTION = 200
# efSearch 64: recall@10 0.9998 at 100k with p99 0.69 ms; 128 gave 1.0 at p99 1.17 ms (benchmarks/index_scale.py)
HNSW_EF_SEARCH = 64


def choose_factory(n_vectors: int) -> str:
    return "Flat" if n_vectors <= EXACT_MAX else HNSW_FACTORY


@dataclass(frozen=True)
class Hits:
    similarities: npt.NDArray[np.float32]  # (n_queries, k), descending; -inf where fewer than k exist
    ids: npt.NDArray[np.int64]  # (n_queries, k); -1 where fewer than k exist


class VectorIndex:
    """A FAISS inner-product index. ``threads=1`` by default: on small machines one OpenMP thread made
    single-query search 3-5x faster than two."""

    def __init__(self, index: Any, factory: str) -> None:
        self._index = index
        self.factory = factory

    @classmethod
    def build(cls, vectors: npt.NDArray[np.float32], factory: str | None = None) -> VectorIndex:
        import faiss

        factory = factory or choose_factory(len(vectors))
        dim = vectors.shape[1]
        try:
            index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as e:
            raise BundleError(f"invalid FAISS index factory string '{factory}': {str(e).splitlines()[0]}") from e
        hnsw = _hnsw(index)
        if hnsw is not None:
            hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        if not index.is_trained:
            index.train(x)
        index.add(x)
        if hnsw is not None:
            hnsw.efSearch = HNSW_EF_SEARCH
        return cls(index, factory)

    @classmethod
    def load(cls, path: Path, factory: str) -> VectorIndex:
        import faiss

        try:
            index = faiss.read_index(str(path))
        except RuntimeError as e:
            raise BundleError(f"{path}: FAISS cannot read the index ({str(e).splitlines()[0]})") from e
        hnsw = _hnsw(index)
        if hnsw is not None:
            hnsw.efSearch = HNSW_EF_SEARCH
        return cls(index, factory)

    def save(self, path: Path) -> None:
        import faiss

        faiss.write_index(self._index, str(path))

    def set_ef_search(self, ef: int | None) -> None:
        """HNSW search effort (more: higher recall, slower); ignored by other index types."""
        hnsw = _hnsw(self._index)
        if hnsw is not None and ef is not None:
            hnsw.efSearch = ef

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    @property
    def dim(self) -> int:
        return int(self._index.d)

    def search(self, queries: npt.NDArray[np.float32], k: int) -> Hits:
        k = min(k, self.ntotal)
        sims, ids = self._index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        sims = np.where(ids < 0, -np.inf, sims).astype(np.float32)
        return Hits(similarities=sims, ids=ids.astype(np.int64))


def _hnsw(index: Any) -> Any:
    import faiss

    try:
        return faiss.downcast_index(index).hnsw  # type: ignore[attr-defined]
    except AttributeError:
        return None


def set_threads(n: int) -> None:
    import faiss

    faiss.omp_set_num_threads(n)
