"""The shapes of a bundle's files, checked at load so that a malformed bundle is a BundleError with a one-line
reason (exit 3 at start, a refused reload while serving), never a KeyError or TypeError from deep inside.

Bundles are machine-written, so these checks are about corruption and hand edits, not about helping an author:
unknown keys are allowed (a newer semroute may add some), wrong types and missing keys are not.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Annotated, Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import BundleError


class _Loose(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class EncoderEntry(_Loose):
    fingerprint: Annotated[str, Field(min_length=1)]
    dim: Annotated[int, Field(ge=1, le=65_536)]
    max_tokens: Annotated[int, Field(ge=1)]


class ManifestModel(_Loose):
    format: int
    version: Annotated[str, Field(min_length=1)]
    encoder: EncoderEntry
    files: dict[str, str]
    settings: dict[str, Any] = Field(default_factory=dict)


class CandidateEntry(_Loose):
    model: str
    quality: Annotated[float, Field(allow_inf_nan=False, strict=False)] | None = None


class RouteEntry(_Loose):
    name: str
    model: str
    threshold: Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False, strict=False)]
    n_utterances: Annotated[int, Field(ge=0)]
    n_negative: Annotated[int, Field(ge=0)] = 0
    description: str | None = None
    tier: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    candidates: list[CandidateEntry] | None = None


class RoutesHeader(_Loose):
    fallback_model: str
    fallback_candidates: list[CandidateEntry] | None = None
    models: dict[str, dict[str, Any]]
    defaults: dict[str, Any]
    routes: Annotated[list[RouteEntry], Field(min_length=1)]
    utterances: Annotated[list[Any], Field(min_length=1)]  # rows are checked by hand: there may be a million


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "(top level)"
    return f"{where}: {err['msg']}"


def check_manifest(path: Any, data: Any) -> ManifestModel:
    try:
        m = ManifestModel.model_validate(data)
    except ValidationError as e:
        raise BundleError(f"{path}: malformed manifest ({_first_error(e)}); rebuild the bundle") from None
    for name in m.files:
        p = PurePosixPath(name)
        if not name or p.is_absolute() or ".." in p.parts:
            raise BundleError(f"{path}: malformed manifest (files: {name!r} is not a path inside the bundle); "
                              "rebuild the bundle")
    return m


def check_routes(path: Any, data: Any) -> None:
    """routes.json: the header by schema, the utterance rows by hand, and that they refer to known routes."""
    try:
        doc = RoutesHeader.model_validate(data)
    except ValidationError as e:
        raise BundleError(f"{path}: malformed route table ({_first_error(e)}); rebuild the bundle") from None
    names = [r.name for r in doc.routes]
    known = set(names)
    if len(known) != len(names):
        raise BundleError(f"{path}: malformed route table (a route name appears twice); rebuild the bundle")
    for i, u in enumerate(doc.utterances):
        if not (isinstance(u, dict) and isinstance(u.get("text"), str) and isinstance(u.get("negative"), bool)
                and "route" in u and (u["route"] is None or (isinstance(u["route"], str) and u["route"] in known))):
            raise BundleError(f"{path}: malformed route table (utterances[{i}] is not "
                              "{{text, route: a route name or null, negative: true/false}}); rebuild the bundle")


def check_embeddings(path: Any, vectors: Any, n_rows: int, dim: int) -> npt.NDArray[np.float32]:
    if not (isinstance(vectors, np.ndarray) and vectors.dtype == np.float32 and vectors.shape == (n_rows, dim)):
        shape = getattr(vectors, "shape", None)
        raise BundleError(f"{path}: embeddings have shape {shape} and type {getattr(vectors, 'dtype', None)}; "
                          f"expected ({n_rows}, {dim}) float32; rebuild the bundle")
    return vectors


def check_head(path: Any, weights: Any, bias: Any, n_routes: int, dim: int) -> None:
    ok = (
        isinstance(weights, np.ndarray) and isinstance(bias, np.ndarray)
        and weights.dtype == np.float32 and bias.dtype == np.float32 and weights.ndim == 2
        and weights.shape[0] == dim and weights.shape[1] in (n_routes, n_routes + 1)
        and bias.shape == (weights.shape[1],)
        and bool(np.isfinite(weights).all()) and bool(np.isfinite(bias).all())
    )
    if not ok:
        raise BundleError(f"{path}: the learned head's arrays do not fit this bundle ({dim}-d vectors, "
                          f"{n_routes} routes) or are not finite; rebuild the bundle")

