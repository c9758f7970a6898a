"""The quality predictor inside a bundle: ``quality/`` (quality.json, quality.npz and, when the kNN estimate is
used, quality.faiss), each file hashed in the manifest like the bundle's other files, and a manifest record
``quality`` (outcome file, its sha256, models, chosen settings, cross-validated Brier score).

Fitting writes a new bundle version (``parent`` = the source version), atomically, never editing the source.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from .._fs import replace_dir, temp_dir_beside
from ..bundle import Bundle, load_bundle, write_derived_manifest
from ..errors import BundleError
from .predictor import QualityPredictor

QUALITY_DIR = "quality"
QUALITY_META = f"{QUALITY_DIR}/quality.json"


def load_quality(bundle: Bundle) -> QualityPredictor | None:
    """The bundle's predictor, or None if it has none. Its files' hashes were checked by load_bundle."""
    if QUALITY_META not in bundle.manifest.get("files", {}):
        return None
    return QualityPredictor.load(bundle.path / QUALITY_DIR)


def write_quality_bundle(src: str | Path, out: str | Path, predictor: QualityPredictor,
                         record: dict[str, Any]) -> Bundle:
    """Write ``src`` plus ``predictor`` as a new bundle version at ``out`` (atomic; ``src`` untouched)."""
    src, out = Path(src), Path(out)
    if src.resolve() == out.resolve():
        raise BundleError(f"{out}: fitting writes a new bundle version; choose an --out other than the source")
    source = load_bundle(src)
    unknown = [m for m in predictor.models if m not in source.models and m != source.table.fallback_model]
    if unknown:
        raise BundleError(f"{src}: the outcome models {unknown} are not declared by the bundle's route files")
    tmp = temp_dir_beside(out)
    try:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
        shutil.rmtree(tmp / QUALITY_DIR, ignore_errors=True)
        names = [f"{QUALITY_DIR}/{n}" for n in predictor.save(tmp / QUALITY_DIR)]
        kept = [n for n in source.manifest["files"] if not n.startswith(f"{QUALITY_DIR}/")]
        write_derived_manifest(tmp, source, [*kept, *names], quality=record)
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return load_bundle(out)
