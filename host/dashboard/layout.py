"""The dashboard's page frame: navigation, CSS, and the Content-Security-Policy that forbids every script."""

from __future__ import annotations

from html import escape
from urllib.parse import urlencode

#: Sent with every page: no script, no fetch, no frame; inline CSS and data: images only (the SVG is inline).
CONTENT_SECURITY_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'"

_CSS = """
body { font: 14px/1.45 system-ui, "DejaVu Sans", sans-serif; color: #1a1a1a; margin: 0; background: #fff; }
nav { background: #1f2933; padding: 10px 28px; } nav a { color: #e4e7eb; margin-right: 22px; text-decoration: none; }
nav a.here { color: #fff; font-weight: 600; border-bottom: 2px solid #7cc4fa; }
main { max-width: 1280px; margin: 0 auto; padding: 18px 28px; }
h1 { font-size: 20px; margin: 4px 0 10px; } h2 { font-size: 16px; margin: 22px 0 8px; }
table { border-collapse: collapse; width: 100%; font-size: 13px; font-variant-numeric: tabular-nums; }
th, td { padding: 5px 8px; border-bottom: 1px solid #e6e6e6; text-align: left; vertical-align: top; }
th { background: #f5f7fa; font-weight: 600; } td.num { text-align: right; white-space: nowrap; }
form.filters { display: flex; flex-wrap: wrap; gap: 8px 14px; align-items: end; margin: 0 0 14px; }
form.filters label { display: flex; flex-direction: column; font-size: 12px; color: #555; }
form.filters input, form.filters select { font: inherit; padding: 3px 6px; }
.ok { color: #1b7f3b; } .error { color: #b00020; } .partial { color: #a15c00; } .muted { color: #777; }
.gate { color: #b00020; font-weight: 600; }
.chart { width: 100%; max-width: 960px; height: auto; display: block; }
.chart text { font: 11px system-ui, "DejaVu Sans", sans-serif; fill: #333; }
.chart .axis { font-size: 12px; fill: #111; } .chart .frame { fill: none; stroke: #bbb; }
.chart .grid { stroke: #ececec; }
.caption { color: #666; font-size: 12px; margin: 4px 0 12px; }
code { font-size: 12.5px; background: #f3f3f3; padding: 1px 4px; border-radius: 3px; }
"""

_NAV = (("runs", "/", "Runs"), ("trends", "/trends", "Trends"), ("fleet", "/fleet", "Fleet"))


def page(title: str, body: str, here: str) -> str:
    """A whole page; `title` is escaped here, `body` must already be markup with every stored text escaped."""
    nav = "".join(
        f'<a href="{href}" class="here">{label}</a>' if key == here else f'<a href="{href}">{label}</a>'
        for key, href, label in _NAV
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)} · edgeprof</title><style>{_CSS}</style></head>\n"
        f"<body><nav>{nav}</nav><main>\n{body}\n</main></body></html>\n"
    )


def link(path: str, **query: str) -> str:
    """A dashboard URL with its query string encoded (and the whole of it safe inside an attribute)."""
    wanted = {k: v for k, v in query.items() if v}
    return escape(path + ("?" + urlencode(wanted) if wanted else ""))
