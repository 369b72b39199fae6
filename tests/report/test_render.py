from __future__ import annotations

from pathlib import Path

from report import render_report, write_report
from report.svg import Frame, decimate

from .helpers import legend, parse, sample_report


def test_one_chart_per_stream_with_its_anomalies_and_label_windows() -> None:
    dom = parse(render_report(sample_report()))
    charts = dom.find("svg", "chart")
    assert [c["data-stream"] for c in charts] == ["pump-1", "pump-2", "pump-3"]
    sections = {s["data-stream"]: s for s in dom.find("section", "stream")}
    assert {k: (v["data-anomalies"], v["data-label-windows"]) for k, v in sections.items()} == {
        "pump-1": ("1", "1"),
        "pump-2": ("1", "2"),
        "pump-3": ("1", "0"),
    }
    # Each label window is shaded in both panels (values and scores).
    assert len(dom.find("rect", "label-window")) == 2 * (1 + 2)
    assert [c["data-event-id"] for c in dom.find("circle", "anomaly")] == ["ev-gw-01", "ev-gw-02", "ev-gw-03"]
    assert [t["data-threshold"] for t in dom.find("line", "threshold")] == ["2", "2", "2"]
    assert len(dom.find("polyline", "series")) == len(dom.find("polyline", "score")) == 3


def test_raw_score_charts_name_the_threshold() -> None:
    html = render_report(sample_report())
    dom = parse(html)
    assert [c["data-score-kind"] for c in dom.find("svg", "chart")] == ["raw", "raw", "raw"]
    assert legend(html)[1:3] == [
        "score (raw, recomputed offline with the deployed model)",
        "threshold / forwarded anomaly",
    ]
    assert "anomaly score (clipped at 4x threshold)" in dom.text
    assert "15.00x threshold" in dom.text


def test_post_processed_charts_plot_the_score_against_the_decision_level() -> None:
    html = render_report(sample_report(post=True))
    dom = parse(html)
    assert [c["data-score-kind"] for c in dom.find("svg", "chart")] == ["post-processed"] * 3
    assert legend(html)[1:3] == [
        "post-processed score (0-1, recomputed offline with the deployed model)",
        "decision level (0.5) / forwarded anomaly",
    ]
    # The line is at the decision level, not at the raw threshold (2.0, off this 0-1 axis).
    lines = dom.find("line", "threshold")
    assert [line["data-decision-level"] for line in lines] == ["0.5"] * 3
    assert all("data-threshold" not in line for line in lines)
    assert "post-processed anomaly score (0-1), decision level 0.5" in dom.text
    # The axis spans 0-1 (padded), so the decision level sits halfway up the score panel.
    score_top, score_h = 28 + 210 + 46, 150
    assert {float(line["y1"]) for line in lines} == {round(score_top + score_h / 2, 1)}
    assert "1.000 (level 0.5)" in dom.text


def test_bandwidth_totals_and_lineage() -> None:
    dom = parse(render_report(sample_report()))
    total = dom.find("tr", "total")[0]
    assert (total["data-raw-bytes"], total["data-anomaly-bytes"], total["data-health-bytes"]) == (
        "300000",
        "2700",
        "3300",
    )
    assert total["data-saved"] == "0.980000"
    text = "".join(dom.text)
    assert "20260101T000000Z-abc" in text
    assert "f" * 64 in text
    assert "98.00%" in text


def test_text_is_escaped_and_nothing_is_loaded_from_the_network(tmp_path: Path) -> None:
    html = render_report(sample_report())
    assert "edgeml &lt;test&gt; report" in html
    assert "<script" not in html
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in html
    path = write_report(sample_report(), tmp_path / "sub" / "r.html")
    assert path.read_text(encoding="utf-8") == html


def test_decimation_keeps_spikes_and_bounds_the_point_count() -> None:
    ts = [float(i) for i in range(10_000)]
    vs = [0.0] * 10_000
    vs[4_321] = 100.0
    frame = Frame(0, 0, 200, 100, 0.0, 9_999.0, 0.0, 100.0)
    points = decimate(ts, vs, frame, 200)
    assert len(points) <= 400
    assert min(y for _x, y in points) == 0.0  # the spike reaches the top of the plot
