"""Every malformed bundle file is a BundleError with a one-line reason, never another exception.

Each file of a real bundle (real encoder, real FAISS) is mutated: truncated, bytes flipped, garbage appended, JSON
replaced by values of the wrong shape, arrays of the wrong shape or empty. A mutation is tried twice where the
manifest guards the file: as is (the hash or fingerprint check must catch it) and with the manifest updated to
match (as a hand edit or a buggy writer would leave it), so the parsers behind the check are reached too. Loading
goes through Router.checked, the same path serving takes, so a bundle that parses but cannot route fails here.
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from semroute.bundle import build_bundle, load_bundle
from semroute.encoder import OnnxEncoder, file_sha256, fingerprint_dir
from semroute.errors import BundleError, SemrouteError, exit_code
from semroute.router import Router
from semroute.routes import load_routes

ROUTES = """\
version: 1
fallback: {model: big, utterances: [what is the meaning of life]}
models:
  small: {cost_per_1k_input: 0.1}
  big: {cost_per_1k_input: 1}
routes:
  - name: billing
    model: small
    utterances: [I was charged twice this month, how do I get a refund, my invoice is wrong]
    negative_utterances: [what is the history of paper money]
  - name: coding
    model: big
    utterances: [write a python function to reverse a list, fix this segfault in my C code, explain this regex]
"""
HASHED = ("routes.json", "index.faiss", "embeddings.npy", "head.npz")
ENCODER = ("encoder/encoder.json", "encoder/tokenizer.json", "encoder/model.onnx")
WRONG = [[], {}, "x", None, -1, 1e308]

Mutation = tuple[str, str, Callable[[bytes], bytes]]


@pytest.fixture(scope="module")
def enc(encoder_dir: Path) -> OnnxEncoder:
    return OnnxEncoder(encoder_dir, threads=1)


@pytest.fixture(scope="module")
def good(enc: OnnxEncoder, encoder_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("fuzz")
    (d / "routes.yaml").write_text(ROUTES)
    out, _ = build_bundle(load_routes([d / "routes.yaml"]), enc, encoder_dir, d / "bundle")
    return out


def _flip(seed: int, n: int) -> Callable[[bytes], bytes]:
    def f(data: bytes) -> bytes:
        rng = random.Random(seed)
        b = bytearray(data)
        for _ in range(n):
            i = rng.randrange(len(b))
            b[i] ^= rng.randrange(1, 256)
        return bytes(b)
    return f


BYTE_MUTATIONS: list[tuple[str, Callable[[bytes], bytes]]] = [
    ("empty", lambda b: b""),
    ("half", lambda b: b[: len(b) // 2]),
    ("one_byte_short", lambda b: b[:-1]),
    ("head_only", lambda b: b[:64]),
    ("flip_first", lambda b: bytes([b[0] ^ 0xFF]) + b[1:]),
    ("flip_3", _flip(1, 3)),
    ("flip_40", _flip(2, 40)),
    ("garbage_tail", lambda b: b + os.urandom(0) + b"\x00\xffgarbage" * 8),
]


def _json_mutations(doc: Any, prefix: str = "", depth: int = 2) -> Iterator[tuple[str, Any]]:
    """The document with one value replaced by each wrong value, or deleted, at every key to ``depth`` (lists:
    emptied and their first element replaced)."""
    for w in WRONG:
        if not prefix:
            yield f"top={json.dumps(w)}", w
    if isinstance(doc, dict):
        for k in list(doc):
            rest = {x: v for x, v in doc.items() if x != k}
            yield f"{prefix}{k}:deleted", rest
            for w in WRONG:
                yield f"{prefix}{k}={json.dumps(w)}", {**doc, k: w}
            if isinstance(doc[k], (dict, list)) and prefix.count(".") < depth - 1:
                for name, sub in _json_mutations(doc[k], f"{prefix}{k}.", depth):
                    yield name, {**doc, k: sub}
    elif isinstance(doc, list) and doc:
        yield f"{prefix}[]", []
        for w in WRONG:
            yield f"{prefix}[0]={json.dumps(w)}", [w, *doc[1:]]
        if isinstance(doc[0], dict):
            for k in doc[0]:
                yield f"{prefix}[0].{k}:deleted", [{x: v for x, v in doc[0].items() if x != k}, *doc[1:]]
                for w in WRONG[:4]:
                    yield f"{prefix}[0].{k}={json.dumps(w)}", [{**doc[0], k: w}, *doc[1:]]


def _npy(a: np.ndarray[Any, Any]) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def _npz(**arrays: Any) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _array_mutations(good: Path) -> Iterator[tuple[str, str, bytes]]:
    e = np.load(good / "embeddings.npy")
    for name, a in [("rows_short", e[:-1]), ("dim_short", e[:, :-1]), ("float64", e.astype(np.float64)),
                    ("flat", e.ravel()), ("empty", e[:0]), ("scalar", np.float32(1.0)), ("ints", e.astype(np.int64))]:
        yield "embeddings.npy", name, _npy(a)
    with np.load(good / "head.npz") as h:
        w, b, n = h["weights"], h["bias"], h["n_routes"]
    for name, arrays in [
        ("no_bias", {"weights": w, "n_routes": n}),
        ("weights_T", {"weights": w.T, "bias": b, "n_routes": n}),
        ("bias_short", {"weights": w, "bias": b[:-1], "n_routes": n}),
        ("nan", {"weights": np.full_like(w, np.nan), "bias": b, "n_routes": n}),
        ("n_routes_5", {"weights": w, "bias": b, "n_routes": np.array(5)}),
        ("n_routes_str", {"weights": w, "bias": b, "n_routes": np.array("two")}),
        ("empty", {"weights": w[:, :0], "bias": b[:0], "n_routes": np.array(0)}),
        ("float64", {"weights": w.astype(np.float64), "bias": b, "n_routes": n}),
    ]:
        yield "head.npz", name, _npz(**arrays)


def _cases(good: Path) -> Iterator[tuple[str, str, bytes, bool]]:
    """(file, mutation, new bytes, reseal): reseal updates the manifest's hash or fingerprint to match."""
    files = ("manifest.json", *HASHED, *ENCODER)
    for name in files:
        data = (good / name).read_bytes()
        for mname, fn in BYTE_MUTATIONS:
            if name == "encoder/model.onnx" and mname.startswith("flip"):
                continue  # flipped weights are a valid model that embeds differently: not malformed
            yield name, mname, fn(data), False
            if name not in ("manifest.json", "encoder/encoder.json"):
                yield name, mname, fn(data), True
    for name, depth in (("manifest.json", 2), ("routes.json", 2), ("encoder/encoder.json", 1)):
        # encoder.json is not hashed (the fingerprint covers the model and tokenizer), so no reseal; each of its
        # cases builds an encoder session, so only its top level is mutated
        doc = json.loads((good / name).read_text())
        if name == "encoder/encoder.json":  # the rest of it is provenance nothing reads
            doc = {k: v for k, v in doc.items() if k in ("dim", "max_tokens", "pad_id", "pad_token")}
        for mname, new in _json_mutations(doc, depth=depth):
            yield name, mname, json.dumps(new).encode(), name == "routes.json"
    for name, mname, data in _array_mutations(good):
        yield name, mname, data, True


def _reseal(bundle: Path, name: str) -> None:
    m = json.loads((bundle / "manifest.json").read_text())
    if name.startswith("encoder/"):
        m["encoder"]["fingerprint"] = fingerprint_dir(bundle / "encoder")
    elif name in m["files"]:
        m["files"][name] = file_sha256(bundle / name)
    _replace(bundle / "manifest.json", (json.dumps(m, indent=2) + "\n").encode())


def _replace(path: Path, data: bytes) -> None:
    path.unlink()  # the copy's files are hard links to the good bundle's: never write through them
    path.write_bytes(data)


def test_every_mutation_is_refused_cleanly_or_routes(good: Path, enc: OnnxEncoder, tmp_path: Path) -> None:
    cases = list(_cases(good))
    refused: list[str] = []
    loaded: list[str] = []
    for i, (name, mname, data, reseal) in enumerate(cases):
        case = tmp_path / f"c{i}"
        shutil.copytree(good, case, copy_function=os.link)
        _replace(case / name, data)
        if reseal:
            _reseal(case, name)
        label = f"{name} {mname}{' resealed' if reseal else ''}"
        try:
            # encoder files mutated: a session of its own; otherwise the shared one, through the same checks
            router = Router.load(case) if name.startswith("encoder/") else Router.checked(load_bundle(case), enc)
        except BundleError as e:
            msg = str(e)
            assert "\n" not in msg and len(msg) < 600, (label, msg)
            assert exit_code(e) == 3
            refused.append(label)
        except SemrouteError as e:  # pragma: no cover - the assertion below reports it
            pytest.fail(f"{label}: {type(e).__name__} instead of BundleError: {e}")
        except Exception as e:  # pragma: no cover
            pytest.fail(f"{label}: {type(e).__name__}: {e}")
        else:
            # a mutation the bundle survives (say a description turned to null) must still route
            assert router.route("how do I get a refund").model, label
            loaded.append(label)
        finally:
            shutil.rmtree(case)
    assert len(cases) > 400
    # the byte mutations of guarded files without resealing are all caught by the hash/fingerprint checks (the
    # manifest and encoder.json are not hashed: one byte short only drops their final newline)
    for name in (*HASHED, "encoder/tokenizer.json", "encoder/model.onnx"):
        for mname, _ in BYTE_MUTATIONS:
            if name == "encoder/model.onnx" and mname.startswith("flip"):
                continue
            assert f"{name} {mname}" in refused, f"{name} {mname} was accepted"
    # the shapes the issue names, and empty arrays, are refused whatever the hashes say (many other mutations
    # touch provenance nothing reads, or flip vector bytes into other valid vectors, and load: that is fine)
    for label in ("manifest.json top=[]", "manifest.json files=[]", "manifest.json encoder=\"x\"",
                  "manifest.json encoder.dim:deleted", "routes.json top=[] resealed", "routes.json routes=[] resealed",
                  "routes.json utterances=[] resealed", "routes.json routes.[0]={} resealed",
                  "routes.json utterances.[0].route:deleted resealed", "embeddings.npy empty resealed",
                  "embeddings.npy dim_short resealed", "head.npz weights_T resealed", "head.npz empty resealed",
                  "head.npz nan resealed", "index.faiss half resealed", "encoder/encoder.json dim=-1",
                  "encoder/model.onnx half resealed", "encoder/tokenizer.json flip_40 resealed"):
        assert label in refused, f"{label} was accepted"
    assert len(refused) > 300 and len(loaded) + len(refused) == len(cases)
