"""The index module: the size rule, search-time effort applied at build and at load, factory overrides."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from semroute.errors import BundleError
from semroute.index import (
    ANN_FACTORY,
    EXACT_MAX,
    HNSW_EF_SEARCH,
    HNSW_EF_SEARCH_LARGE,
    HNSW_EF_SEARCH_LARGE_FROM,
    IVF_NPROBE,
    LARGE_FROM,
    REFINE_K_FACTOR,
    VectorIndex,
    choose_factory,
    default_ef_search,
    default_nprobe,
    large_factory,
)

REFINED_IVF = "IVF16,PQ8x4fs,Refine(SQfp16)"


def _vectors(n: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, 32)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_exact_up_to_exact_max_then_hnsw_then_refined_ivf() -> None:
    assert choose_factory(1, 384) == choose_factory(EXACT_MAX, 384) == "Flat"
    assert choose_factory(EXACT_MAX + 1, 384) == choose_factory(LARGE_FROM - 1, 384) == ANN_FACTORY
    assert choose_factory(LARGE_FROM, 384) == large_factory(LARGE_FROM, 384) == "IVF2048,PQ96x4fs,Refine(SQfp16)"
    assert choose_factory(1_000_000, 384) == "IVF4096,PQ96x4fs,Refine(SQfp16)"
    assert choose_factory(1_000_000, 768) == "IVF4096,PQ192x4fs,Refine(SQfp16)"
    assert choose_factory(1_000_000, 390) == ANN_FACTORY  # product codes need a dimension divisible by 4


def test_search_effort_grows_with_the_index() -> None:
    assert default_ef_search(EXACT_MAX + 1) == HNSW_EF_SEARCH
    assert default_ef_search(HNSW_EF_SEARCH_LARGE_FROM) == HNSW_EF_SEARCH_LARGE > HNSW_EF_SEARCH
    assert default_nprobe(16) == default_nprobe(1024) == IVF_NPROBE
    assert default_nprobe(4096) == 128


@pytest.mark.parametrize(
    ("factory", "params"),
    [
        ("Flat", {}),
        (ANN_FACTORY, {"ef_search": HNSW_EF_SEARCH}),
        ("IVF16_HNSW8,Flat", {"nprobe": IVF_NPROBE}),
        (REFINED_IVF, {"nprobe": IVF_NPROBE, "k_factor": REFINE_K_FACTOR}),
    ],
)
def test_search_effort_applied_at_build_and_at_load(factory: str, params: dict[str, int], tmp_path: Path) -> None:
    x = _vectors(2000)
    idx = VectorIndex.build(x, factory)
    assert idx.search_params == params
    idx.set_ef_search(7)
    idx.set_nprobe(1)
    idx.set_k_factor(1)
    idx.save(tmp_path / "index.faiss")  # saved with a lower effort, as a bundle built by an older version might be
    loaded = VectorIndex.load(tmp_path / "index.faiss", factory)
    assert loaded.search_params == params
    assert loaded.ntotal == 2000 and loaded.dim == 32
    exact = VectorIndex.build(x, "Flat").search(x[:100], 10).ids
    got = loaded.search(x[:100], 10).ids
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact.tolist(), got.tolist(), strict=True)])
    assert recall >= 0.9


def test_k_larger_than_the_index() -> None:
    hits = VectorIndex.build(_vectors(5)).search(_vectors(2, seed=1), 10)
    assert hits.ids.shape == (2, 5) and np.all(hits.ids >= 0)


def test_invalid_factory_is_a_bundle_error() -> None:
    with pytest.raises(BundleError, match="index factory"):
        VectorIndex.build(_vectors(10), "NotAnIndex99")


@pytest.mark.parametrize("factory", [ANN_FACTORY, "IVF64,PQ8x4fs,Refine(SQfp16)"])
def test_batch_invariance(factory: str) -> None:
    # The server batches concurrent requests: a query must get the same neighbours alone or in a batch.
    idx = VectorIndex.build(_vectors(4000), factory)
    q = _vectors(64, seed=2)
    batch = idx.search(q, 10)
    for i in range(len(q)):
        alone = idx.search(q[i : i + 1], 10)
        assert alone.ids[0].tolist() == batch.ids[i].tolist()
        assert alone.similarities[0].tolist() == batch.similarities[i].tolist()


def test_refined_ivf_recall_and_exact_similarities() -> None:
    # The re-ranking makes the returned similarities exact up to fp16 storage, whatever the 4-bit codes said.
    # Vectors shaped like sentence embeddings (intents, paraphrase groups, 10% out-of-scope queries): on
    # structureless random vectors inverted lists would need to search most lists.
    from benchmarks.index_scale import synthetic

    x, q = synthetic(6000, 100, seed=3)
    idx = VectorIndex.build(x, "IVF256,PQ96x4fs,Refine(SQfp16)")
    got = idx.search(q, 10)
    exact = VectorIndex.build(x, "Flat").search(q, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact.ids.tolist(), got.ids.tolist(), strict=True)])
    assert recall >= 0.95
    np.testing.assert_allclose(got.similarities, np.einsum("qd,qkd->qk", q, x[got.ids]), atol=2e-3)
