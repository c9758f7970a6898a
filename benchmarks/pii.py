"""PII and secrets detection: precision and recall per kind on a labelled set of realistic texts, look-alikes
included (order and tracking numbers, dates, prices, versions, times, hashes, UUIDs, ISBNs, file names, invalid
checksums, numbers without the context a kind needs).

    python -m benchmarks.pii [--out benchmarks/results] [--seed 7]

The set is built here, deterministically from the seed: values are generated with their real structure (Luhn
check digits, mod-97 IBANs, DNI letters, NIR keys, NHS and BSN check digits, SSN area rules, base64url JWTs) and
put into support-desk style sentences; look-alikes are generated the same way. Writes pii.json and pii.md.
The target per claimed kind: precision >= 0.95 and recall >= 0.90. Also the ``pii`` suite of ``python -m
benchmarks`` (seed 7 in both modes: the set takes about a second).
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import string
import time
from pathlib import Path
from typing import Any

from semroute.policy.pii import KINDS, PiiDetector

from ._common import Mode, write_results

REPO = Path(__file__).resolve().parents[1]
SEED = 7

TEMPLATES = [
    "Hi, {v} is what I have on file, can you check my account?",
    "please update my details: {v}",
    "I already sent {v} to your colleague yesterday and nobody answered",
    "Is it safe to paste {v} here?",
    "my manager asked me to forward {v} to the vendor, is that ok",
    "{v} - that's the one, thanks",
    "Can you help me understand why {v} was rejected?",
    "Summarise this email thread for me. From the customer: 'you can reach me at {v}, best regards'",
]
CONTEXT_TEMPLATES = {  # kinds whose validators need the name of the number just before it
    "phone": ["call me on {v} after six", "my phone number is {v}", "text me at {v} when the parcel arrives",
              "mobile: {v}", "you can reach me at {v}"],
    "nhs": ["my NHS number is {v}, can you book the appointment", "NHS no. {v}, date of birth on file",
            "the clinic wants my NHS number ({v}) again"],
    "bsn": ["BSN {v} for the tax form", "my burgerservicenummer is {v}"],
}


def _luhn_complete(prefix: str, length: int, rng: random.Random) -> str:
    body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    for d in string.digits:
        n = body + d
        total = sum(int(c) if i % 2 == 0 else (2 * int(c) - 9 if 2 * int(c) > 9 else 2 * int(c))
                    for i, c in enumerate(reversed(n)))
        if total % 10 == 0:
            return n
    raise AssertionError


def _group(s: str, sizes: list[int], sep: str) -> str:
    out, i = [], 0
    for n in sizes:
        out.append(s[i:i + n])
        i += n
    return sep.join(p for p in out if p)


def card(rng: random.Random) -> str:
    brand = rng.choice([("4", 16), ("51", 16), ("55", 16), ("2221", 16), ("34", 15), ("37", 15), ("6011", 16)])
    n = _luhn_complete(brand[0], brand[1], rng)
    sizes = [4, 6, 5] if brand[1] == 15 else [4, 4, 4, 4]
    return _group(n, sizes, rng.choice([" ", "-", ""]))


def iban(rng: random.Random) -> str:
    from stdnum import iban as _iban

    country, bban_len = rng.choice([("DE", 18), ("GB", 18), ("FR", 23), ("ES", 20), ("NL", 14), ("IT", 23),
                                    ("BE", 12), ("CH", 17)])
    while True:
        if country == "GB":
            bban = "".join(rng.choice(string.ascii_uppercase) for _ in range(4)) + "".join(
                rng.choice(string.digits) for _ in range(14))
        elif country == "NL":
            bban = "".join(rng.choice(string.ascii_uppercase) for _ in range(4)) + "".join(
                rng.choice(string.digits) for _ in range(10))
        elif country == "IT":
            bban = rng.choice(string.ascii_uppercase) + "".join(rng.choice(string.digits) for _ in range(22))
        else:
            bban = "".join(rng.choice(string.digits) for _ in range(bban_len))
        raw = country + "00" + bban
        check = 98 - int("".join(str(int(c, 36)) for c in (bban + country + "00"))) % 97
        value = f"{country}{check:02d}{bban}"
        if _iban.is_valid(value):
            return _group(value, [4] * 9, " ") if rng.random() < 0.6 else value
        del raw


def dni(rng: random.Random) -> str:
    n = rng.randrange(10_000_000, 99_999_999)
    return f"{n}{'TRWAGMYFPDXBNJZSQVHLCKE'[n % 23]}"


def nie(rng: random.Random) -> str:
    p = rng.choice("XYZ")
    n = rng.randrange(1_000_000, 9_999_999)
    return f"{p}{n}{'TRWAGMYFPDXBNJZSQVHLCKE'[int(str('XYZ'.index(p)) + str(n)) % 23]}"


def nir(rng: random.Random) -> str:
    body = f"{rng.choice('12')}{rng.randrange(40, 99):02d}{rng.randrange(1, 12):02d}{rng.randrange(1, 95):02d}" \
           f"{rng.randrange(1, 999):03d}{rng.randrange(1, 999):03d}"
    key = 97 - int(body) % 97
    return f"{body[0]} {body[1:3]} {body[3:5]} {body[5:7]} {body[7:10]} {body[10:13]} {key:02d}"


def nhs(rng: random.Random) -> str:
    while True:
        d = [rng.randrange(10) for _ in range(9)]
        check = 11 - sum(x * (10 - i) for i, x in enumerate(d)) % 11
        check = 0 if check == 11 else check
        if check != 10:
            s = "".join(map(str, d)) + str(check)
            return f"{s[:3]} {s[3:6]} {s[6:]}"


def bsn(rng: random.Random) -> str:
    while True:
        d = [rng.randrange(10) for _ in range(8)]
        rest = sum(x * (9 - i) for i, x in enumerate(d)) % 11
        if rest < 10 and d[0] != 0:  # the last digit's weight is -1: it must equal the weighted sum mod 11
            return "".join(map(str, d)) + str(rest)


def codice_fiscale(rng: random.Random) -> str:
    from stdnum.it import codicefiscale

    up = string.ascii_uppercase
    body = ("".join(rng.choice(up) for _ in range(6)) + f"{rng.randrange(40, 99)}" + rng.choice("ABCDEHLMPRST")
            + f"{rng.randrange(1, 28):02d}" + rng.choice(up) + f"{rng.randrange(100, 999)}")
    return body + codicefiscale.calc_check_digit(body)


def ssn(rng: random.Random) -> str:
    while True:
        area = rng.randrange(1, 900)
        if area != 666:
            return f"{area:03d}-{rng.randrange(1, 100):02d}-{rng.randrange(1, 10000):04d}"


def phone(rng: random.Random) -> str:
    return rng.choice([
        f"+44 20 7946 {rng.randrange(0, 999):04d}", f"(415) 555-{rng.randrange(100, 9999):04d}",
        f"+1 212 555 {rng.randrange(100, 9999):04d}", f"+49 30 {rng.randrange(1000000, 9999999)}",
        f"+33 1 42 68 {rng.randrange(10, 99)} {rng.randrange(10, 99)}", f"+34 912 345 {rng.randrange(100, 999)}",
        f"+91 98765 {rng.randrange(10000, 99999)}", f"646-555-{rng.randrange(1000, 9999)}",
    ])


def email(rng: random.Random) -> str:
    first = rng.choice(["maria", "j.smith", "tom+billing", "ANA.LOPEZ", "k_nguyen", "support-team", "li.wei88"])
    domain = rng.choice(["example.org", "mail.example.co.uk", "corp.example.com", "example.de", "uni.example.edu"])
    return f"{first}@{domain}"


def ip(rng: random.Random) -> str:
    if rng.random() < 0.8:
        return ".".join(str(rng.randrange(1, 255)) for _ in range(4))
    return rng.choice(["2001:db8::8a2e:370:7334", "fe80::1ff:fe23:4567:890a", "2001:0db8:85a3:0000:0000:8a2e:0370:"
                       "7334"])


def api_key(rng: random.Random) -> str:
    an = string.ascii_letters + string.digits
    return rng.choice([
        "AKIA" + "".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(16)),
        "ghp_" + "".join(rng.choice(an) for _ in range(36)),
        "sk-proj-" + "".join(rng.choice(an + "_-") for _ in range(48)),
        "xoxb-" + "-".join("".join(rng.choice(string.digits) for _ in range(12)) for _ in range(2)) + "-"
        + "".join(rng.choice(an) for _ in range(24)),
        "sk_live_" + "".join(rng.choice(an) for _ in range(24)),
        "AIza" + "".join(rng.choice(an + "_-") for _ in range(35)),
    ])


def private_key(rng: random.Random) -> str:
    kind = rng.choice(["RSA ", "EC ", "OPENSSH ", "", "ENCRYPTED "])
    return f"-----BEGIN {kind}PRIVATE KEY-----\nMIIEpAIBAAKCAQEA" + "".join(
        rng.choice(string.ascii_letters) for _ in range(40)) + f"\n-----END {kind}PRIVATE KEY-----"


def jwt(rng: random.Random) -> str:
    def b64(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    sig = "".join(rng.choice(string.ascii_letters + string.digits + "_-") for _ in range(43))
    return f"{b64({'alg': rng.choice(['HS256', 'RS256']), 'typ': 'JWT'})}." \
           f"{b64({'sub': str(rng.randrange(10**6)), 'iat': 1700000000 + rng.randrange(10**6)})}.{sig}"


def look_alikes(rng: random.Random) -> list[str]:
    d = string.digits
    r = rng.randrange
    return [
        f"order #{r(10**9, 10**10)} has not arrived yet", f"my order number is {r(10**7, 10**8)}",
        f"the invoice INV-{r(2019, 2026)}-{r(10**5, 10**6)} shows the wrong amount",
        f"it was delivered on {r(2019, 2026)}-{r(1, 13):02d}-{r(1, 29):02d}",
        f"the appointment is on {r(1, 29):02d}/{r(1, 13):02d}/{r(2019, 2026)} at {r(8, 18)}:{r(0, 60):02d}",
        f"it costs ${r(1, 10)},{r(100, 999)}.{r(0, 100):02d} or €{r(10, 99)}.{r(0, 100):02d} per month",
        f"upgrade to version {r(1, 9)}.{r(0, 20)}.{r(0, 20)}.{r(0, 200)} fixed it",
        f"the log shows 12:{r(0, 60):02d}:{r(0, 60):02d} as the last entry", f"tracking 1Z{r(10**15, 10**16)}",
        f"ISBN 978-{r(0, 10)}-{r(10, 99)}-{r(100000, 999999)}-{r(0, 10)}",
        f"commit {''.join(rng.choice('0123456789abcdef') for _ in range(40))} broke the build",
        f"request id {''.join(rng.choice('0123456789abcdef') for _ in range(8))}-"
        f"{''.join(rng.choice('0123456789abcdef') for _ in range(4))}-4abc-8def-{r(10**11, 10**12)}",
        "see icon@2x.png and logo@3x.jpg in the assets folder", "ping me @maria_dev on the forum",
        "write to me at user at example dot org", f"my postcode is {r(10000, 99999)} and I am {r(18, 90)} years old",
        f"we grew {r(1, 99)}.{r(0, 9)}% to {r(1, 999)} million users", "the ratio is 3.14159 to 2.71828",
        f"reference {r(10**9, 10**10)} on the statement",
        f"account 12345678, sort code {r(10, 99)}-{r(10, 99)}-{r(10, 99)}",
        f"the SKU is {''.join(rng.choice(d) for _ in range(16))}", f"000-{r(10, 99)}-{r(1000, 9999)} is on the form",
        "DE00 1234 5678 9012 3456 78 (an invalid IBAN from the docs)", "-----BEGIN PUBLIC KEY----- is fine to share",
        "the sk-8 is my favourite ski model", "eyJ is how base64 JSON starts", f"room {r(100, 999)}, floor {r(1, 30)}",
        f"serial {''.join(rng.choice(string.ascii_uppercase) for _ in range(2))}{r(10**6, 10**7)}",
        f"my flight UA{r(100, 9999)} leaves at gate B{r(1, 60)}", f"call extension {r(1000, 9999)}",
        f"it happened between {r(1990, 2020)} and {r(2021, 2026)}", "AKIA is an AWS prefix, right?",
        f"the card ending in {r(1000, 9999)} was declined", f"temperature 39.{r(0, 9)} degrees for {r(2, 9)} days",
        f"coordinates 51.{r(1000, 9999)}, -0.{r(1000, 9999)}", f"my student number is S{r(10**6, 10**7)}",
    ]


def build_set(seed: int) -> list[tuple[str, frozenset[str]]]:
    rng = random.Random(seed)
    makers = {"email": email, "credit_card": card, "iban": iban, "us_ssn": ssn, "ip_address": ip, "api_key": api_key,
              "private_key": private_key, "jwt": jwt}
    out: list[tuple[str, frozenset[str]]] = []
    for kind, make in makers.items():
        for _ in range(40):
            out.append((rng.choice(TEMPLATES).format(v=make(rng)), frozenset({kind})))
    for _ in range(40):
        out.append((rng.choice(TEMPLATES + CONTEXT_TEMPLATES["phone"]).format(v=phone(rng)), frozenset({"phone"})))
    for _ in range(40):
        make_id = rng.choice([dni, nie, nir, codice_fiscale])
        out.append((rng.choice(TEMPLATES).format(v=make_id(rng)), frozenset({"national_id"})))
    for _ in range(10):
        out.append((rng.choice(CONTEXT_TEMPLATES["nhs"]).format(v=nhs(rng)), frozenset({"national_id"})))
        out.append((rng.choice(CONTEXT_TEMPLATES["bsn"]).format(v=bsn(rng)), frozenset({"national_id"})))
    for _ in range(30):  # two kinds in one text
        a, b = rng.sample(list(makers), 2)
        out.append((f"contact {makers[a](rng)} or use {makers[b](rng)} instead", frozenset({a, b})))
    for _ in range(12):
        out.extend((t, frozenset()) for t in look_alikes(rng))
    return out


def evaluate(cases: list[tuple[str, frozenset[str]]]) -> dict[str, Any]:
    det = PiiDetector()
    counts = {k: {"tp": 0, "fp": 0, "fn": 0} for k in KINDS}
    errors: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for text, truth in cases:
        got = det.detect(text)
        for k in KINDS:
            if k in got and k in truth:
                counts[k]["tp"] += 1
            elif k in got:
                counts[k]["fp"] += 1
            elif k in truth:
                counts[k]["fn"] += 1
        if got != truth:
            errors.append({"text": text[:160], "truth": sorted(truth), "detected": sorted(got)})
    elapsed = time.perf_counter() - t0
    rows = []
    for k, c in counts.items():
        p = c["tp"] / (c["tp"] + c["fp"]) if c["tp"] + c["fp"] else 1.0
        r = c["tp"] / (c["tp"] + c["fn"]) if c["tp"] + c["fn"] else 1.0
        rows.append({"kind": k, **c, "precision": p, "recall": r, "meets_target": p >= 0.95 and r >= 0.90})
    return {"n": len(cases), "negatives": sum(not t for _, t in cases), "rows": rows, "errors": errors[:40],
            "mean_us_per_text": elapsed / len(cases) * 1e6}


def run(mode: Mode, workdir: Path) -> dict[str, Any]:
    """The ``pii`` suite of ``python -m benchmarks``: the same set in both modes."""
    return measure(SEED)


def measure(seed: int) -> dict[str, Any]:
    return {"seed": seed, **evaluate(build_set(seed))}


def markdown(res: dict[str, Any]) -> str:
    """The standalone script's pii.md."""
    return "## PII detection\n\n" + table(res)


def table(res: dict[str, Any]) -> str:
    lines = [f"{res['n']} texts, {res['negatives']} of them look-alikes with no PII; seed {res['seed']}.", "",
             "| kind | TP | FP | FN | precision | recall | target (P>=0.95, R>=0.90) |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for r in res["rows"]:
        lines.append(f"| {r['kind']} | {r['tp']} | {r['fp']} | {r['fn']} | {r['precision']:.3f} | "
                     f"{r['recall']:.3f} | {'met' if r['meets_target'] else 'MISSED'} |")
    lines += ["", f"Mean detection time: {res['mean_us_per_text']:.0f} us per text.", ""]
    if res["errors"]:
        lines += ["Misclassified texts (first ones):", ""]
        lines += [f"- `{e['text'][:100]}`: truth {e['truth']}, detected {e['detected']}" for e in res["errors"][:15]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.pii", description=__doc__)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    ap.add_argument("--seed", type=int, default=SEED)
    ns = ap.parse_args(argv)
    res = measure(ns.seed)
    write_results(ns.out, "pii", res, lambda: markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
