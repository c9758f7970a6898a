"""The audit trail: hash chain, rotation, verify naming the first broken record, disk full, and the real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from server_harness import InProcessServer

from semroute._proto.semroute.v1 import router_pb2 as pb
from semroute._proto.semroute.v1 import router_pb2_grpc as pb_grpc
from semroute.audit.verify import verify_logs
from semroute.audit.writer import AuditWriter, rotated_files
from semroute.errors import DataError
from semroute.ops import OpsConfig
from semroute.server import ServeConfig

KEY = b"k" * 32


def _write(path: Path, n: int, **kw: object) -> AuditWriter:
    w = AuditWriter(path, key=KEY, **kw)  # type: ignore[arg-type]
    w.start()
    for i in range(n):
        assert w.submit({"kind": "decision", "request_id": f"r{i}", "model": "m"}, text=f"query {i}")
    w.close()
    return w


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def test_chain_verifies_and_restart_continues_it(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    _write(log, 5)
    _write(log, 3)  # a second server run continues the same chain
    s = verify_logs([log])
    assert (s.records, s.first_seq, s.last_seq) == (10, 0, 9)  # 2 start records + 8 decisions
    recs = [json.loads(line) for line in _lines(log)]
    assert [r["kind"] for r in recs].count("start") == 2
    assert all("text" not in r and len(r["text_hmac"]) == 64 for r in recs if r["kind"] == "decision")
    assert b"query 1" not in log.read_bytes()


@pytest.mark.parametrize(("tamper", "message"), [
    ("edit", r"audit\.log:4: record seq 3 was edited \(its content does not match its hash\)"),
    ("edit_rehash", r"audit\.log:4: record seq 3 was edited or replaced"),
    ("remove", r"audit\.log:4: record seq 4 follows seq 2: seq 3 removed"),
    ("reorder", r"audit\.log:4: record seq 4 comes before seq 3: records were reordered"),
    ("truncate", r"audit\.log:7: truncated record"),
    ("corrupt", r"audit\.log:2: corrupt record \(not JSON"),
    ("head", r"records were removed from the start|starts at seq 1"),
])
def test_verify_names_the_first_broken_record(tmp_path: Path, tamper: str, message: str) -> None:
    from semroute.audit.chain import canonical, record_hash

    log = tmp_path / "audit.log"
    _write(log, 6)
    lines = _lines(log)
    if tamper == "edit":
        lines[3] = lines[3].replace(b'"model":"m"', b'"model":"x"')
    elif tamper == "edit_rehash":
        r = json.loads(lines[3])
        r["model"] = "evil"
        r["hash"] = record_hash(r)
        lines[3] = canonical(r) + b"\n"
    elif tamper == "remove":
        del lines[3]
    elif tamper == "reorder":
        lines[3], lines[4] = lines[4], lines[3]
    elif tamper == "truncate":
        lines[-1] = lines[-1][:20]
    elif tamper == "corrupt":
        lines[1] = b"{not json\n"
    elif tamper == "head":
        del lines[0]
    log.write_bytes(b"".join(lines))
    with pytest.raises(DataError, match=message):
        verify_logs([log])
    r = subprocess.run([sys.executable, "-m", "semroute.cli", "audit", "verify", str(log)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "error:" in r.stderr and "Traceback" not in r.stderr


def test_rotation_keeps_one_chain_across_files(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    _write(log, 60, max_bytes=4096)
    files = rotated_files(log)
    assert len(files) >= 2
    s = verify_logs([log, *reversed(files)])  # any order: files are ordered by their first seq
    assert s.records == 61 and s.files == len(files) + 1
    with pytest.raises(DataError, match="removed"):
        verify_logs([log, *files[1:]]) if len(files) > 1 else verify_logs([log])
    assert verify_logs([log], partial=True).last_seq == 60
    with pytest.raises(DataError, match="not the expected head"):
        verify_logs([log, *files], expect_head="0" * 64)


def test_torn_tail_is_cut_and_declared(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    _write(log, 3)
    with log.open("ab") as f:
        f.write(b'{"kind":"decision","seq":4,"pre')  # the process died mid-write
    _write(log, 1)
    assert verify_logs([log]).records == 6
    starts = [json.loads(line) for line in _lines(log) if b'"start"' in line]
    assert starts[-1]["repaired_torn_bytes"] == 31


def test_disk_full_keeps_serving_and_declares_the_gap(tmp_path: Path) -> None:
    """A real ENOSPC (/dev/full), then the disk 'frees up' (the fd is pointed back at the log file)."""
    log = tmp_path / "audit.log"
    w = AuditWriter(log, key=KEY)
    w.start()
    deadline = time.monotonic() + 10
    while w.seq == 0 and time.monotonic() < deadline:  # the start record is written
        time.sleep(0.01)
    real_fd = w._fd
    w._fd = os.open("/dev/full", os.O_WRONLY)
    for i in range(4):
        w.submit({"kind": "decision", "request_id": f"lost{i}"}, text="x")
    while w.healthy and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not w.healthy
    os.close(w._fd)
    w._fd = real_fd
    w.submit({"kind": "decision", "request_id": "after"}, text="y")
    while not w.healthy and time.monotonic() < deadline:
        time.sleep(0.01)
    w.close()
    s = verify_logs([log])
    assert s.gaps == 1 and s.lost == 4
    recs = [json.loads(line) for line in _lines(log)]
    gap = next(r for r in recs if r["kind"] == "gap")
    assert "No space left on device" in gap["reason"]
    assert recs[-1]["request_id"] == "after"


def test_full_queue_is_counted_and_declared(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    w = AuditWriter(log, key=KEY, queue_size=2)
    w._queue.put(({"kind": "x", "time": time.time()}, None))  # fill it before the thread drains it
    w._queue.put(({"kind": "x", "time": time.time()}, None))
    assert not w.submit({"kind": "decision"}, text="dropped")
    w.start()
    w.close()
    assert verify_logs([log]).lost >= 1


def test_newest_record_corrupt_refuses_to_continue(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    _write(log, 2)
    lines = _lines(log)
    lines[-1] = lines[-1].replace(b'"model":"m"', b'"model":"z"')
    log.write_bytes(b"".join(lines))
    with pytest.raises(DataError, match="newest audit record is corrupt"):
        AuditWriter(log, key=KEY).start()


def test_server_audits_every_decision(bundle_dir: Path, tmp_path: Path) -> None:
    log = tmp_path / "a" / "audit.log"
    config = ServeConfig(index=bundle_dir, port=0, watch=False, ops=OpsConfig(audit_log=log))
    with InProcessServer(config) as s, grpc.insecure_channel(s.target) as ch:
        stub = pb_grpc.RouterStub(ch)
        stub.Route(pb.RouteRequest(text="my card was charged twice", metadata=pb.RequestMetadata(
            tenant="acme", request_id="req-1", user_tier="gold")), timeout=5)
        stub.RouteBatch(pb.RouteBatchRequest(queries=[pb.Query(text="solve 2x+3=11"), pb.Query(text="hello")]),
                        timeout=5)
        stub.Info(pb.InfoRequest(), timeout=5)
        stub.Route(pb.RouteRequest(text="I got a subpoena, write to me at jane@example.com",
                                   metadata=pb.RequestMetadata(request_id="req-policy")), timeout=5)
        with pytest.raises(grpc.RpcError):
            stub.Route(pb.RouteRequest(text=""), timeout=5)  # refused: no decision, no record
    s = verify_logs([log])
    recs = [json.loads(line) for line in _lines(log)]
    decisions = [r for r in recs if r["kind"] == "decision"]
    assert s.records == 5 and len(decisions) == 4
    p = next(r for r in decisions if r["request_id"] == "req-policy")  # the policy's part, from the Decision
    assert "legal-keywords" in p["rules"] and p["pii_kinds"] == ["email"] and p["policy_version"].startswith("p-")
    assert p["tier_applied"] == "standard" and b"jane@example.com" not in log.read_bytes()
    d = decisions[0]
    assert (d["request_id"], d["tenant"], d["tier"], d["route"], d["method"]) == (
        "req-1", "acme", "gold", "billing", "Route")
    assert d["reason"] == "REASON_MATCHED" and d["bundle_version"] and d["scores"]["billing"] == d["score"]
    assert [r["batch_index"] for r in decisions[1:3]] == [0, 1]
    assert b"charged twice" not in log.read_bytes()
    assert (log.parent / "audit.log.key").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("policy", ["keep-serving", "fail-closed"])
def test_disk_full_policy_through_the_server(bundle_dir: Path, policy: str) -> None:
    """/dev/full as the audit log: every write fails with ENOSPC, as on a full disk."""
    config = ServeConfig(index=bundle_dir, port=0, watch=False, ops=OpsConfig(
        audit_log=Path("/dev/full"), audit_text="none", audit_on_error=policy))  # type: ignore[arg-type]
    with InProcessServer(config) as s, grpc.insecure_channel(s.target) as ch:
        stub = pb_grpc.RouterStub(ch)
        deadline = time.monotonic() + 10
        codes = set()
        while time.monotonic() < deadline:
            try:
                stub.Route(pb.RouteRequest(text="my card was charged twice"), timeout=5)
                codes.add("OK")
            except grpc.RpcError as e:
                codes.add(e.code().name)
                assert "--audit-on-error fail-closed" in e.details()
            if policy == "keep-serving" and len(codes) and time.monotonic() > deadline - 8:
                break
            if "UNAVAILABLE" in codes:
                break
            time.sleep(0.05)
        assert codes == ({"OK"} if policy == "keep-serving" else {"UNAVAILABLE"} | (codes & {"OK"}))
        assert stub.Info(pb.InfoRequest(), timeout=5).index_version  # Info makes no decision: always answered


def _audit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "semroute.cli", "audit", *args], capture_output=True, text=True,
                          timeout=60)


def test_head_anchoring_catches_cut_off_newest_records_through_the_cli(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    _write(log, 5)
    r = _audit("head", str(log))
    assert r.returncode == 0, r.stderr
    head = r.stdout.strip()
    assert head == json.loads(_lines(log)[-1])["hash"] and "seq 5, 6 records" in r.stderr
    r = _audit("verify", str(log), "--expect-head", head)
    assert r.returncode == 0 and f"head {head} (the expected head)" in r.stdout, r.stderr
    # the newest two records cut off: still a valid chain, so only the anchored head shows it
    full = log.read_bytes()
    log.write_bytes(b"".join(_lines(log)[:-2]))
    assert _audit("verify", str(log)).returncode == 0
    r = _audit("verify", str(log), "--expect-head", head)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "the newest record (seq 3)" in r.stderr and "nowhere in the chain" in r.stderr and "truncated" in r.stderr
    r = _audit("verify", str(log), "--anchor", head)
    assert r.returncode == 2 and "is not in the chain (seq 0..3): the log was cut back to before it" in r.stderr
    # a log that kept growing after the head was taken: --expect-head says so, --anchor accepts it
    log.write_bytes(full)
    _write(log, 2)
    r = _audit("verify", str(log), "--expect-head", head)
    assert r.returncode == 2 and "continues past the expected head" in r.stderr and "(record seq 5)" in r.stderr
    assert "--anchor" in r.stderr
    r = _audit("verify", str(log), "--anchor", head.upper())  # as copied from anywhere: case does not matter
    assert r.returncode == 0 and "1 anchors in the chain" in r.stdout, r.stderr
    # a malformed hash is a usage error naming the option, not "records removed"
    for bad in ("abc", "z" * 64):
        r = _audit("verify", str(log), "--expect-head", bad)
        assert r.returncode == 2 and "--expect-head:" in r.stderr and "is not a record hash" in r.stderr
    r = _audit("head", str(tmp_path / "missing.log"))
    assert r.returncode == 2 and "cannot read" in r.stderr and "Traceback" not in r.stderr
