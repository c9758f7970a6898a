"""Rule conditions compiled for one pass over the text.

Every ``regex`` condition and every ``keywords`` list becomes one pattern of a single RE2 set: one linear scan of
the text says which of them match, and each condition then reads its answer from that set. RE2 never backtracks,
so a hostile text costs time linear in its length whatever the patterns. Keywords match case-insensitively as
whole words (ASCII word boundaries, as RE2 defines them).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import re2

from .pii import expand
from .schema import POST_KEYS, Condition

OPTIONS = re2.Options()
OPTIONS.log_errors = False


@dataclass(frozen=True)
class Facts:
    """What conditions read. ``matched``: ids of the RE2 set's patterns found in the text."""

    chars: int
    tokens: int
    matched: frozenset[int]
    tenant: str
    tier: str
    labels: Mapping[str, str]
    pii: frozenset[str]
    route: str | None = None  # post-semantic only
    confidence: float | None = None


Test = Callable[[Facts], bool]


def keyword_pattern(words: list[str]) -> str:
    alts = "|".join(re2.escape(w.strip()) for w in sorted(set(words), key=len, reverse=True))
    # (?:^|\W) rather than \b so keywords that start or end with punctuation ("c++", ".net") still match
    return rf"(?i)(?:^|[^\w])(?:{alts})(?:$|[^\w])"


def check_regex(pattern: str) -> str | None:
    """RE2's complaint about ``pattern``, or None when it compiles."""
    try:
        re2.compile(pattern.encode("utf-8"), OPTIONS)
    except re2.error as e:
        msg = e.args[0] if e.args else e
        return msg.decode("utf-8", "replace") if isinstance(msg, bytes) else str(msg)
    return None


class PatternSet:
    """The RE2 set shared by all conditions of one policy."""

    def __init__(self) -> None:
        self._patterns: list[bytes] = []
        self._ids: dict[bytes, int] = {}
        self._set: re2.Set | None = None

    def add(self, pattern: str) -> int:
        key = pattern.encode("utf-8")
        if key not in self._ids:
            self._ids[key] = len(self._patterns)
            self._patterns.append(key)
        return self._ids[key]

    def compile(self) -> None:
        if not self._patterns:
            return
        s = re2.Set.SearchSet(OPTIONS)
        for p in self._patterns:
            s.Add(p)
        s.Compile()
        self._set = s

    def match(self, data: bytes) -> frozenset[int]:
        if self._set is None:
            return frozenset()
        return frozenset(self._set.Match(data) or ())  # None when nothing matched

    def __len__(self) -> int:
        return len(self._patterns)


def reads_post(c: Condition) -> bool:
    """Whether a condition needs the semantic step's result (route or confidence)."""
    if any(getattr(c, k) is not None for k in POST_KEYS):
        return True
    subs = [*(c.all or []), *(c.any or []), *([c.not_] if c.not_ is not None else [])]
    return any(reads_post(s) for s in subs)


def compile_condition(c: Condition, patterns: PatternSet) -> Test:
    """A function of Facts that is true when the condition holds (every key of the mapping holds)."""
    tests: list[Test] = []
    if c.regex is not None:
        i = patterns.add(c.regex)
        tests.append(lambda f: i in f.matched)
    if c.keywords is not None:
        k = patterns.add(keyword_pattern(c.keywords))
        tests.append(lambda f: k in f.matched)
    if c.tokens is not None:
        tests.append(_length("tokens", c.tokens.min, c.tokens.max))
    if c.chars is not None:
        tests.append(_length("chars", c.chars.min, c.chars.max))
    if c.tenant is not None:
        tenants = frozenset(c.tenant)
        tests.append(lambda f: f.tenant in tenants)
    if c.tier is not None:
        tiers = frozenset(c.tier)
        tests.append(lambda f: f.tier in tiers)
    if c.labels is not None:
        wanted = {k: (None if v == "*" else frozenset([v] if isinstance(v, str) else v))
                  for k, v in c.labels.items()}
        tests.append(lambda f: all(k in f.labels and (vs is None or f.labels[k] in vs) for k, vs in wanted.items()))
    if c.pii is not None:
        kinds = expand(c.pii)
        tests.append(lambda f: not kinds.isdisjoint(f.pii))
    if c.route is not None:
        routes = frozenset(c.route)
        tests.append(lambda f: f.route in routes)
    if c.confidence_below is not None:
        lo = c.confidence_below
        tests.append(lambda f: f.confidence is not None and f.confidence < lo)
    if c.confidence_at_least is not None:
        hi = c.confidence_at_least
        tests.append(lambda f: f.confidence is not None and f.confidence >= hi)
    if c.all is not None:
        subs = [compile_condition(s, patterns) for s in c.all]
        tests.append(lambda f: all(t(f) for t in subs))
    if c.any is not None:
        alts = [compile_condition(s, patterns) for s in c.any]
        tests.append(lambda f: any(t(f) for t in alts))
    if c.not_ is not None:
        neg = compile_condition(c.not_, patterns)
        tests.append(lambda f: not neg(f))
    if len(tests) == 1:
        return tests[0]
    return lambda f: all(t(f) for t in tests)


def _length(attr: str, lo: int | None, hi: int | None) -> Test:
    def test(f: Facts) -> bool:
        n: int = getattr(f, attr)
        return (lo is None or n >= lo) and (hi is None or n <= hi)

    return test


Gate = tuple[str, object]  # ("pattern", id) | ("label", key) | ("tenant", frozenset of tenants)


def gate(c: Condition, patterns: PatternSet) -> Gate | None:
    """Something the request must have for the condition to hold, cheap to index by: one of its patterns found in
    the text, a label key present, or its tenant among some. None: no such necessary part (evaluate it always).
    The engine evaluates only rules whose gate is open, so hundreds of rules that cannot fire cost nothing."""
    if c.regex is not None:
        return ("pattern", patterns.add(c.regex))
    if c.keywords is not None:
        return ("pattern", patterns.add(keyword_pattern(c.keywords)))
    if c.labels is not None:
        return ("label", next(iter(c.labels)))
    if c.tenant is not None:
        return ("tenant", frozenset(c.tenant))
    for sub in c.all or []:  # every member of an 'all' must hold: any member's gate is the whole's
        g = gate(sub, patterns)
        if g is not None:
            return g
    return None
