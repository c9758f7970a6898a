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
    VectorIndex,
    choose_factory,
    default_ef_search,
)


def _vectors(n: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, 32)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_exact_up_to_exact_max_then_ann() -> None:
    assert choose_factory(1) == choose_factory(EXACT_MAX) == "Flat"
    assert choose_factory(EXACT_MAX + 1) == ANN_FACTORY


def test_search_effort_grows_with_the_index() -> None:
    assert default_ef_search(EXACT_MAX + 1) == HNSW_EF_SEARCH
    assert default_ef_search(HNSW_EF_SEARCH_LARGE_FROM) == HNSW_EF_SEARCH_LARGE > HNSW_EF_SEARCH


@pytest.mark.parametrize(
    ("factory", "params"),
    [("Flat", {}), (ANN_FACTORY, {"ef_search": HNSW_EF_SEARCH}), ("IVF16_HNSW8,Flat", {"nprobe": IVF_NPROBE})],
)
def test_search_effort_applied_at_build_and_at_load(factory: str, params: dict[str, int], tmp_path: Path) -> None:
    x = _vectors(2000)
    idx = VectorIndex.build(x, factory)
    assert idx.search_params == params
    idx.set_ef_search(7)
    idx.set_nprobe(1)
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
