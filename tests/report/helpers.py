"""A small synthetic report, and an HTML parser that collects what the tests look for."""

from __future__ import annotations

import math
import re
from html.parser import HTMLParser

from report import Anomaly, ReportData, StreamView

DAY = 86_400.0
T0 = 1_386_000_000.0


def stream(name: str, thing: str, *, spike_at: int, windows: int, post: bool = False) -> StreamView:
    """``post``: a model with ``edge_postprocess``, scores in [0, 1] against the 0.5 decision level."""
    ts = [T0 + i * 300.0 for i in range(2_000)]
    vs = [50 + 10 * math.sin(i / 40) for i in range(2_000)]
    vs[spike_at] = 140.0
    scores = [abs(math.sin(i / 7)) for i in range(2_000)]
    scores[spike_at] = 30.0
    if post:
        scores = [min(1.0, s / 4.0) for s in scores]
    return StreamView(
        stream=name,
        thing_name=thing,
        timestamps=ts,
        values=vs,
        score_timestamps=ts,
        scores=scores,
        threshold=2.0,
        anomalies=[
            Anomaly(
                timestamp=ts[spike_at], score=30.0, event_id=f"ev-{thing}", post_score=1.0 if post else None
            )
        ],
        label_windows=[(ts[spike_at - 50 * (k + 1)], ts[spike_at + 10]) for k in range(windows)],
        samples_in=2_000,
        raw_bytes=100_000,
        anomaly_bytes=900,
        health_bytes=1_100,
        lifecycle_states={"com.edgeml.AnomalyDetector": "FINISHED"},
        decision_level=0.5 if post else None,
    )


def sample_report(*, post: bool = False) -> ReportData:
    """Three streams; ``post``: the deployed model post-processes (``edge_postprocess``)."""
    return ReportData(
        title="edgeml <test> report",
        series="realKnownCause/x.csv",
        generated_at="2026-01-01T00:00:00Z",
        streams=[
            stream("pump-1", "gw-01", spike_at=700, windows=1, post=post),
            stream("pump-2", "gw-02", spike_at=1_500, windows=2, post=post),
            stream("pump-3", "gw-03", spike_at=300, windows=0, post=post),
        ],
        lineage=[("model version", "20260101T000000Z-abc"), ("training data sha256", "f" * 64)],
    )


class Collector(HTMLParser):
    """Every start tag with its attributes, and the page's text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def find(self, tag: str, css_class: str | None = None) -> list[dict[str, str]]:
        return [
            a
            for t, a in self.tags
            if t == tag and (css_class is None or css_class in a.get("class", "").split())
        ]


def legend(html: str) -> list[str]:
    """The legend's entries, as text (the page's ``<p class="legend">``)."""
    found = re.search(r'<p class="legend">(.*?)</p>', html, re.S)
    if found is None:
        raise AssertionError("the page has no legend")
    return [re.sub(r"<[^>]+>", "", item) for item in re.findall(r"<span>(.*?)</span>", found.group(1))]


def parse(html: str) -> Collector:
    collector = Collector()
    collector.feed(html)
    return collector
