"""How deeply a JSON text nests, found without parsing it.

Python's ``json`` module recurses once per ``[`` or ``{``: 100,000 of them raise
``RecursionError`` (a 500) in whichever parser meets the body first. The services check the
depth of every request body before anything parses it (``hecht/web.py``), with one linear
scan that counts brackets outside strings and stops as soon as the limit is passed.
"""
from __future__ import annotations

import re

# A complete JSON string (possessive: no backtracking), and every byte that is not a bracket.
_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_OPENERS = (0x5B, 0x7B)  # [ {


def exceeds(body: bytes, limit: int) -> bool:
    """True when ``body`` opens more than ``limit`` arrays or objects inside each other.

    Brackets inside strings do not count (an escaped quote does not end a string). Linear in
    ``len(body)``; a body with at most ``limit`` brackets in all is answered without scanning.
    A parser stops where the text stops being JSON, so the scan does too: at a closing
    bracket with nothing open, or at a string that never ends.
    """
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    depth = 0
    pos, end = 0, len(body)
    while pos < end:
        quote = body.find(b'"', pos)
        outside = body[pos:] if quote < 0 else body[pos:quote]
        for c in outside.translate(None, _NOT_BRACKETS):
            if c in _OPENERS:
                depth += 1
                if depth > limit:
                    return True
            else:
                depth -= 1
                if depth < 0:
                    return False
        if quote < 0:
            return False
        string = _STRING.match(body, quote)
        if string is None:
            return False
        pos = string.end()
    return False
