"""The FAISS index of utterance embeddings: choice of index type, build, search.

Inner product over unit vectors is cosine similarity. Exact search (``Flat``) up to ``EXACT_MAX`` vectors; past that
an HNSW graph over half-precision vectors (``ANN_FACTORY``); from ``LARGE_FROM`` inverted lists over 4-bit product
codes re-ranked against half-precision vectors (``large_factory``). Any FAISS index-factory string overrides the
choice; the search-time effort (HNSW ``efSearch``, IVF ``nprobe``, re-ranking ``k_factor``) is applied at build and
again at load, so a bundle built before a default changed searches with today's setting.

2026-11-29 (docs/index.md has the detail): at 1M the refined IVF default beat HNSW32,SQfp16 in two suite runs at
recall@10 ~0.984 (CPU p99 1.81 vs 2.56 ms, and 1.56 vs 3.82 ms; builds 353 vs 865 s; 795 vs 992 MB), and at 300k
in an exploratory run (0.985 at 0.72 ms p99 with nprobe 64, k x 40, vs HNSW efSearch 128: 0.983 at 0.79-1.13 ms).
The 1 ms target at 1M is still missed (1.8x). All the recall lost is on out-of-scope queries (in scope: 0.998-1.0).
HNSW48, and HNSW walks over SQ8 / SQ4 / PQ codes re-ranked in fp16, did no better than HNSW32 over fp16 at 300k.

How the defaults were chosen (synthetic vectors shaped like CLINC150's embeddings, see benchmarks/index_scale.py;
1,000 queries searched one at a time on one thread as the server does; builds on two threads; recall@10 against
exact search; "cpu" is the search thread's CPU time, which the shared 2-core machine inflated less than wall-clock
p99; 2026-11-25, load average 5-6 on 2 cores throughout, so all timings are pessimistic):

- Exact search, one thread (CPU ms p50 / p99): 10k 0.52 / 0.79, 12k 0.79 / 1.07, 15k 0.80 / 1.06, 20k 1.05 / 1.46.
  It stops meeting ~1 ms p99 past ~10k, so ``EXACT_MAX`` is 10k; at 10k the ANN default answers in 0.34 ms CPU p99
  with recall@10 0.999 and builds in 8 s.
- 200k vectors, efConstruction 100 (build s / MB / recall@10 and CPU p99 ms at efSearch 128):
  HNSW32,Flat 270 / 345 / 0.987, 1.02; HNSW32,SQfp16 91 / 198 / 0.987, 0.87; HNSW32,SQ8 34 / 125 / 0.982, 0.75;
  HNSW16,Flat 136 / 320 / 0.981, 0.95; IVF2048_HNSW32,Flat 22 / 298 / 0.984 at nprobe 32, 0.68.
  (Build times here were taken under changing load; in the full suite at 100k, HNSW32,Flat and HNSW32,SQfp16 both
  built in ~115 s.) Half-precision storage loses no recall against float32, takes ~60% of the memory and searches
  a little faster; 8-bit storage costs recall at equal effort (at 1M, efSearch 192: 0.974 against 0.979).
- 1M vectors (build s / MB; recall@10 and CPU p50 / p99 ms by search effort):
  HNSW32,SQfp16 (default): 828 s / 992 MB; efSearch 128: 0.972, 0.58 / 0.91; 192: 0.979, 0.89 / 1.29;
  224: 0.982, 1.14 / 1.62; 256: 0.983, 1.30 / 1.96; 320: 0.987, 1.48 / 1.80.
  HNSW32,SQ8: 1018 s / 626 MB; efSearch 192: 0.974, 0.96 / 1.47 (0.980 with exact re-ranking of the top 20, at
  +1.5 GB for the float vectors).
  IVF4096_HNSW32,Flat (trained on 160k): 149 s / 1480 MB; nprobe 32: 0.942, 1.95 / 3.16; 96: 0.976, 4.27 / 6.06.
  HNSW32 at efConstruction 200 (the previous default) took 1471 s to build at 1M in the last full run.
  IVF is the cheapest to build and competitive up to ~200k, but at 1M it needs ~5x HNSW's time for less recall.
  So at 1M recall@10 0.98 costs 1.6-2 ms p99 on this machine: the 1 ms target is missed by ~1.7x. The misses
  are near-ties: at efSearch 192, a missed neighbour is a median 0.008 (90th percentile 0.023) cosine below the
  10th returned, where a query has a median 12 vectors within 0.01 of its 10th neighbour.
- The full index suite with these defaults (python -m benchmarks --full --suites index, 08:25-08:51 UTC): 1M
  vectors built in 675 s into 992 MB; efSearch 256: recall@10 0.984, p50 1.30 ms, p99 1.74 ms; efSearch 128:
  0.975, p99 0.95 ms. 100k: efSearch 128: 0.992, p50 0.48 ms, CPU p99 0.89 ms; built in 114 s.
- efSearch grows with the index: 128 up to ``HNSW_EF_SEARCH_LARGE_FROM`` vectors (recall@10 0.987 at 200k),
  256 beyond (0.983 at 1M); it is applied at build and at load, from the index's size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .errors import BundleError

EXACT_MAX = 10_000
ANN_FACTORY = "HNSW32,SQfp16"
HNSW_EF_CONSTRUCTION = 100
HNSW_EF_SEARCH = 128
HNSW_EF_SEARCH_LARGE = 256
HNSW_EF_SEARCH_LARGE_FROM = 300_000
# From this size: inverted lists over 4-bit product codes scanned with SIMD ("fast scan"), the best candidates
# re-ranked exactly against half-precision vectors (``large_factory``).
LARGE_FROM = 300_000
# For every IVF index (the large default, overrides such as "IVF4096_HNSW32,Flat"): lists searched per query, 1/32
# of the lists but at least IVF_NPROBE, and an HNSW coarse quantizer's effort (at least nprobe: it returns nprobe
# lists); k-means trains on at most this many vectors per list (FAISS's default, 256, took 15 minutes at 1M).
IVF_NPROBE = 32
IVF_NPROBE_SHARE = 32
IVF_QUANTIZER_EF_SEARCH = 64
IVF_TRAIN_PER_LIST = 64
# For every re-ranked index ("...,Refine(SQfp16)"): candidates re-ranked exactly, as a multiple of k.
REFINE_K_FACTOR = 80


def choose_factory(n_vectors: int, dim: int) -> str:
    """``Flat`` up to ``EXACT_MAX`` vectors, then ``ANN_FACTORY``, and from ``LARGE_FROM`` ``large_factory``."""
    if n_vectors <= EXACT_MAX:
        return "Flat"
    if n_vectors < LARGE_FROM or dim % 4:  # product codes of 4 dimensions each
        return ANN_FACTORY
    return large_factory(n_vectors, dim)


def large_factory(n_vectors: int, dim: int) -> str:
    """IVF over ~4 sqrt(n) lists (FAISS's rule of thumb), 4-bit PQ codes of 4 dimensions each, fp16 re-ranking."""
    nlist = 1 << max(6, round(float(np.log2(np.sqrt(n_vectors) * 4))))
    return f"IVF{nlist},PQ{dim // 4}x4fs,Refine(SQfp16)"


def default_nprobe(n_lists: int) -> int:
    """IVF lists searched per query: at 1M vectors in 4,096 lists, 128 lists (3% of the vectors) found 99.8% of an
    in-scope query's 10 nearest."""
    return max(IVF_NPROBE, n_lists // IVF_NPROBE_SHARE)


def default_ef_search(n_vectors: int) -> int:
    """The HNSW search effort for an index of this size (more vectors need more to keep recall@10 >= 0.98)."""
    return HNSW_EF_SEARCH if n_vectors < HNSW_EF_SEARCH_LARGE_FROM else HNSW_EF_SEARCH_LARGE


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

        dim = vectors.shape[1]
        factory = factory or choose_factory(len(vectors), dim)
        try:
            index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as e:
            raise BundleError(f"invalid FAISS index factory string '{factory}': {str(e).splitlines()[0]}") from e
        hnsw = _hnsw(index)
        if hnsw is not None:
            hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        ivf = _ivf(index)
        if ivf is not None:
            ivf.cp.max_points_per_centroid = IVF_TRAIN_PER_LIST
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

    def reset_search_params(self) -> None:
        """Back to the default search effort for this index's type and size (as applied at build and load)."""
        _apply_search_defaults(self._index)

    def set_k_factor(self, k_factor: int | None) -> None:
        """Candidates re-ranked exactly, as a multiple of k (more: higher recall, slower); ignored by unrefined
        index types."""
        refine = _refine(self._index)
        if refine is not None and k_factor is not None:
            refine.k_factor = float(k_factor)

    @property
    def search_params(self) -> dict[str, int]:
        """The search-time effort in force: ``ef_search``, ``nprobe``, ``k_factor``; empty for exact search."""
        out = {}
        hnsw, ivf, refine = _hnsw(self._index), _ivf(self._index), _refine(self._index)
        if hnsw is not None:
            out["ef_search"] = int(hnsw.efSearch)
        if ivf is not None:
            out["nprobe"] = int(ivf.nprobe)
        if refine is not None:
            out["k_factor"] = int(refine.k_factor)
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
    hnsw, ivf, refine = _hnsw(index), _ivf(index), _refine(index)
    if hnsw is not None:
        hnsw.efSearch = default_ef_search(int(index.ntotal))
    if ivf is not None:
        ivf.nprobe = default_nprobe(int(ivf.nlist))
        quantizer = _hnsw(ivf.quantizer)
        if quantizer is not None:
            quantizer.efSearch = max(IVF_QUANTIZER_EF_SEARCH, int(ivf.nprobe))
    if refine is not None:
        refine.k_factor = float(REFINE_K_FACTOR)


def _inner(index: Any) -> Any:
    """The index that does the approximate search, inside a re-ranking (``Refine``) wrapper if any."""
    import faiss

    index = faiss.downcast_index(index)
    return faiss.downcast_index(index.base_index) if isinstance(index, faiss.IndexRefine) else index


def _refine(index: Any) -> Any:
    import faiss

    index = faiss.downcast_index(index)
    return index if isinstance(index, faiss.IndexRefine) else None


def _hnsw(index: Any) -> Any:
    try:
        return _inner(index).hnsw
    except AttributeError:
        return None


def _ivf(index: Any) -> Any:
    import faiss

    try:
        return faiss.extract_index_ivf(_inner(index))
    except RuntimeError:
        return None


def set_threads(n: int) -> None:
    import faiss

    faiss.omp_set_num_threads(n)
