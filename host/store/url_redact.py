"""Database URLs shown without their passwords: in `runs ls`, `runs import`, the dashboard's footer, errors.

A PostgreSQL URL may carry its password as `user:pass@`, with an unencoded '@', '/' or '?' in it (libpq then
splits at the first '@' and may quote the rest as a host name in its error), or as `?password=…`. Every form
is redacted, and errors quoting the URL are scrubbed of each piece that may be the password.
"""

from __future__ import annotations

import re

__all__ = ["looks_like_url", "redact", "scrub"]

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
#: `password=…` in a query string or a key/value conninfo, up to the next parameter (or a quoted value).
_PASSWORD_PARAM = re.compile(r"(?i)(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|[^&\s]*)")


def _secrets(url: str) -> list[str]:
    """Every piece of `url` that may be a password: the userinfo's (up to the LAST '@', since users leave '@'
    unencoded in passwords) and every password= value, with their '@'-separated parts (libpq splits at the
    first '@', and may echo the rest as a host name in its error)."""
    found: list[str] = []
    scheme = _SCHEME.match(url)
    rest = url[scheme.end() :] if scheme else ""
    if "@" in rest:
        userinfo = rest[: rest.rfind("@")]
        if ":" in userinfo:
            found.append(userinfo.partition(":")[2])
    found += [m.group(2).strip("'") for m in _PASSWORD_PARAM.finditer(url)]
    pieces = [part for secret in found for part in secret.split("@")]
    return sorted({s for s in found + pieces if len(s) >= 3} | {s for s in found if s}, key=len, reverse=True)


def redact(url: str) -> str:
    """The URL with its password replaced by *** in any form libpq reads: `user:pass@`, a password holding an
    unencoded '@' (or '/', '?'), `?password=…`, `password=…` in key/value form (`postgresql://ci:***@db/x`)."""
    shown = _PASSWORD_PARAM.sub(r"\1***", url)
    scheme = _SCHEME.match(shown)
    if scheme:
        rest = shown[scheme.end() :]
        at = rest.rfind("@")
        if at >= 0 and ":" in rest[:at]:
            user = rest[:at].partition(":")[0]
            shown = f"{scheme.group(0)}{user}:***@{rest[at + 1 :]}"
    return scrub(shown, url)


def scrub(text: str, url: str) -> str:
    """`text` (a message that may quote the URL, or a host name libpq took from it) without its secrets."""
    for secret in _secrets(url):
        text = text.replace(secret, "***")
    return text


def looks_like_url(target: str) -> bool:
    """`scheme://…`: a URL, not a file path."""
    return bool(_SCHEME.match(target))
