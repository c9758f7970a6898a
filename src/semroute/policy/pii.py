"""PII and secrets detection: which *kinds* a text holds. No matched value ever leaves this module.

Two steps, both linear in the text:

1. One RE2 set (one pass over the text, no backtracking) says which candidate *shapes* occur at all.
2. Only for the shapes present, RE2 finds the candidates and a validator confirms them: Luhn and issuer prefixes
   for cards, ISO 13616 mod-97 for IBANs, python-stdnum for national ids and US SSNs, ``phonenumbers`` for phone
   numbers, ``ipaddress`` for IPs, a decodable JSON header for JWTs. Look-alikes (order numbers, dates, prices,
   version strings, file names like ``icon@2x.png``) fail validation or lack the context a kind needs.

Only kinds are reported, so the search for a kind stops at its first confirmed hit, and at most
``MAX_CANDIDATES`` candidates of one shape are validated per text: an adversarial text of 100 KB of digits costs
the same bounded work as a short one. A real value placed after that many look-alikes of the same shape is
missed; docs/policy.md says so.

    >>> PiiDetector().detect("mail me at ana@example.org")
    frozenset({'email'})
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import phonenumbers
import re2
from stdnum import iban as _iban
from stdnum import luhn
from stdnum.es import dni as _dni
from stdnum.es import nie as _nie
from stdnum.fr import nir as _nir
from stdnum.it import codicefiscale as _cf
from stdnum.us import ssn as _ssn

# The kinds this detector claims (each measured by benchmarks/pii.py), and the groups rules may name.
KINDS = ("email", "phone", "credit_card", "iban", "national_id", "us_ssn", "ip_address", "api_key", "private_key",
         "jwt")
GROUPS = {"secret": frozenset({"api_key", "private_key", "jwt"}), "any": frozenset(KINDS)}
MAX_CANDIDATES = 32
MAX_PHONE_CANDIDATES = 8  # phonenumbers takes 50-300 us per candidate

_OPTS = re2.Options()
_OPTS.log_errors = False

# What a phone number needs besides passing phonenumbers' validation: a leading '+', phone-style grouping, or a
# phone word shortly before it. A bare run of digits is far more often an order or tracking number.
_PHONE_WORDS = re2.compile(rb"(?i)(?:phone|call|tel|mobile|cell|whatsapp|text me|sms|fax|ring|reach me|number|"
                           rb"contact)[^\n]{0,24}$", _OPTS)
_PHONE_GROUPED = re2.compile(rb"^(?:\(\d{2,4}\)\s?\d{3,4}[-. ]\d{3,4}|\d{3}[-. ]\d{3}[-. ]\d{4}|"
                             rb"0\d{2,4}[ -]\d{3,4}[ -]?\d{3,4})$", _OPTS)
_BARE_PHONE = re2.compile(rb"^\d{10,11}$", _OPTS)
_IBAN_HEAD = re2.compile(rb"[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4})* ?$", _OPTS)
_VERSION_WORDS = re2.compile(rb"(?i)\b(?:version|release|v|build|ver)\.?\s*$", _OPTS)
_FILE_TLDS = frozenset({"png", "jpg", "jpeg", "gif", "svg", "webp", "pdf", "ico", "bmp", "tif", "tiff", "js",
                        "css", "py", "ts", "md"})
_NHS_WORDS = re2.compile(rb"(?i)(?:nhs|bsn|burgerservicenummer|national (?:id|identity|insurance) (?:no|number)"
                         rb"|social security)[^\n]{0,20}$", _OPTS)


@dataclass(frozen=True)
class _Shape:
    kind: str
    pattern: bytes
    confirm: Callable[[bytes, bytes, int], bool]  # (candidate, whole text, candidate start) -> is it one?


def _digits(b: bytes) -> str:
    return "".join(ch for ch in b.decode("ascii", "ignore") if ch.isdigit())


def _email(c: bytes, text: bytes, start: int) -> bool:
    tld = c.rsplit(b".", 1)[-1].decode("ascii", "ignore").lower()
    return tld not in _FILE_TLDS


def _after_iban_head(text: bytes, start: int) -> bool:
    """The candidate continues an IBAN ("GB52 YQLQ 3825 ..."): its digits are an account number, not a phone
    number or a card."""
    return _IBAN_HEAD.search(text[max(0, start - 48):start]) is not None


def _phone(c: bytes, text: bytes, start: int) -> bool:
    s = c.decode("ascii", "ignore").strip()
    plus = s.startswith("+")
    grouped = _PHONE_GROUPED.search(c.strip()) is not None
    # a phone word before a bare run of 10-11 digits ("call 4155552671"); other shapes (SSNs, 4-4-4 groups) are
    # not taken on the strength of a nearby word
    worded = (_BARE_PHONE.search(c.strip()) is not None
              and _PHONE_WORDS.search(text[max(0, start - 40):start]) is not None)
    if not (plus or grouped or worded) or _after_iban_head(text, start):
        return False
    if _NHS_WORDS.search(text[max(0, start - 40):start]) is not None:
        return False  # "NHS number 943 476 5919" is written like a US phone number, and is not one
    for region in ((None,) if plus else ("US", "GB", "DE", "FR", "ES", "IT", "NL", "IN")):
        try:
            n = phonenumbers.parse(s, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(n):
            return True
    return False


# issuer prefixes (IIN) and lengths of the card networks most texts carry
_CARD_PREFIXES = (("4", (13, 16, 19)), ("51", (16,)), ("52", (16,)), ("53", (16,)), ("54", (16,)), ("55", (16,)),
                  ("22", (16,)), ("23", (16,)), ("24", (16,)), ("25", (16,)), ("26", (16,)), ("27", (16,)),
                  ("34", (15,)), ("37", (15,)), ("6011", (16, 19)), ("65", (16, 19)), ("35", (16, 19)),
                  ("36", (14,)), ("38", (14,)), ("300", (14,)), ("301", (14,)), ("305", (14,)))


def _card(c: bytes, text: bytes, start: int) -> bool:
    if _after_iban_head(text, start):
        return False
    d = _digits(c)
    if not any(d.startswith(p) and len(d) in lengths for p, lengths in _CARD_PREFIXES):
        return False
    return bool(luhn.is_valid(d))


def _iban_ok(c: bytes, text: bytes, start: int) -> bool:
    return bool(_iban.is_valid(c.decode("ascii", "ignore")))


def _national(c: bytes, text: bytes, start: int) -> bool:
    s = c.decode("ascii", "ignore")
    compact = s.replace(" ", "").replace("-", "").upper()
    if len(compact) == 9 and compact[0].isdigit():
        return bool(_dni.is_valid(compact))
    if len(compact) == 9:
        return bool(_nie.is_valid(compact))
    if len(compact) == 16:
        return bool(_cf.is_valid(compact))
    if len(compact) in (15, 13) and compact[:1] in "12":
        return bool(_nir.is_valid(compact))
    return False


def _national_worded(c: bytes, text: bytes, start: int) -> bool:
    # NHS (UK) and BSN (NL) numbers are bare digits with a check digit: only with their name just before them
    if _NHS_WORDS.search(text[max(0, start - 40):start]) is None:
        return False
    from stdnum.gb import nhs
    from stdnum.nl import bsn

    d = _digits(c)
    return bool(nhs.is_valid(d) if len(d) == 10 else bsn.is_valid(d))


def _ssn_ok(c: bytes, text: bytes, start: int) -> bool:
    return bool(_ssn.is_valid(c.decode("ascii", "ignore")))


def _ipv4(c: bytes, text: bytes, start: int) -> bool:
    if _VERSION_WORDS.search(text[max(0, start - 12):start]) is not None:
        return False
    try:
        ipaddress.IPv4Address(c.decode("ascii"))
    except ValueError:
        return False
    return True


def _ipv6(c: bytes, text: bytes, start: int) -> bool:
    s = c.decode("ascii", "ignore")
    if s.count(":") < 2 or (not any(ch.isalpha() for ch in s) and "::" not in s):
        return False  # "12:30:45" is a time
    try:
        ipaddress.IPv6Address(s)
    except ValueError:
        return False
    return True


def _always(c: bytes, text: bytes, start: int) -> bool:
    return True


def _jwt(c: bytes, text: bytes, start: int) -> bool:
    head = c.split(b".", 1)[0]
    try:
        decoded = json.loads(base64.urlsafe_b64decode(head + b"=" * (-len(head) % 4)))
    except (binascii.Error, ValueError):
        return False
    return isinstance(decoded, dict) and "alg" in decoded


_B = rb"\b"  # RE2 has word boundaries (ASCII) but no look-around; the candidate is always group 1
_E = rb"\b"
SHAPES: tuple[_Shape, ...] = (
    _Shape("email", rb"([A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})*\.[A-Za-z]{2,24})", _email),
    _Shape("phone", rb"(?:^|[^\w+])(\+?\(?\d{1,4}\)?(?:[ .-]?\(?\d{1,4}\)?){2,5})\b", _phone),
    _Shape("credit_card", _B + rb"(\d{4}[ -]?\d{4,6}[ -]?\d{4,5}(?:[ -]?\d{1,4}){0,2})" + _E, _card),
    _Shape("iban", _B + rb"([A-Z]{2}\d{2}(?: ?[A-Z0-9]{1,4}){3,8})" + _E, _iban_ok),
    _Shape("national_id", _B + rb"(\d{8}-?[A-Za-z]|[XYZxyz]-?\d{7}-?[A-Za-z]|[A-Za-z]{6}\d{2}[A-Za-z]\d{2}"
                               rb"[A-Za-z]\d{3}[A-Za-z]|[12] ?\d{2} ?\d{2} ?(?:\d{2}|2[AB]) ?\d{3} ?\d{3}"
                               rb"(?: ?\d{2})?)" + _E, _national),
    _Shape("national_id", _B + rb"(\d{3} ?\d{3} ?\d{4}|\d{9})" + _E, _national_worded),
    _Shape("us_ssn", _B + rb"(\d{3}-\d{2}-\d{4}|\d{3} \d{2} \d{4})" + _E, _ssn_ok),
    _Shape("ip_address", rb"(?:^|[^\w.])((?:\d{1,3}\.){3}\d{1,3})(?:$|[^\w.]|\.(?:$|\s))", _ipv4),
    _Shape("ip_address", rb"(?:^|[^\w:])([0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7})(?:$|[^\w:])", _ipv6),
    # one shape per provider: RE2 scans each in microseconds, while their alternation fell off its DFA (8 ms/100 KB)
    *(_Shape("api_key", p, _always) for p in (
        rb"((?:AKIA|ASIA)[0-9A-Z]{16})\b", rb"(gh[pousr]_[A-Za-z0-9]{36})", rb"(github_pat_[A-Za-z0-9_]{60,})",
        rb"(sk-(?:proj-|ant-[a-z0-9]+-)?[A-Za-z0-9_-]{20,})", rb"(xox[abprs]-[A-Za-z0-9-]{10,})",
        rb"([sr]k_(?:live|test)_[0-9A-Za-z]{16,})", rb"(AIza[0-9A-Za-z_-]{35})", rb"(glpat-[0-9A-Za-z_-]{20})",
    )),
    _Shape("private_key", rb"(-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY( BLOCK)?-----)", _always),
    _Shape("jwt", rb"(eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{8,})", _jwt),
)


class PiiDetector:
    """Finds which kinds of PII and secrets a text holds. Thread-safe; build once per bundle."""

    def __init__(self, kinds: frozenset[str] | None = None) -> None:
        self._shapes = [s for s in SHAPES if kinds is None or s.kind in kinds]
        self._set = re2.Set.SearchSet(_OPTS)
        self._regexes = []
        for s in self._shapes:
            self._set.Add(s.pattern)
            self._regexes.append(re2.compile(s.pattern, _OPTS))
        self._set.Compile()
        # phonenumbers loads each region's metadata on first use (~1 ms): pay that here, not on a request
        for sample in ("+1 415 555 2671", "+44 20 7946 0958", "+49 30 901820", "+33 1 42 68 53 00"):
            phonenumbers.is_valid_number(phonenumbers.parse(sample, None))
        for region in ("US", "GB", "DE", "FR", "ES", "IT", "NL", "IN"):
            phonenumbers.is_valid_number(phonenumbers.parse("0123 456 789", region))

    def detect(self, text: str) -> frozenset[str]:
        """The kinds present in ``text`` (never their values)."""
        return self.detect_bytes(text.encode("utf-8", "surrogatepass"))

    def detect_bytes(self, data: bytes) -> frozenset[str]:
        """``detect`` for text already encoded as UTF-8."""
        present = self._set.Match(data)
        if not present:
            return frozenset()
        found: set[str] = set()
        for i in sorted(present):
            shape = self._shapes[i]
            if shape.kind in found:
                continue
            cap = MAX_PHONE_CANDIDATES if shape.kind == "phone" else MAX_CANDIDATES
            for start, cand in _candidates(self._regexes[i], data, cap):
                if shape.confirm(cand, data, start):
                    found.add(shape.kind)
                    break
        return frozenset(found)


def _candidates(regex: re2._Regexp, data: bytes, cap: int) -> Iterator[tuple[int, bytes]]:
    for n, m in enumerate(regex.finditer(data)):
        if n >= cap:
            return
        yield m.start(1), m.group(1)


def expand(kinds: list[str]) -> frozenset[str]:
    """Kinds a rule names, with groups (``secret``, ``any``) expanded."""
    out: set[str] = set()
    for k in kinds:
        out |= GROUPS.get(k, frozenset({k}))
    return frozenset(out)
