"""The policy from the command line, on the bundled routes/ and their policy (routes/policy.yaml), with the real
encoder: route --json keys, explain, eval with metadata (cost by tier, policy on vs off), validate's warnings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "semroute.cli", *args], capture_output=True, text=True, timeout=600,
                          input=stdin)


def test_route_json_carries_the_policy(bundle_dir: Path) -> None:
    r = cli("route", "--index", str(bundle_dir), "--json", "--tier", "free", "--tenant", "acme", "--label", "a=b",
            "My email is ana@example.org, summarize this thread for me", "summarize this article in three bullets")
    assert r.returncode == 0, r.stderr
    pii, plain = (json.loads(line) for line in r.stdout.splitlines())
    for d in (pii, plain):
        assert {"tier", "pii_kinds", "estimated_cost", "trace", "policy_version"} <= set(d)
        assert d["tier"] == "free" and d["policy_version"].startswith("p-") and d["estimated_cost"] > 0
    # the bundled policy: PII stays on premises; free tier gets the cheapest good-enough candidate
    assert pii["pii_kinds"] == ["email"] and pii["model"] == "onprem-llm"
    assert any(t["subject"] == "pii-on-prem" for t in pii["trace"])
    assert plain["route"] == "summarization" and plain["model"] == "small-chat"
    assert "ana@example.org" not in r.stdout.replace(pii["text"], "")  # the value never leaves the detector


def test_route_denies_secrets_and_refuses_bad_labels(bundle_dir: Path) -> None:
    r = cli("route", "--index", str(bundle_dir), "why is ghp_" + "a" * 36 + " rejected by the API")
    assert r.returncode == 6 and "deny-secrets" in r.stderr
    r = cli("route", "--index", str(bundle_dir), "--label", "novalue", "hello")
    assert r.returncode == 2 and "--label" in r.stderr


def test_explain_prints_the_trace(bundle_dir: Path) -> None:
    r = cli("explain", "--index", str(bundle_dir), "--tier", "premium", "I received a subpoena, what now")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "rule legal-keywords" in out and "[pre] rule fired legal-keywords" in out
    assert "[decision] model frontier-large" in out and "tier premium" in out


def test_eval_reports_policy_on_off_by_tier(bundle_dir: Path, tmp_path: Path) -> None:
    rows = [
        {"text": "summarize this article in three bullet points", "route": "summarization",
         "metadata": {"user_tier": "free"}},
        {"text": "write a python function that parses a CSV file", "route": "coding",
         "metadata": {"user_tier": "free"}},
        {"text": "write a python function that parses a CSV file", "route": "coding",
         "metadata": {"user_tier": "premium", "tenant": "acme"}},
        {"text": "my token is AKIAIOSFODNN7EXAMPLE, why does boto fail", "route": "coding"},
        {"text": "what is the meaning of life", "route": None, "metadata": {"labels": {"team": "x"}}},
    ]
    data = tmp_path / "eval.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    r = cli("eval", "--index", str(bundle_dir), "--data", str(data), "--json")
    assert r.returncode == 0, r.stderr
    p = json.loads(r.stdout)["policy"]
    assert set(p["by_tier"]) == {"free", "premium", "standard"}
    assert p["on"]["denied"] == 1 and p["by_tier"]["standard"]["denied"] == 1  # the secret
    free = p["by_tier"]["free"]
    assert free["n"] == 2 and free["cost_on"] < free["cost_off"] and free["models_on"] == {"small-chat": 2}
    assert p["on"]["cost"] < p["off"]["cost"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "x", "route": None, "metadata": {"tier": "free"}}) + "\n")
    r = cli("eval", "--index", str(bundle_dir), "--data", str(bad))
    assert r.returncode == 2 and f"{bad}:1: unknown metadata key" in r.stderr


def test_validate_prints_shadowed_rule_warning(tmp_path: Path) -> None:
    src = (REPO / "tests" / "data" / "broken" / "policy_invalid_regex.yaml").read_text().split("policy:")[0]
    path = tmp_path / "r.yaml"
    path.write_text(src + "policy:\n  rules:\n    - {name: a, when: {pii: [secret]}, then: {deny: x}}\n"
                          "    - {name: b, when: {pii: [secret]}, then: {exclude: [small]}}\n")
    r = cli("validate", str(path))
    assert r.returncode == 0 and "warning: rule 'b' is shadowed by rule 'a'" in r.stderr
