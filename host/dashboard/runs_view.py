"""The runs page: stored runs filtered by model, device, date and status, newest first."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from html import escape
from pathlib import PurePath
from typing import Any

from host.dashboard.layout import link

STATUSES = ("ok", "partial", "error")


class FilterError(ValueError):
    """A filter the page cannot apply (a malformed date): shown as a 400 with this one line."""


@dataclass(frozen=True)
class RunFilter:
    model: str = ""
    device: str = ""
    since: str = ""  # YYYY-MM-DD, inclusive
    until: str = ""  # YYYY-MM-DD, inclusive
    status: str = ""  # "" | ok | partial | error
    limit: int = 200

    @classmethod
    def from_query(cls, query: dict[str, list[str]]) -> RunFilter:
        def one(name: str) -> str:
            return (query.get(name) or [""])[0].strip()

        for name in ("since", "until"):
            if one(name):
                try:
                    dt.date.fromisoformat(one(name))
                except ValueError as err:
                    raise FilterError(f"'{name}' must be a date like 2026-03-01, not '{one(name)}'") from err
        status = one("status")
        if status and status not in STATUSES:
            raise FilterError(f"'status' must be one of {', '.join(STATUSES)}, not '{status}'")
        limit = one("limit") or "200"
        if not limit.isdigit() or not 1 <= int(limit) <= 5000:
            raise FilterError("'limit' must be a number from 1 to 5000")
        return cls(one("model"), one("device"), one("since"), one("until"), status, int(limit))

    def until_exclusive(self) -> str:
        """`until` as the store's exclusive upper bound (the next day), or "" for none."""
        return (dt.date.fromisoformat(self.until) + dt.timedelta(days=1)).isoformat() if self.until else ""

    def matches(self, doc: dict[str, Any]) -> bool:
        if self.model and self.model.lower() not in model_name(doc).lower():
            return False
        devices = [str(d.get("device", "")) for d in doc.get("devices") or []]
        if self.device and not any(self.device.lower() in d.lower() for d in devices):
            return False
        return not self.status or run_status(doc) == self.status


def model_name(doc: dict[str, Any]) -> str:
    """The model's file name (`mobilenet_v2.onnx`): what a trend groups runs by."""
    path = str((doc.get("model") or {}).get("path", "?"))
    return PurePath(path).name or path


def run_status(doc: dict[str, Any]) -> str:
    devices = doc.get("devices") or []
    ok = sum(1 for d in devices if d.get("status") == "ok")
    return "ok" if devices and ok == len(devices) else "error" if ok == 0 else "partial"


def _device_cell(doc: dict[str, Any]) -> str:
    cells = []
    for d in doc.get("devices") or []:
        name = str(d.get("device", "?"))
        p50 = (d.get("latency_ms") or {}).get("p50")
        figure = f" {p50:.3g} ms" if d.get("status") == "ok" and isinstance(p50, int | float) else ""
        if figure and d.get("latency_source") == "block_means":
            figure += " (median of block means)"
        trend = link("/trend", model=model_name(doc), device=name)
        cls = "ok" if d.get("status") == "ok" else "error"
        title = f' title="{escape(str(d.get("error") or ""))}"' if d.get("error") else ""
        cells.append(f'<a href="{trend}" class="{cls}"{title}>{escape(name)}</a>{escape(figure)}')
    return "<br>".join(cells) or '<span class="muted">none</span>'


def _select(name: str, current: str, options: tuple[str, ...]) -> str:
    opts = "".join(
        f'<option value="{o}"{" selected" if o == current else ""}>{o or "any"}</option>' for o in ("", *options)
    )
    return f'<label>{name}<select name="{name}">{opts}</select></label>'


def render_runs(docs: list[dict[str, Any]], pending_run_ids: set[str], where: RunFilter, store_name: str) -> str:
    shown = [doc for doc in docs if where.matches(doc)]
    fields = "".join(
        f'<label>{label}<input name="{name}" value="{escape(getattr(where, name))}"{extra}></label>'
        for name, label, extra in (
            ("model", "model", ' placeholder="name contains"'),
            ("device", "device", ' placeholder="name contains"'),
            ("since", "since", ' type="date"'),
            ("until", "until", ' type="date"'),
        )
    )
    form = (
        f'<form class="filters" method="get" action="/">{fields}{_select("status", where.status, STATUSES)}'
        '<button type="submit">filter</button> <a href="/">clear</a></form>'
    )
    rows = []
    for doc in shown:
        run_id = str(doc.get("run_id", "?"))
        status = run_status(doc)
        validity = [r for d in doc.get("devices") or [] for r in ((d.get("validity") or {}).get("reasons") or [])]
        devices = doc.get("devices") or []
        n_ok = sum(1 for d in devices if d.get("status") == "ok")
        pending = (
            ' <span class="partial" title="jobs still to collect">pending</span>' if run_id in pending_run_ids else ""
        )
        rows.append(
            f'<tr><td><a href="{link("/runs/" + run_id)}"><code>{escape(run_id)}</code></a></td>'
            f"<td>{escape(str(doc.get('created_at', ''))[:19].replace('T', ' '))}</td>"
            f'<td><a href="{link("/trends", model=model_name(doc))}">{escape(model_name(doc))}</a></td>'
            f'<td class="num {status}">{n_ok}/{len(devices)}{pending}</td><td>{_device_cell(doc)}</td>'
            f'<td class="muted">{escape("; ".join(str(r) for r in validity)[:200])}</td></tr>'
        )
    table = (
        "<table><tr><th>run</th><th>created (UTC)</th><th>model</th><th>ok</th><th>devices · p50</th>"
        "<th>validity</th></tr>" + "".join(rows) + "</table>"
        if rows
        else '<p class="muted">no runs match these filters.</p>'
    )
    return (
        f'<h1>Runs</h1>{form}<p class="caption">{len(shown)} of the {len(docs)} newest runs in '
        f"<code>{escape(store_name)}</code>; a device links to its trend, a run to its report.</p>{table}"
    )
