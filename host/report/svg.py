"""Inline SVG charts drawn in Python (no JavaScript, no network): axes, lines, bands, bars, points.

Every series is reduced to what a ~700-pixel-wide chart can show before it becomes markup, so 10
devices x 10,000 inferences stay a few hundred kilobytes and render in milliseconds.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

import numpy as np

#: Colour-blind-safe palette (Okabe-Ito), one colour per device in device order.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442", "#882255", "#44AA99")
#: Phase shading on time plots.
PHASE_FILL = {"idle": "#d9d9d9", "warmup": "#fde2b8", "measure": "#d4ecd9"}

WIDTH = 720
HEIGHT = 260
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 16, 26, 40
#: Clip-path ids must be unique within one page.
_clip_ids = itertools.count()


def colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values covering [lo, hi] (1, 2, 5 x 10^k steps)."""
    if not math.isfinite(lo) or not math.isfinite(hi) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(count, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _fmt_tick(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000 or abs(value) < 0.01:
        return f"{value:.3g}"
    return f"{value:.6g}" if value == round(value) else f"{value:.4g}"


def minmax_downsample(x: np.ndarray, y: np.ndarray, buckets: int = 600) -> tuple[np.ndarray, np.ndarray]:
    """Keep each bucket's first, min, max and last point (in x order) so spikes survive downsampling."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.size <= buckets * 4:
        return x, y
    edges = np.linspace(0, x.size, buckets + 1).astype(np.int64)
    keep = np.zeros(x.size, dtype=bool)
    keep[edges[:-1]] = True
    keep[edges[1:] - 1] = True
    # argmin/argmax per equal-count bucket: trim to a multiple of the bucket size, then reshape.
    size = x.size // buckets
    body = y[: size * buckets].reshape(buckets, size)
    offsets = np.arange(buckets) * size
    keep[offsets + body.argmin(axis=1)] = True
    keep[offsets + body.argmax(axis=1)] = True
    keep[size * buckets :] = True
    return x[keep], y[keep]


def merge_windows(start: np.ndarray, end: np.ndarray, min_gap: float) -> tuple[np.ndarray, np.ndarray]:
    """Merge [start, end] windows whose gaps are shorter than ``min_gap`` (less than a pixel apart)."""
    if start.size == 0:
        return start, end
    order = np.argsort(start, kind="stable")
    s, e = start[order], np.maximum.accumulate(end[order])
    breaks = np.flatnonzero(s[1:] - e[:-1] > min_gap)
    first = np.concatenate(([0], breaks + 1))
    last = np.concatenate((breaks, [s.size - 1]))
    return s[first], e[last]


@dataclass
class Chart:
    """One plot area with linear (or log-x) axes; elements are appended as SVG markup."""

    x_range: tuple[float, float]
    y_range: tuple[float, float]
    x_label: str
    y_label: str
    title: str
    log_x: bool = False
    width: int = WIDTH
    height: int = HEIGHT
    parts: list[str] = field(default_factory=list)
    legend: list[tuple[str, str]] = field(default_factory=list)
    #: (x, label) ticks of the x axis in place of round numbers (a time axis labelled with dates).
    x_ticks: list[tuple[float, str]] | None = None

    def __post_init__(self) -> None:
        lo, hi = self.x_range
        if self.log_x:
            lo, hi = math.log10(max(lo, 1e-12)), math.log10(max(hi, 1e-12))
        if hi <= lo:
            hi = lo + 1.0
        self._x = (lo, hi)
        ylo, yhi = self.y_range
        self._y = (ylo, yhi if yhi > ylo else ylo + 1.0)

    @property
    def plot_w(self) -> int:
        return self.width - _LEFT - _RIGHT

    @property
    def plot_h(self) -> int:
        return self.height - _TOP - _BOTTOM

    def px(self, x: np.ndarray | float) -> np.ndarray:
        v = np.asarray(x, dtype=np.float64)
        if self.log_x:
            v = np.log10(np.maximum(v, 1e-12))
        return np.asarray(_LEFT + (v - self._x[0]) / (self._x[1] - self._x[0]) * self.plot_w)

    def py(self, y: np.ndarray | float) -> np.ndarray:
        v = np.asarray(y, dtype=np.float64)
        return np.asarray(_TOP + self.plot_h - (v - self._y[0]) / (self._y[1] - self._y[0]) * self.plot_h)

    def band(self, x0: float, x1: float, fill: str, label: str | None = None) -> None:
        """A full-height shaded span (a phase), with its name at the top."""
        a, b = float(self.px(x0)), float(self.px(x1))
        a, b = max(a, _LEFT), min(b, _LEFT + self.plot_w)
        if b <= a:
            return
        self.parts.append(f'<rect x="{a:.1f}" y="{_TOP}" width="{b - a:.1f}" height="{self.plot_h}" fill="{fill}"/>')
        if label and b - a > 30:
            self.parts.append(f'<text x="{a + 3:.1f}" y="{_TOP + 11}" class="band">{escape(label)}</text>')

    def strip(self, starts: np.ndarray, ends: np.ndarray, fill: str, label: str) -> None:
        """Windows (inference windows) as a thin strip along the bottom of the plot area."""
        data_per_px = (self._x[1] - self._x[0]) / self.plot_w
        s, e = merge_windows(np.asarray(starts, dtype=np.float64), np.asarray(ends, dtype=np.float64), data_per_px)
        a, b = self.px(s), np.maximum(self.px(e), self.px(s) + 0.6)
        y = _TOP + self.plot_h - 7
        rects = "".join(
            f'<rect x="{x0:.1f}" y="{y}" width="{x1 - x0:.1f}" height="6"/>' for x0, x1 in zip(a, b, strict=True)
        )
        self.parts.append(f'<g fill="{fill}" class="windows">{rects}</g>')
        self.legend.append((fill, label))

    def shade_dominant(self, kinds: Sequence[tuple[np.ndarray, np.ndarray, str, str]]) -> None:
        """Shade each pixel column, full height, in the colour of the kind of window (starts, ends, fill, label)
        that covers most of its time; columns no window touches stay clear. Honest at any zoom: windows far
        shorter than a pixel (a tiny model's prefill) still show where they took most of the time, and
        thousands of windows become a few run-length rectangles."""
        edges = self._x[0] + (self._x[1] - self._x[0]) * np.arange(self.plot_w + 1) / self.plot_w
        covered = []
        for starts, ends, _, _ in kinds:
            s = np.asarray(starts, dtype=np.float64)[:, None]
            length = np.maximum(np.asarray(ends, dtype=np.float64)[:, None] - s, 0.0)
            # time covered before each edge, summed over windows; its differences are each column's share
            before = np.clip(edges[None, :] - s, 0.0, length).sum(axis=0) if s.size else np.zeros(edges.size)
            covered.append(np.diff(before))
        if not covered:
            return
        share = np.vstack(covered)
        winner = np.where(share.max(axis=0) > 0, share.argmax(axis=0), -1)
        change = np.flatnonzero(np.diff(winner)) + 1
        run_starts = np.concatenate(([0], change))
        run_ends = np.concatenate((change, [winner.size]))
        for k, (_, _, fill, label) in enumerate(kinds):
            rects = "".join(
                f'<rect x="{_LEFT + a}" y="{_TOP}" width="{b - a}" height="{self.plot_h}"/>'
                for a, b in zip(run_starts, run_ends, strict=True)
                if winner[a] == k
            )
            self.parts.append(f'<g fill="{fill}" class="shade">{rects}</g>')
            self.legend.append((fill, label))

    def line(self, x: np.ndarray, y: np.ndarray, stroke: str, label: str | None = None, step: bool = False) -> None:
        xs, ys = minmax_downsample(np.asarray(x), np.asarray(y))
        if xs.size == 0:
            return
        px, py = self.px(xs), self.py(ys)
        if step and px.size > 1:
            px = np.repeat(px, 2)[1:]
            py = np.repeat(py, 2)[:-1]
        points = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(px, py, strict=True))
        self.parts.append(f'<polyline fill="none" stroke="{stroke}" stroke-width="1.6" points="{points}"/>')
        if label:
            self.legend.append((stroke, label))

    def bars(self, edges: np.ndarray, heights: np.ndarray, fill: str) -> None:
        x0, x1, top = self.px(edges[:-1]), self.px(edges[1:]), self.py(heights)
        base = float(self.py(self._y[0]))
        rects = "".join(
            f'<rect x="{a:.1f}" y="{t:.1f}" width="{max(b - a - 0.5, 0.5):.1f}" height="{base - t:.1f}"/>'
            for a, b, t in zip(x0, x1, top, strict=True)
            if base - t > 0
        )
        self.parts.append(f'<g fill="{fill}" class="bars">{rects}</g>')

    def vline(self, x: float, stroke: str, label: str) -> None:
        a = float(self.px(x))
        self.parts.append(
            f'<line x1="{a:.1f}" x2="{a:.1f}" y1="{_TOP}" y2="{_TOP + self.plot_h}" stroke="{stroke}" '
            f'stroke-dasharray="4 3"/><text x="{a + 3:.1f}" y="{_TOP + 24}" class="note">{escape(label)}</text>'
        )

    def point(self, x: float, y: float, fill: str, label: str, ring: bool = False) -> None:
        a, b = float(self.px(x)), float(self.py(y))
        stroke = ' stroke="#000" stroke-width="2"' if ring else ""
        self.parts.append(
            f'<circle cx="{a:.1f}" cy="{b:.1f}" r="6" fill="{fill}"{stroke}><title>{escape(label)}</title></circle>'
            f'<text x="{a + 9:.1f}" y="{b + 4:.1f}" class="note">{escape(label)}</text>'
        )

    def _axes(self) -> str:
        out = [f'<rect x="{_LEFT}" y="{_TOP}" width="{self.plot_w}" height="{self.plot_h}" class="frame"/>']
        if self.x_ticks is not None:
            labelled = list(self.x_ticks)
        elif self.log_x:
            lo, hi = self._x
            ticks = [10.0**k * m for k in range(math.floor(lo), math.ceil(hi) + 1) for m in (1, 2, 5)]
            labelled = [(t, _fmt_tick(t)) for t in ticks if lo - 1e-9 <= math.log10(t) <= hi + 1e-9]
        else:
            labelled = [(t, _fmt_tick(t)) for t in nice_ticks(*self._x)]
        for t, text in labelled:
            a = float(self.px(t))
            out.append(
                f'<line x1="{a:.1f}" x2="{a:.1f}" y1="{_TOP}" y2="{_TOP + self.plot_h}" class="grid"/>'
                f'<text x="{a:.1f}" y="{_TOP + self.plot_h + 14}" class="tick" text-anchor="middle">'
                f"{escape(text)}</text>"
            )
        for t in nice_ticks(*self._y):
            b = float(self.py(t))
            out.append(
                f'<line x1="{_LEFT}" x2="{_LEFT + self.plot_w}" y1="{b:.1f}" y2="{b:.1f}" class="grid"/>'
                f'<text x="{_LEFT - 5}" y="{b + 4:.1f}" class="tick" text-anchor="end">{_fmt_tick(t)}</text>'
            )
        out.append(
            f'<text x="{_LEFT + self.plot_w / 2:.0f}" y="{self.height - 6}" class="axis" '
            f'text-anchor="middle">{escape(self.x_label)}</text>'
        )
        out.append(
            f'<text transform="translate(14 {_TOP + self.plot_h / 2:.0f}) rotate(-90)" class="axis" '
            f'text-anchor="middle">{escape(self.y_label)}</text>'
        )
        return "".join(out)

    def _legend(self) -> str:
        out, x = [], _LEFT
        y = _TOP - 8
        for fill, label in self.legend:
            out.append(
                f'<rect x="{x}" y="{y - 9}" width="10" height="10" fill="{fill}"/>'
                f'<text x="{x + 14}" y="{y}" class="note">{escape(label)}</text>'
            )
            x += 24 + 7 * len(label)
        return f'<g class="legend">{"".join(out)}</g>' if out else ""

    def render(self) -> str:
        """The chart as an inline <svg> element (scales with the page, keeps its aspect ratio)."""
        clip = f"clip{next(_clip_ids)}"
        return (
            f'<svg class="chart" viewBox="0 0 {self.width} {self.height}" role="img" '
            f'aria-label="{escape(self.title)}" xmlns="http://www.w3.org/2000/svg">'
            f"<title>{escape(self.title)}</title>"
            f'<clipPath id="{clip}"><rect x="{_LEFT}" y="{_TOP}" width="{self.plot_w}" height="{self.plot_h}"/>'
            f"</clipPath>{self._axes()}"
            f'<g clip-path="url(#{clip})">{"".join(self.parts)}</g>{self._legend()}</svg>'
        )


def padded_range(values: Sequence[float] | np.ndarray, from_zero: bool = False) -> tuple[float, float]:
    """[min, max] of the finite values with 5% headroom; (0, 1) when there are none."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return (0.0, 1.0)
    lo, hi = float(v.min()), float(v.max())
    if from_zero:
        lo = min(lo, 0.0)
    pad = (hi - lo) * 0.05 or abs(hi) * 0.05 or 1.0
    return (lo if from_zero else lo - pad, hi + pad)
