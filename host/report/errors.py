"""The one error every report path raises: its message is the single line the user sees."""

from __future__ import annotations


class ReportError(Exception):
    """A report that cannot be written (unknown format, unwritable path); the message is one line."""
