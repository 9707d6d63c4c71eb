"""Just enough SQL lexing to find where statements start, for pointing at the line that failed.

It knows quoted strings and identifiers, ``E''`` escapes, dollar quoting and both comment styles;
it does not parse SQL. It is only used after PostgreSQL has already rejected a file.
"""

from __future__ import annotations

import re

_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")


def line_of_offset(text: str, offset: int) -> int:
    """The 1-based line of ``text`` holding character ``offset``."""
    return text.count("\n", 0, max(0, min(offset, len(text)))) + 1


def split_statements(script: str) -> list[tuple[int, str]]:
    """Split ``script`` at top-level semicolons; return ``(offset, statement)`` pairs.

    Statements that hold only whitespace and comments are left out.
    """
    statements: list[tuple[int, str]] = []
    start = 0
    index = 0
    length = len(script)
    while index < length:
        char = script[index]
        if char == ";":
            _keep(statements, script, start, index)
            start = index + 1
            index += 1
        elif script.startswith("--", index):
            newline = script.find("\n", index)
            index = length if newline < 0 else newline + 1
        elif script.startswith("/*", index):
            index = _skip_block_comment(script, index)
        elif char in "'\"":
            escapes = char == "'" and index > 0 and script[index - 1] in "eE"
            index = _skip_quoted(script, index, char, escapes)
        elif char == "$" and (match := _DOLLAR_TAG.match(script, index)):
            closing = script.find(match.group(0), match.end())
            index = length if closing < 0 else closing + len(match.group(0))
        else:
            index += 1
    _keep(statements, script, start, length)
    return statements


def code_start(text: str) -> int:
    """Offset of the first character of ``text`` that is neither white space nor a comment."""
    index = 0
    while index < len(text):
        if text[index].isspace():
            index += 1
        elif text.startswith("--", index):
            newline = text.find("\n", index)
            index = len(text) if newline < 0 else newline + 1
        elif text.startswith("/*", index):
            index = _skip_block_comment(text, index)
        else:
            return index
    return index


def _keep(statements: list[tuple[int, str]], script: str, start: int, end: int) -> None:
    text = script[start:end]
    if code_start(text) < len(text):
        statements.append((start, text))


def _skip_block_comment(script: str, index: int) -> int:
    """Block comments nest in PostgreSQL."""
    depth = 0
    while index < len(script):
        if script.startswith("/*", index):
            depth += 1
            index += 2
        elif script.startswith("*/", index):
            depth -= 1
            index += 2
            if depth == 0:
                return index
        else:
            index += 1
    return index


def _skip_quoted(script: str, index: int, quote: str, escapes: bool) -> int:
    index += 1
    while index < len(script):
        char = script[index]
        if escapes and char == "\\":
            index += 2
        elif char == quote:
            if script.startswith(quote * 2, index):
                index += 2
            else:
                return index + 1
        else:
            index += 1
    return index
