"""A statement's shape: its text with literals and parameters taken out.

Two statements of one shape differ only in the values they carry: ``SELECT ... WHERE id = 1``
and ``... WHERE id = 2``, or the same with ``%s``, ``%(id)s`` or ``$1``. One shape sent once per row
of an earlier result is the N+1 pattern; a list of values (``IN (1, 2, 3)``, an ``ANY`` of an array)
collapses to one, so one ``selectinload`` query for 3 or 300 parents is one shape, sent once.
"""

from __future__ import annotations

import functools
import re

_PATTERNS = [
    (re.compile(r"--[^\n]*"), " "),  # comments
    (re.compile(r"/\*.*?\*/", re.S), " "),
    (re.compile(r"(?:[EeBbXxUu]&?)?'(?:[^']|'')*'"), "?"),  # string literals
    (re.compile(r"\$([A-Za-z_]\w*)?\$.*?\$\1\$", re.S), "?"),  # dollar-quoted strings
    (re.compile(r"%\(\w+\)s|%[sbt]|\$\d+|\?"), "?"),  # parameters, in every driver's style
    (re.compile(r"(?<![\w.\"])-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?\b"), "?"),  # numbers
    (re.compile(r"\s+"), " "),
]
_LIST = re.compile(r"\(\s*\?(?:\s*,\s*\?)+\s*\)")  # (?, ?, ?) -> (?)
_ARRAY = re.compile(r"ARRAY\[\s*\?(?:\s*,\s*\?)*\s*\]", re.I)


@functools.lru_cache(maxsize=4096)  # a suite sends the same few hundred texts again and again
def shape(sql: str) -> str:
    """``sql`` without its values, in one line: equal for statements that differ only in them."""
    text = sql
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    text = _ARRAY.sub("ARRAY[?]", _LIST.sub("(?)", text))
    return text.strip()
