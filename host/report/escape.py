"""Agent-supplied text made inert for each output: Markdown, CSV (spreadsheets), the terminal, rich markup.

Device names, errors, runtimes, op types, phase details and validity reasons all come from agents or from
documents imported from elsewhere. Each format has its own way to turn text into code: HTML tags and
links in Markdown, formulas in spreadsheets, escape sequences on a terminal, `[style]` in rich. HTML is
escaped with `html.escape` where it is written (host/report/html.py).
"""

from __future__ import annotations

import html
import re
from typing import Any

#: Terminal escape sequences: CSI (ESC [ … final), OSC (ESC ] … BEL or ST), DCS/SOS/PM/APC strings, and
#: two-byte ESC sequences; plus their 8-bit C1 forms (CSI 0x9b, OSC 0x9d).
_ESCAPE_SEQUENCE = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"
    r"|\x1b\][^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[PX^_][^\x1b\x9c]*(?:\x1b\\|\x9c)?"
    r"|\x1b[ -/]*[0-~]"
    r"|\x9b[0-?]*[ -/]*[@-~]"
    r"|\x9d[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
)
#: C0 and C1 control characters, DEL, and the bidirectional overrides that reorder what a reader sees.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_WHITESPACE_CONTROLS = {"\n": " ", "\r": " ", "\t": " "}
#: Inline Markdown syntax (CommonMark + GitHub tables, strikethrough), backslash-escaped: code, emphasis,
#: link/image brackets, table pipes. `#`, `-`, `+`, `1.` only act at the start of a line, and the text
#: never starts one (newlines become spaces); `<` and `&` are HTML-escaped.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]|~])")
#: Spreadsheets run a cell that starts with one of these as a formula (OWASP CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _controls_visible(match: re.Match[str]) -> str:
    char = match.group()
    return _WHITESPACE_CONTROLS.get(char) or f"\\u{ord(char):04x}"


def terminal_text(value: Any) -> str:
    """One line safe to print: escape sequences removed, other control characters shown as \\uXXXX."""
    text = _ESCAPE_SEQUENCE.sub("", str(value))
    return _CONTROL.sub(_controls_visible, text)


def rich_text(value: Any) -> str:
    """terminal_text with rich's markup (`[red]`, `[link=…]`) escaped, for a rich table cell or title."""
    from rich.markup import escape

    return escape(terminal_text(value))


def markdown_text(value: Any) -> str:
    """Inline Markdown that shows ``value`` as plain text: no HTML, links, emphasis, code, table cells or lines."""
    text = html.escape(terminal_text(value), quote=False)
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def markdown_html_text(value: Any) -> str:
    """Text inside a raw HTML line of a Markdown document (`<summary>…`), where backslashes are literal."""
    return html.escape(terminal_text(value))


def markdown_code(value: Any) -> str:
    """``value`` as an inline code span: the fence is one backtick longer than any run inside it."""
    text = terminal_text(value)
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def csv_cell(text: str) -> str:
    """A CSV cell a spreadsheet shows as text: a leading apostrophe where it would start a formula."""
    return "'" + text if text.startswith(_FORMULA_START) else text
