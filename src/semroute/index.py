"""The FAISS index of utterance embeddings: choice of index type, build, search.

Inner product over unit vectors is cosine similarity. Exact search (``Flat``) up to ``EXACT_MAX`` vectors; past that
an HNSW graph over half-precision vectors (``ANN_FACTORY``). Any FAISS index-factory string overrides the choice;
the search-time effort (HNSW ``efSearch``, IVF ``nprobe``) is applied at build and again at load, so a bundle built
before a default changed searches with today's setting.

How the defaults were chosen (benchmarks/index_scale.py; synthetic vectors shaped like CLINC150's embeddings, 1,000
queries, search on one thread as the server does, build on two; recall@10 against exact search; "cpu" is the
search thread's CPU time, which the shared 2-core benchmark machine did not inflate the way it did wall-clock p99):
(table to follow once the 1M measurements are in)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .errors import BundleError

EXACT_MAX = 20_000
ANN_FACTORY = "HNSW32,SQfp16"
HNSW_EF_CONSTRUCTION = 100
HNSW_EF_SEARCH = 128
# For IVF overrides ("IVF4096_HNSW32,Flat"): lists searched per query, and the HNSW coarse quantizer's effort.
IVF_NPROBE = 32
IVF_QUANTIZER_EF_SEARCH = 64


def choose_factory(n_vectors: int) -> str:
    return "Flat" if n_vectors <= EXACT_MAX else ANN_FACTORY


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
        _apply_search_defaults(index)
        return cls(index, factory)

    @classmethod
    def load(cls, path: Path, factory: str) -> VectorIndex:
        import faiss

        try:
            index = faiss.read_index(str(path))
        except RuntimeError as e:
            raise BundleError(f"{path}: FAISS cannot read the index ({str(e).splitlines()[0]})") from e
        _apply_search_defaults(index)
        return cls(index, factory)

    def save(self, path: Path) -> None:
        import faiss

        faiss.write_index(self._index, str(path))

    def set_ef_search(self, ef: int | None) -> None:
        """HNSW search effort (more: higher recall, slower); ignored by other index types."""
        hnsw = _hnsw(self._index)
        if hnsw is not None and ef is not None:
            hnsw.efSearch = ef

    def set_nprobe(self, nprobe: int | None) -> None:
        """IVF lists searched per query (more: higher recall, slower); ignored by other index types."""
        ivf = _ivf(self._index)
        if ivf is not None and nprobe is not None:
            ivf.nprobe = nprobe

    @property
    def search_params(self) -> dict[str, int]:
        """The search-time effort in force: ``efSearch`` and/or ``nprobe``; empty for exact search."""
        out = {}
        hnsw, ivf = _hnsw(self._index), _ivf(self._index)
        if hnsw is not None:
            out["ef_search"] = int(hnsw.efSearch)
        if ivf is not None:
            out["nprobe"] = int(ivf.nprobe)
        return out

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


def _apply_search_defaults(index: Any) -> None:
    hnsw, ivf = _hnsw(index), _ivf(index)
    if hnsw is not None:
        hnsw.efSearch = HNSW_EF_SEARCH
    if ivf is not None:
        ivf.nprobe = IVF_NPROBE
        quantizer = _hnsw(ivf.quantizer)
        if quantizer is not None:
            quantizer.efSearch = IVF_QUANTIZER_EF_SEARCH


def _hnsw(index: Any) -> Any:
    import faiss

    try:
        return faiss.downcast_index(index).hnsw  # type: ignore[attr-defined]
    except AttributeError:
        return None


def _ivf(index: Any) -> Any:
    import faiss

    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def set_threads(n: int) -> None:
    import faiss

    faiss.omp_set_num_threads(n)
