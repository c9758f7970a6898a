"""What counts as a query with content.

A text is routed only if it holds at least one letter, digit or symbol (Unicode categories L*, N*, S*). Whitespace,
control characters (``\\x00``), format characters (zero-width space, joiners, BOM, bidi marks), marks with nothing
to attach to, and punctuation alone carry no meaning the encoder could route on: such input used to come out as a
confident match (``"\\u200b"`` -> smalltalk, score 0.695), so it is refused like an empty text.
"""

from __future__ import annotations

import unicodedata

_CONTENT = frozenset("LNS")


def has_content(text: str) -> bool:
    """True if ``text`` has a letter, digit or symbol. Ordinary text answers at its first character."""
    return any(unicodedata.category(ch)[0] in _CONTENT for ch in text)


CONTENTLESS = "has no letters, digits or symbols (only whitespace, control, zero-width or punctuation characters)"
