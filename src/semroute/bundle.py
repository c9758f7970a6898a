"""Index bundles: write (atomically) and load (checked).

A bundle is a self-contained directory, built once and never edited in place:

    bundle/
      manifest.json     format, version, encoder fingerprint, route-file hashes, settings, counts, file hashes,
                        calibration (if any), parent version
      encoder/          model.onnx, tokenizer.json, encoder.json
      index.faiss       utterance embeddings (row i = routes.json "utterances"[i])
      embeddings.npy    the same vectors, so rebuilds and calibration never re-embed unchanged utterances
      routes.json       fallback, models, defaults, routes (thresholds), utterances -> route
      head.npz          the learned scorer's weights (scorer: logistic)
      confidence.json   the confidence model fitted by calibrate (when it fitted one)

    >>> b = load_bundle("bundle/")
    >>> b.version, b.manifest["counts"]
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from . import __version__
from ._bundle_schema import check_embeddings, check_head, check_manifest, check_routes
from ._fs import replace_dir, temp_dir_beside
from .confidence import ConfidenceModel
from .encoder import META_FILE, MODEL_FILE, TOKENIZER_FILE, Encoder, file_sha256, fingerprint_dir
from .errors import BundleError, RequestError
from .heads import LogisticHead, fit_head
from .index import VectorIndex, choose_factory
from .policy.compile import policy_doc
from .policy.schema import PolicySpec
from .policy.types import Candidate
from .routes import Defaults, ModelSpec, RouteSet
from .scoring import RouteTable
from .signing import SIGNATURE_FILE

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ROUTES = "routes.json"
INDEX = "index.faiss"
EMBEDDINGS = "embeddings.npy"
HEAD = "head.npz"
CONFIDENCE = "confidence.json"
ENCODER_DIR = "encoder"
_HASHED = (ROUTES, INDEX, EMBEDDINGS)


@dataclass(frozen=True)
class Bundle:
    """A loaded, checked bundle (everything but the encoder session, which the caller creates)."""

    path: Path
    manifest: dict[str, Any]
    routes: dict[str, Any]
    index: VectorIndex
    embeddings: npt.NDArray[np.float32]
    table: RouteTable
    defaults: Defaults
    models: dict[str, ModelSpec]
    head: LogisticHead | None = None
    confidence: ConfidenceModel | None = None
    policy: PolicySpec | None = None  # None: the route files declare no policy

    def route_candidates(self) -> dict[str, tuple[Candidate, ...]]:
        """Each route's candidate models (a bundle built before candidates existed: its one model)."""
        return {r["name"]: _candidates(r.get("candidates"), r["model"]) for r in self.routes["routes"]}

    def fallback_candidates(self) -> tuple[Candidate, ...]:
        return _candidates(self.routes.get("fallback_candidates"), self.routes["fallback_model"])


    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def encoder_dir(self) -> Path:
        return self.path / ENCODER_DIR


def _candidates(listed: list[dict[str, Any]] | None, model: str) -> tuple[Candidate, ...]:
    if not listed:
        return (Candidate(model),)
    return tuple(Candidate(c["model"], c.get("quality")) for c in listed)


def _utterance_rows(rs: RouteSet) -> list[dict[str, Any]]:
    rows = []
    for r in rs.routes:
        rows += [{"text": u, "route": r.name, "negative": False} for u in r.utterances]
        rows += [{"text": u, "route": r.name, "negative": True} for u in r.negative_utterances]
    # out-of-scope examples belong to no route ("route": null); they veto and train the head's "none" class
    rows += [{"text": u, "route": None, "negative": True} for u in rs.fallback_utterances]
    return rows


def _text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _previous_vectors(out: Path, fingerprint: str) -> dict[str, npt.NDArray[np.float32]]:
    """Vectors of an existing bundle at ``out`` built with the same encoder, keyed by text hash."""
    try:
        manifest = json.loads((out / MANIFEST).read_text())
        if manifest.get("encoder", {}).get("fingerprint") != fingerprint:
            return {}
        rows = json.loads((out / ROUTES).read_text())["utterances"]
        vecs = np.load(out / EMBEDDINGS)
        if len(vecs) != len(rows):
            return {}
    except (OSError, ValueError, KeyError):
        return {}
    return {_text_key(r["text"]): vecs[i] for i, r in enumerate(rows)}


def build_bundle(
    routeset: RouteSet,
    encoder: Encoder,
    encoder_dir: Path,
    out: str | Path,
    *,
    factory: str | None = None,
    batch_size: int = 64,
    progress: Callable[[int], None] | None = None,
    reuse: Path | None = None,
    calibration: dict[str, Any] | None = None,
    parent: str | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Embed the route set and write a bundle to ``out`` atomically. Returns (path, stats).

    Utterances already embedded in the bundle at ``reuse`` (default: ``out``) with the same encoder are not
    embedded again. ``progress`` is called with the number of texts just embedded.
    """
    out = Path(out)
    rows = _utterance_rows(routeset)
    cache = _previous_vectors(reuse or out, encoder.fingerprint)
    vectors = np.zeros((len(rows), encoder.dim), dtype=np.float32)
    todo = []
    for i, r in enumerate(rows):
        v = cache.get(_text_key(r["text"]))
        if v is not None:
            vectors[i] = v
        else:
            todo.append(i)
    t0 = time.perf_counter()
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        vectors[chunk] = encoder.encode([rows[i]["text"] for i in chunk]).vectors
        if progress:
            progress(len(chunk))
    embed_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    factory = factory or choose_factory(len(rows), vectors.shape[1])
    index = VectorIndex.build(vectors, factory)
    index_s = time.perf_counter() - t1
    head = None
    if routeset.defaults.scorer == "logistic":
        names = {r.name: i for i, r in enumerate(routeset.routes)}
        labels = np.array([-1 if r["negative"] else names[r["route"]] for r in rows], dtype=np.int64)
        head = fit_head(vectors, labels, len(routeset.routes), l2=routeset.defaults.head_l2)

    routes_doc: dict[str, Any] = {
        "fallback_model": routeset.fallback_model,
        "fallback_candidates": [{"model": c.model, "quality": c.quality} for c in routeset.fallback_candidates],
        "models": {k: v.model_dump() for k, v in routeset.models.items()},
        "policy": policy_doc(routeset.policy) if routeset.policy is not None else None,
        "defaults": routeset.defaults.model_dump(),
        "routes": [
            {
                "name": r.name,
                "model": r.model,
                "threshold": r.threshold,
                "description": r.description,
                "tier": r.tier,
                "metadata": r.metadata,
                "n_utterances": len(r.utterances),
                "n_negative": len(r.negative_utterances),
                "candidates": [{"model": c.model, "quality": c.quality} for c in r.candidates],
            }
            for r in routeset.routes
        ],
        "utterances": rows,
    }
    if routeset.feedback is not None:  # runtime settings (semroute.runtime); absent when a route set has none
        routes_doc["feedback"] = routeset.feedback.model_dump()
    if calibration is not None:
        thresholds = calibration.get("thresholds", {})
        for r in routes_doc["routes"]:
            if r["name"] in thresholds:
                r["threshold"] = float(thresholds[r["name"]])

    tmp = temp_dir_beside(out)
    try:
        shutil.copytree(encoder_dir, tmp / ENCODER_DIR, ignore=shutil.ignore_patterns("model_fp32.onnx"))
        (tmp / ROUTES).write_text(json.dumps(routes_doc, indent=1, ensure_ascii=False) + "\n")
        index.save(tmp / INDEX)
        np.save(tmp / EMBEDDINGS, vectors)
        if head is not None:
            head.save(str(tmp / HEAD))
        content = hashlib.sha256()
        content.update(encoder.fingerprint.encode())
        files = {}
        for name in (*_HASHED, *([HEAD] if head is not None else [])):
            files[name] = file_sha256(tmp / name)
            content.update(files[name].encode())
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        manifest = {
            "format": FORMAT_VERSION,
            "version": f"{stamp}-{content.hexdigest()[:10]}",
            "semroute_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "encoder": {
                "fingerprint": encoder.fingerprint,
                "name": encoder.info.get("name"),
                "dim": encoder.dim,
                "max_tokens": encoder.max_tokens,
                "quantization": encoder.info.get("quantization"),
            },
            "route_files": routeset.sources,
            "settings": {**routeset.defaults.model_dump(), "index_factory": factory},
            "counts": {
                "routes": len(routeset.routes),
                "utterances": sum(not r["negative"] for r in rows),
                "negative_utterances": sum(bool(r["negative"]) and r["route"] is not None for r in rows),
                "fallback_utterances": sum(r["route"] is None for r in rows),
                "vectors": len(rows),
                "embedded": len(todo),
                "reused": len(rows) - len(todo),
            },
            "files": files,
            "calibration": calibration,
            "parent": parent,
            "python": sys.version.split()[0],
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    stats = {"embedded": len(todo), "reused": len(rows) - len(todo), "embed_s": embed_s, "index_s": index_s}
    return out, stats


def load_bundle(path: str | Path, *, verify_hashes: bool = True) -> Bundle:
    """Load and check a bundle. Raises BundleError saying what is wrong and what to do: every malformed file
    (truncated, flipped bytes, JSON of the wrong shape) is one of these, never another exception."""
    path = Path(path)
    if not path.is_dir():
        raise BundleError(
            f"{path}: no such bundle directory; build one with 'semroute build-index ROUTES --out {path}'"
        )
    try:
        manifest = json.loads((path / MANIFEST).read_bytes())
    except FileNotFoundError:
        raise BundleError(f"{path}: not a bundle (no {MANIFEST}); rebuild it with 'semroute build-index'") from None
    except (OSError, ValueError) as e:  # ValueError: bad JSON or bad UTF-8
        raise BundleError(f"{path / MANIFEST}: corrupt manifest ({_one_line(e)}); rebuild the bundle") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{path / MANIFEST}: corrupt manifest (a JSON {type(manifest).__name__}, not an object); "
                          "rebuild the bundle")
    if manifest.get("format") != FORMAT_VERSION:
        raise BundleError(
            f"{path}: bundle format {manifest.get('format')!r} is not supported by semroute {__version__} "
            f"(expects {FORMAT_VERSION}); rebuild it with this version's 'semroute build-index'"
        )
    m = check_manifest(path / MANIFEST, manifest)
    for name in (*_HASHED, MANIFEST):
        if not (path / name).is_file():
            raise BundleError(f"{path}: bundle is incomplete ({name} missing); rebuild it")
    for name in (MODEL_FILE, TOKENIZER_FILE, META_FILE):
        if not (path / ENCODER_DIR / name).is_file():
            raise BundleError(f"{path}: bundle encoder is incomplete ({ENCODER_DIR}/{name} missing); rebuild it")
    expected_fp = m.encoder.fingerprint
    actual_fp = _guarded(path, ENCODER_DIR, lambda p: fingerprint_dir(p))
    if expected_fp != actual_fp:
        raise BundleError(
            f"{path}: encoder fingerprint mismatch (manifest {str(expected_fp)[:12]}, files {actual_fp[:12]}): "
            "the encoder was changed after the bundle was built; rebuild the bundle"
        )
    if verify_hashes:
        for name, digest in m.files.items():
            if not (path / name).is_file():
                raise BundleError(f"{path}: bundle is incomplete ({name} missing); rebuild it")
            if _guarded(path, name, file_sha256) != digest:
                raise BundleError(f"{path}: {name} does not match its hash in the manifest (corrupt); rebuild it")
    dim = m.encoder.dim
    routes = _guarded(path, ROUTES, lambda p: json.loads(p.read_bytes()))
    check_routes(path / ROUTES, routes)
    rows = routes["utterances"]
    vectors = _guarded(path, EMBEDDINGS, _load_npy)
    embeddings = check_embeddings(path / EMBEDDINGS, vectors, len(rows), dim)
    factory = m.settings.get("index_factory", "?")
    index = _guarded(path, INDEX, lambda p: VectorIndex.load(p, str(factory)))
    if index.ntotal != len(rows):
        raise BundleError(
            f"{path}: index holds {index.ntotal} vectors but the route table {len(rows)} utterances; rebuild it"
        )
    if index.dim != dim:
        raise BundleError(f"{path}: index dimension {index.dim} != encoder dimension {dim}; rebuild it")
    head = None
    if HEAD in m.files:
        head = _guarded(path, HEAD, lambda p: LogisticHead.load(str(p)))
        check_head(path / HEAD, head.weights, head.bias, len(routes["routes"]), dim)
        if head.n_routes != len(routes["routes"]):
            raise BundleError(f"{path / HEAD}: the head has {head.n_routes} routes, the route table "
                              f"{len(routes['routes'])}; rebuild the bundle")
    confidence = None
    if CONFIDENCE in m.files:
        try:
            confidence = ConfidenceModel.from_dict(json.loads((path / CONFIDENCE).read_bytes()))
        except Exception as e:
            raise BundleError(f"{path}: cannot read {CONFIDENCE} ({_one_line(e)}); calibrate or rebuild the "
                              "bundle") from None
    try:
        defaults = Defaults.model_validate(routes["defaults"])
        models = {k: ModelSpec.model_validate(v) for k, v in routes["models"].items()}
        policy = PolicySpec.model_validate(routes["policy"]) if routes.get("policy") is not None else None
    except Exception as e:  # pydantic.ValidationError; a bundle is machine-written, so this is corruption
        raise BundleError(f"{path}: invalid route table ({_one_line(e)}); rebuild it") from None
    return Bundle(
        path=path,
        manifest=manifest,
        routes=routes,
        index=index,
        embeddings=embeddings,
        table=make_table(routes),
        defaults=defaults,
        models=models,
        head=head,
        confidence=confidence,
        policy=policy,
    )


T = TypeVar("T")


def _guarded(path: Path, name: str, read: Callable[[Path], T]) -> T:
    """``read(path / name)``, with any failure (OSError, bad JSON, BadZipFile, a FAISS RuntimeError, ...) turned
    into a one-line BundleError naming the file."""
    try:
        return read(path / name)
    except BundleError:
        raise
    except Exception as e:
        raise BundleError(f"{path / name}: unreadable ({_one_line(e)}); rebuild the bundle") from None


def _load_npy(path: Path) -> Any:
    with path.open("rb") as f:  # our own handle, closed whatever np.load makes of the bytes
        return np.load(f, allow_pickle=False)


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


def make_table(routes: dict[str, Any], thresholds: dict[str, float] | None = None) -> RouteTable:
    names = [r["name"] for r in routes["routes"]]
    pos = {n: i for i, n in enumerate(names)}
    th = thresholds or {}
    return RouteTable(
        names=names,
        models=[r["model"] for r in routes["routes"]],
        thresholds=np.array([th.get(r["name"], r["threshold"]) for r in routes["routes"]], dtype=np.float64),
        row_route=np.array([pos.get(u["route"], -1) for u in routes["utterances"]], dtype=np.int64),  # -1: fallback
        row_negative=np.array([u["negative"] for u in routes["utterances"]], dtype=bool),
        row_text=[u["text"] for u in routes["utterances"]],
        fallback_model=routes["fallback_model"],
        n_positive=np.array([r["n_utterances"] for r in routes["routes"]], dtype=np.int64),
    )


def check_out_dir(out: Path, *, force: bool) -> None:
    """Refuse to replace an existing directory unless asked to, and even then only a bundle (or an empty
    directory): ``calibrate --out`` pointed at the wrong path must not wipe it. Checked before any work."""
    if not out.exists():
        return
    if not out.is_dir():
        raise RequestError("--out", f"{out} exists and is not a directory; choose a new directory")
    if not force:
        raise RequestError("--out", f"{out} already exists; choose a new directory, or pass --force to replace it")
    if (out / MANIFEST).is_file() or not any(out.iterdir()):
        return
    raise RequestError("--out", f"{out} is a non-empty directory that is not a bundle; --force replaces only a "
                       "bundle: choose a new directory")


def write_derived_manifest(tmp: Path, source: Bundle, names: Sequence[str], **record: Any) -> None:
    """Seal a new bundle version being written in ``tmp`` from ``source``: hash ``names`` (every file the new
    version holds), stamp a version from those hashes, and record ``record`` (what made it) and ``parent``.

    A signature copied over from the source is removed: it vouched for the source's bytes and version, not these.
    The new version is unsigned until ``semroute sign`` signs it (see ``resign_note``)."""
    (tmp / SIGNATURE_FILE).unlink(missing_ok=True)
    manifest = dict(source.manifest)
    content = hashlib.sha256(manifest["encoder"]["fingerprint"].encode())
    files = {}
    for name in names:
        files[name] = file_sha256(tmp / name)
        content.update(files[name].encode())
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    manifest.update(
        version=f"{stamp}-{content.hexdigest()[:10]}",
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        files=files,
        parent=source.version,
        **record,
    )
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def resign_note(src: str | Path, out: str | Path) -> str:
    """What a command that derived ``out`` from ``src`` tells the operator when ``src`` was signed ('' if not)."""
    if not (Path(src) / SIGNATURE_FILE).is_file():
        return ""
    return (f"; {src} was signed, {out} is a new version and is not: sign it with 'semroute sign {out} --key KEY' "
            "before serving it with --trusted-key")


def derive_bundle(
    src: str | Path,
    out: str | Path,
    *,
    thresholds: dict[str, float],
    calibration: dict[str, Any],
    confidence: ConfidenceModel | None = None,
) -> Bundle:
    """Write a new bundle version at ``out``: ``src`` with new thresholds (and the confidence model they apply to,
    if any) and the calibration recorded in its manifest (``parent`` = the source version). ``src`` is never
    modified; the write is atomic. A source's confidence model is dropped when none is given: the new thresholds
    were fitted on raw scores."""
    src, out = Path(src), Path(out)
    if src.resolve() == out.resolve():
        raise BundleError(f"{out}: calibration writes a new bundle; choose an --out other than the source")
    source = load_bundle(src)
    tmp = temp_dir_beside(out)
    try:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
        routes = json.loads((tmp / ROUTES).read_text())
        for r in routes["routes"]:
            if r["name"] in thresholds:
                r["threshold"] = float(thresholds[r["name"]])
        (tmp / ROUTES).write_text(json.dumps(routes, indent=1, ensure_ascii=False) + "\n")
        names = [n for n in source.manifest["files"] if n != CONFIDENCE]
        (tmp / CONFIDENCE).unlink(missing_ok=True)
        if confidence is not None:
            (tmp / CONFIDENCE).write_text(json.dumps(confidence.to_dict(), indent=1) + "\n")
            names.append(CONFIDENCE)
        write_derived_manifest(tmp, source, names, calibration=calibration)
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return load_bundle(out)
