"""Route-file validation: every broken file is rejected with its file, line and field, and a hint."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from semroute.errors import ConfigError
from semroute.routes import load_routes

DATA = Path(__file__).parent / "data"
BROKEN = sorted((DATA / "broken").glob("*.yaml"))
ROUTES = Path(__file__).resolve().parents[1] / "routes"


def _expect(path: Path) -> tuple[int | None, str, str]:
    m = re.match(r"# expect: line=(\d*) field=(\S*) msg=(.*)", path.read_text().splitlines()[0])
    assert m, f"{path} lacks an '# expect:' header"
    return (int(m.group(1)) if m.group(1) else None), m.group(2), m.group(3).strip()


def test_corpus_is_large_enough() -> None:
    assert len(BROKEN) >= 12


@pytest.mark.parametrize("path", BROKEN, ids=[p.stem for p in BROKEN])
def test_broken_file_is_rejected_with_location(path: Path) -> None:
    line, field, msg = _expect(path)
    with pytest.raises(ConfigError) as info:
        load_routes([path])
    err = info.value
    assert err.file == str(path)
    assert err.line == line, str(err)
    assert (err.field or "") == field, str(err)
    assert msg in str(err), str(err)
    assert err.hint, "every error says how to fix it"
    # the one-line message carries file:line so editors can jump to it
    if line is not None:
        assert str(err).startswith(f"{path}:{line}: ")


def test_duplicate_route_across_files_names_both() -> None:
    with pytest.raises(ConfigError) as info:
        load_routes([DATA / "dup_across_files"])
    err = info.value
    assert err.file is not None and err.file.endswith("b.yaml")
    assert err.line == 6 and err.field == "routes[1].name"
    assert "a.yaml" in str(err)


def test_missing_path() -> None:
    with pytest.raises(ConfigError, match="no such file or directory"):
        load_routes([DATA / "nope.yaml"])


def test_bundled_routes_are_valid_and_realistic() -> None:
    rs = load_routes([ROUTES])
    assert len(rs.routes) >= 7
    for r in rs.routes:
        assert len(r.utterances) >= 20, r.name
        assert r.model in rs.models
    assert rs.fallback_model in rs.models
    assert len(rs.sources) >= 2  # merged from several files


def test_merge_defaults_and_normalisation(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        "version: 1\nfallback: {model: big}\nmodels: {big: {cost_per_1k_input: 1}}\n"
        "defaults: {threshold: 0.6, aggregation: max}\n"
    )
    (tmp_path / "b.yaml").write_text(
        "version: 1\nroutes:\n  - name: billing\n    model: big\n    threshold: 0.7\n"
        "    utterances: ['refund   please', 'Refund please', 'cancel']\n"
        "  - {name: support, model: big, utterances: [app crashes], negative_utterances: [crash a car]}\n"
    )
    rs = load_routes([tmp_path])
    assert rs.defaults.aggregation == "max"
    billing, support = rs.routes
    assert billing.threshold == 0.7 and support.threshold == 0.6
    assert billing.utterances == ("refund please", "cancel")  # whitespace folded, case-insensitive repeat dropped
    assert support.negative_utterances == ("crash a car",)


def test_unreadable_entry_is_a_config_error_and_sources_hash_what_was_read(tmp_path: Path) -> None:
    # a directory whose name ends in .yaml matches the glob; it was a raw IsADirectoryError before the file was
    # read once (and hashed from those same bytes)
    (tmp_path / "a.yaml").write_text(
        "version: 1\nfallback: {model: big}\nmodels: {big: {}}\nroutes:\n  - {name: r, model: big, utterances: [hi]}\n"
    )
    rs = load_routes([tmp_path])
    assert rs.sources == {str(tmp_path / "a.yaml"): hashlib.sha256((tmp_path / "a.yaml").read_bytes()).hexdigest()}
    (tmp_path / "b.yaml").mkdir()
    with pytest.raises(ConfigError) as info:
        load_routes([tmp_path])
    assert info.value.file == str(tmp_path / "b.yaml")
    assert "cannot read file" in str(info.value)
