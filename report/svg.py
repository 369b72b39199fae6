"""Line charts as inline SVG strings: min/max decimation per pixel column keeps spikes visible."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape


@dataclass(frozen=True)
class Frame:
    """A plot area in pixels and the data ranges it maps."""

    left: float
    top: float
    width: float
    height: float
    t0: float
    t1: float
    y0: float
    y1: float

    def x(self, t: float) -> float:
        span = self.t1 - self.t0 or 1.0
        return self.left + (t - self.t0) / span * self.width

    def y(self, v: float) -> float:
        span = self.y1 - self.y0 or 1.0
        clipped = min(max(v, self.y0), self.y1)
        return self.top + self.height - (clipped - self.y0) / span * self.height


def decimate(
    ts: Sequence[float], vs: Sequence[float], frame: Frame, columns: int
) -> list[tuple[float, float]]:
    """At most two points (min, max) per pixel column, in time order."""
    if not ts:
        return []
    buckets: dict[int, tuple[int, int]] = {}
    for i, t in enumerate(ts):
        col = min(columns - 1, int((frame.x(t) - frame.left) / max(frame.width, 1.0) * columns))
        lo, hi = buckets.get(col, (i, i))
        buckets[col] = (i if vs[i] < vs[lo] else lo, i if vs[i] > vs[hi] else hi)
    points = []
    for col in sorted(buckets):
        for i in sorted(set(buckets[col])):
            points.append((frame.x(ts[i]), frame.y(vs[i])))
    return points


def polyline(points: list[tuple[float, float]], css_class: str) -> str:
    coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    return f'<polyline class="{css_class}" fill="none" points="{coords}"/>'


def nice_range(
    values: Sequence[float], *, floor: float | None = None, ceiling: float | None = None
) -> tuple[float, float]:
    finite = [v for v in values if math.isfinite(v)]
    lo = min(finite) if finite else 0.0
    hi = max(finite) if finite else 1.0
    if floor is not None:
        lo = min(lo, floor)
    if ceiling is not None:
        hi = ceiling
    if hi <= lo:
        hi = lo + 1.0
    pad = (hi - lo) * 0.05
    return lo - pad, hi + pad


def day(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%d")


def time_axis(frame: Frame, ticks: int = 6) -> str:
    parts = []
    for k in range(ticks + 1):
        t = frame.t0 + (frame.t1 - frame.t0) * k / ticks
        x = frame.x(t)
        anchor = "start" if k == 0 else "end" if k == ticks else "middle"
        parts.append(
            f'<line class="grid" x1="{x:.1f}" y1="{frame.top}" x2="{x:.1f}" y2="{frame.top + frame.height}"/>'
            f'<text class="tick" x="{x:.1f}" y="{frame.top + frame.height + 14}" text-anchor="{anchor}">'
            f"{escape(day(t))}</text>"
        )
    return "".join(parts)


def value_axis(frame: Frame, label: str) -> str:
    bottom, top = frame.top + frame.height, frame.top
    return (
        f'<text class="tick" x="{frame.left - 6}" y="{top + 10}" text-anchor="end">{frame.y1:.4g}</text>'
        f'<text class="tick" x="{frame.left - 6}" y="{bottom}" text-anchor="end">{frame.y0:.4g}</text>'
        f'<text class="axis-label" x="{frame.left}" y="{top - 6}">{escape(label)}</text>'
        f'<rect class="plot" x="{frame.left}" y="{top}" width="{frame.width}" height="{frame.height}"/>'
    )
