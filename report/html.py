"""Render the report: per stream a chart (raw series, label windows, forwarded anomalies, and the score
the device decided on against its line: the post-processed 0-1 score and its decision level for a model
with ``edge_postprocess``, else the raw score and threshold),
then bandwidth per device and the model's lineage. One file, no scripts, no network."""

from __future__ import annotations

from html import escape
from pathlib import Path

from . import svg
from .model import Anomaly, ReportData, StreamView

WIDTH, LEFT, RIGHT = 1240, 70, 20
VALUE_TOP, VALUE_H = 28, 210
SCORE_TOP, SCORE_H = VALUE_TOP + VALUE_H + 46, 150
HEIGHT = SCORE_TOP + SCORE_H + 30
# Score spikes can be orders of magnitude above the threshold; past this many thresholds they are clipped.
SCORE_CLIP = 4.0

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#1b1f24;background:#fff}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 6px} .muted{color:#57606a}
.stream{border:1px solid #d0d7de;border-radius:6px;padding:10px 14px;margin:14px 0}
svg.chart{display:block;width:100%;height:auto}
.plot{fill:none;stroke:#8c959f;stroke-width:1} .grid{stroke:#eaeef2;stroke-width:1}
.tick{font-size:11px;fill:#57606a} .axis-label{font-size:12px;fill:#1b1f24;font-weight:600}
.series{stroke:#0969da;stroke-width:1} .score{stroke:#8250df;stroke-width:1}
.threshold{stroke:#cf222e;stroke-width:1.5;stroke-dasharray:6 4}
.label-window{fill:#d4a72c;fill-opacity:0.22;stroke:#d4a72c;stroke-opacity:0.6}
.anomaly{fill:#cf222e;stroke:#fff;stroke-width:1}
table{border-collapse:collapse;font-size:13px} td,th{border:1px solid #d0d7de;padding:4px 8px;text-align:left}
th{background:#f6f8fa} td.num{text-align:right;font-variant-numeric:tabular-nums}
.legend span{margin-right:16px;font-size:12px} .sw{display:inline-block;width:12px;height:12px;
vertical-align:middle;margin-right:4px}
"""


def _chart(view: StreamView) -> str:
    t0 = min(view.timestamps) if view.timestamps else 0.0
    t1 = max(view.timestamps) if view.timestamps else 1.0
    plot_w = WIDTH - LEFT - RIGHT
    y0, y1 = svg.nice_range(view.values)
    values = svg.Frame(LEFT, VALUE_TOP, plot_w, VALUE_H, t0, t1, y0, y1)
    if view.decision_level is not None:
        # Post-processed scores live in [0, 1] whatever the model's units: no clipping needed.
        s0, s1 = svg.nice_range(view.scores, floor=0.0, ceiling=1.0)
    else:
        ceiling = max([*view.scores, view.threshold]) if view.scores else view.threshold * 2
        ceiling = min(ceiling, view.threshold * SCORE_CLIP) if view.threshold > 0 else ceiling
        s0, s1 = svg.nice_range(view.scores, floor=0.0, ceiling=ceiling)
    scores = svg.Frame(LEFT, SCORE_TOP, plot_w, SCORE_H, t0, t1, s0, s1)
    parts = [
        f'<svg class="chart" data-stream="{escape(view.stream)}" data-score-kind="{_score_kind(view)}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{escape(view.stream)}">'
    ]
    for frame in (values, scores):
        for start, end in view.label_windows:
            a, b = max(start, t0), min(end, t1)
            parts.append(
                f'<rect class="label-window" data-start="{start:.0f}" data-end="{end:.0f}" '
                f'x="{frame.x(a):.1f}" y="{frame.top}" width="{max(frame.x(b) - frame.x(a), 1.0):.1f}" '
                f'height="{frame.height}"/>'
            )
    parts += [svg.time_axis(values), svg.value_axis(values, "sensor value (raw)")]
    parts.append(svg.polyline(svg.decimate(view.timestamps, view.values, values, plot_w), "series"))
    if view.decision_level is not None:
        score_label = f"post-processed anomaly score (0-1), decision level {view.decision_level:g}"
    else:
        score_label = f"anomaly score (clipped at {SCORE_CLIP:g}x threshold)"
    parts += [svg.time_axis(scores), svg.value_axis(scores, score_label)]
    parts.append(svg.polyline(svg.decimate(view.score_timestamps, view.scores, scores, plot_w), "score"))
    if view.decision_level is not None:
        ty, data = scores.y(view.decision_level), f'data-decision-level="{view.decision_level:.6g}"'
    else:
        ty, data = scores.y(view.threshold), f'data-threshold="{view.threshold:.6g}"'
    parts.append(
        f'<line class="threshold" {data} x1="{LEFT}" y1="{ty:.1f}" x2="{LEFT + plot_w}" y2="{ty:.1f}"/>'
    )
    by_time = dict(zip(view.timestamps, view.values, strict=False))
    for anomaly in view.anomalies:
        value = by_time.get(anomaly.timestamp)
        y = values.y(value) if value is not None else values.top + 6
        parts.append(
            f'<circle class="anomaly" data-timestamp="{anomaly.timestamp:.0f}" '
            f'data-event-id="{escape(anomaly.event_id)}" cx="{values.x(anomaly.timestamp):.1f}" '
            f'cy="{y:.1f}" r="4"><title>score {anomaly.score:.3g} at '
            f"{escape(svg.day(anomaly.timestamp))}</title></circle>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _score_kind(view: StreamView) -> str:
    return "post-processed" if view.postprocessed else "raw"


def _legend(data: ReportData) -> str:
    kinds = {v.postprocessed for v in data.streams}
    if kinds == {True}:
        levels = ", ".join(sorted({f"{v.decision_level:g}" for v in data.streams}))
        score, line = "post-processed score (0-1", f"decision level ({levels})"
    elif kinds == {True, False}:
        score, line = "score (post-processed 0-1 or raw", "decision level or threshold"
    else:
        score, line = "score (raw", "threshold"
    items = [
        ("#0969da", "raw series"),
        ("#8250df", f"{score}, recomputed offline with the deployed model)"),
        ("#cf222e", f"{line} / forwarded anomaly"),
        ("#d4a72c", "NAB label window"),
    ]
    return (
        '<p class="legend">'
        + "".join(f'<span><i class="sw" style="background:{c}"></i>{escape(t)}</span>' for c, t in items)
        + "</p>"
    )


def _stream_section(view: StreamView) -> str:
    states = ", ".join(f"{escape(k)}: {escape(v)}" for k, v in sorted(view.lifecycle_states.items()))
    return (
        f'<section class="stream" data-stream="{escape(view.stream)}" data-thing="{escape(view.thing_name)}" '
        f'data-anomalies="{len(view.anomalies)}" data-label-windows="{len(view.label_windows)}">'
        f'<h2>{escape(view.stream)} <span class="muted">on {escape(view.thing_name)}</span></h2>'
        f'<p class="muted">{view.samples_in:,} samples, {len(view.anomalies)} anomalies forwarded, '
        f"{len(view.label_windows)} label window(s) in range. Components: {states or 'n/a'}</p>"
        f"{_chart(view)}</section>"
    )


def _bandwidth(data: ReportData) -> str:
    rows = []
    for v in data.streams:
        rows.append(
            f'<tr data-thing="{escape(v.thing_name)}"><td>{escape(v.thing_name)}</td>'
            f"<td>{escape(v.stream)}</td>"
            f'<td class="num">{v.samples_in:,}</td><td class="num raw">{v.raw_bytes:,}</td>'
            f'<td class="num anomaly-bytes">{v.anomaly_bytes:,}</td><td class="num">{v.health_bytes:,}</td>'
            f'<td class="num saved">{v.saved_fraction:.2%}</td></tr>'
        )
    raw = sum(v.raw_bytes for v in data.streams)
    anomaly = sum(v.anomaly_bytes for v in data.streams)
    health = sum(v.health_bytes for v in data.streams)
    saved = 1.0 - (anomaly + health) / raw if raw else 0.0
    rows.append(
        f'<tr class="total" data-raw-bytes="{raw}" data-anomaly-bytes="{anomaly}" '
        f'data-health-bytes="{health}" '
        f'data-saved="{saved:.6f}"><th colspan="2">fleet</th><th class="num">'
        f'{sum(v.samples_in for v in data.streams):,}</th><th class="num">{raw:,}</th>'
        f'<th class="num">{anomaly:,}</th><th class="num">{health:,}</th>'
        f'<th class="num">{saved:.2%}</th></tr>'
    )
    head = (
        "<tr><th>device</th><th>stream</th><th>samples</th><th>raw sensor bytes in</th>"
        "<th>anomaly bytes up</th><th>heartbeat bytes up</th><th>saved</th></tr>"
    )
    return f'<h2>Bandwidth</h2><table id="bandwidth">{head}{"".join(rows)}</table>'


def _vs_decision(view: StreamView, anomaly: Anomaly) -> str:
    """How far past its decision line the event was, on the score the component decided on."""
    if view.decision_level is not None and anomaly.post_score is not None:
        return f"{anomaly.post_score:.3f} (level {view.decision_level:g})"
    return f"{anomaly.score / view.threshold:.2f}x threshold" if view.threshold > 0 else "-"


def _anomalies(data: ReportData) -> str:
    rows = [
        f'<tr class="anomaly-row"><td>{escape(v.thing_name)}</td><td>{escape(v.stream)}</td>'
        f'<td>{escape(svg.day(a.timestamp))}</td><td class="num">{a.score:.4g}</td>'
        f'<td class="num">{escape(_vs_decision(v, a))}</td>'
        f"<td><code>{escape(a.event_id)}</code></td></tr>"
        for v in data.streams
        for a in sorted(v.anomalies, key=lambda a: a.timestamp)
    ]
    head = (
        "<tr><th>device</th><th>stream</th><th>day</th><th>raw score</th><th>decided on</th>"
        "<th>event id</th></tr>"
    )
    return f'<h2>Forwarded anomalies</h2><table id="anomalies">{head}{"".join(rows)}</table>'


def _lineage(data: ReportData) -> str:
    rows = "".join(f"<tr><th>{escape(k)}</th><td><code>{escape(v)}</code></td></tr>" for k, v in data.lineage)
    return f'<h2>Model lineage</h2><table id="lineage">{rows}</table>'


def render_report(data: ReportData) -> str:
    sections = "".join(_stream_section(v) for v in data.streams)
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{escape(data.title)}</title>'
        f"<style>{CSS}</style></head><body>"
        f"<h1>{escape(data.title)}</h1>"
        f'<p class="muted">series <code>{escape(data.series)}</code> · '
        f"generated {escape(data.generated_at)} · "
        f"{len(data.streams)} stream(s)</p>{_legend(data)}{sections}{_bandwidth(data)}{_anomalies(data)}"
        f"{_lineage(data)}</body></html>\n"
    )


def write_report(data: ReportData, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(data), encoding="utf-8")
    return path
