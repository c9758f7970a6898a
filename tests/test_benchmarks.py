"""The benchmark harness's quick mode produces complete, well-formed results (timings are not asserted)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks.__main__ import main


@pytest.mark.usefixtures("encoder_dir")
def test_quick_mode_writes_complete_results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEMROUTE_PEER_PYTHON", str(tmp_path / "no-peer-here"))
    assert main(["--quick", "--suites", "encoder,graph,grpc,floor,startup,peer", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "quick.json").read_text())
    md = (tmp_path / "quick.md").read_text()
    assert res["machine"]["cores"] and res["machine"]["libraries"]["onnxruntime"]
    enc = res["suites"]["encoder"]
    assert {r["encoder"] for r in enc["rows"]} >= {"tokenize", "int8_onnx", "fp32_onnx"}
    for r in enc["rows"]:
        assert r["n"] > 0 and all(math.isfinite(r[k]) and r[k] > 0 for k in ("median_ms", "p90_ms", "p99_ms"))
        assert r["min_ms"] <= r["median_ms"] <= r["p99_ms"] <= r["max_ms"]
    assert enc["int8_vs_fp32"] and all(x["int8_over_fp32"] > 0 for x in enc["int8_vs_fp32"])
    gr = res["suites"]["graph"]
    assert gr["nodes"]["lean_fp32"] < gr["nodes"]["traced_fp32"] / 3  # the point of the lean graph
    assert all(v > 0 for r in gr["rows"] for v in r["median_ms"].values())
    g = res["suites"]["grpc"]["bundled"]
    assert g["overhead"]["p50_ratio"] > 0
    assert all(g["overhead"][k]["median_ms"] > 0 for k in ("bare_encoder", "in_process", "grpc_empty_rtt",
                                                           "grpc_route_server_side", "grpc_route_outside_server"))
    assert g["overhead"]["grpc_route_c1_via_worker"]["median_ms"] > 0  # the same rotation, --no-inline-when-idle
    for level in g["levels"].values():
        for k in ("batching_on", "batching_on_no_inline", "batching_off"):
            assert level[k]["errors"] == 0 and level[k]["throughput_rps"] > 0
    floor = res["suites"]["floor"]["rows"]
    assert len(floor) == 9 and all(r["p50_ms"] > 0 and r["n"] > 0 for r in floor.values())
    s = res["suites"]["startup"]["bundled"]
    assert s["start_to_serving_s"] > 0 and s["rss_mb"] > 0 and s["bundle_mb"] > 0
    assert "skipped" in res["suites"]["peer"]  # no peer environment in CI: recorded, not silently dropped
    titles = ("## Encoder (", "## Encoder graph", "## End to end over gRPC", "## Where Route's time goes",
              "## Start-up and footprint",
              "## Side by side")
    for title in titles:
        assert title in md

    # rerunning one suite keeps the others' results and rewrites the table with all of them
    assert main(["--quick", "--suites", "startup", "--out", str(tmp_path)]) == 0
    again = json.loads((tmp_path / "quick.json").read_text())
    assert set(again["suites"]) == set(res["suites"])
    assert again["suites"]["encoder"] == res["suites"]["encoder"]
    assert again["suites"]["startup"]["bundled"]["start_to_serving_s"] > 0
    assert "## Encoder" in (tmp_path / "quick.md").read_text()


def test_index_scale_quick(tmp_path: Path) -> None:
    from benchmarks import index_scale
    from benchmarks._common import Mode
    from semroute.index import ANN_FACTORY, HNSW_EF_SEARCH

    res = index_scale.run(Mode(quick=True))
    rows = res["rows"]
    assert {r["vectors"] for r in rows} == {1_000, 10_000, 50_000}
    for r in rows:
        assert 0.0 <= r["recall_at_10"] <= 1.0
        assert r["index_mb"] > 0 and 0 < r["median_ms"] <= r["p99_ms"] and r["cpu_p99_ms"] > 0
        if r["factory"] == "Flat":
            assert r["recall_at_10"] == 1.0  # exact search is its own ground truth
    assert f"| 50,000 | {ANN_FACTORY} | efSearch {HNSW_EF_SEARCH} | yes |" in index_scale.table(res)


def test_index_rerun_of_some_sizes_keeps_the_other_rows() -> None:
    from benchmarks import index_scale

    old = {"rows": [{"vectors": 1_000, "run": "old"}, {"vectors": 1_000_000, "run": "old"}]}
    new = {"rows": [{"vectors": 1_000_000, "run": "new"}], "sizes": [1_000_000]}
    merged = index_scale.merge(old, new)["rows"]
    assert merged == [{"vectors": 1_000, "run": "old"}, {"vectors": 1_000_000, "run": "new"}]
    assert index_scale.merge(None, new)["rows"] == new["rows"]
    with pytest.raises(SystemExit):
        main(["--suites", "index", "--index-sizes", "1M"])
