"""The report as a browser shows it: headless Chromium (Debian package `chromium`) renders it to a DOM
and a PNG screenshot, and both are checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from report import write_report
from report.browser import WINDOW, BrowserError, dump_dom, screenshot

from .helpers import legend, parse, sample_report
from .png import Image, decode


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    tmp = tmp_path_factory.mktemp("chromium")
    page = write_report(sample_report(), tmp / "report.html")
    return dump_dom(page), screenshot(page, tmp / "report.png")


def test_browser_shows_the_post_processed_score_in_the_legend(tmp_path: Path) -> None:
    page = write_report(sample_report(post=True), tmp_path / "report.html")
    html = dump_dom(page)
    assert [c["data-score-kind"] for c in parse(html).find("svg", "chart")] == ["post-processed"] * 3
    assert legend(html)[1].startswith("post-processed score (0-1")


def test_browser_dom_has_every_part_of_the_report(rendered: tuple[str, Path]) -> None:
    dom = parse(rendered[0])
    assert [c["data-stream"] for c in dom.find("svg", "chart")] == ["pump-1", "pump-2", "pump-3"]
    assert len(dom.find("circle", "anomaly")) == 3
    assert len(dom.find("rect", "label-window")) == 6
    assert dom.find("tr", "total")[0]["data-raw-bytes"] == "300000"
    assert len(dom.find("tr", "anomaly-row")) == 3
    assert "20260101T000000Z-abc" in "".join(dom.text)


def _near(pixel: tuple[int, int, int], colour: tuple[int, int, int], tolerance: int = 40) -> bool:
    return sum(abs(p - c) for p, c in zip(pixel, colour, strict=True)) <= tolerance


def colour_counts(image: Image) -> tuple[int, dict[str, int]]:
    """Distinct colours, and pixels near the series blue, anomaly red and label-window fill."""
    counts = {"series": 0, "anomaly": 0, "label": 0}
    colours = set()
    for y in range(0, image.height, 2):
        for x in range(0, image.width, 2):
            px = image.pixel(x, y)
            colours.add(px)
            counts["series"] += _near(px, (0x09, 0x69, 0xDA))
            counts["anomaly"] += _near(px, (0xCF, 0x22, 0x2E))
            counts["label"] += _near(px, (0xF4, 0xE8, 0xC8), 30)  # the label window's translucent fill
    return len(colours), counts


def test_screenshot_is_a_valid_png_with_the_charts_drawn(rendered: tuple[str, Path]) -> None:
    image = decode(rendered[1].read_bytes())
    assert (image.width, image.height) == WINDOW
    distinct, counts = colour_counts(image)
    assert distinct > 50, "screenshot is blank or nearly uniform"
    assert all(n > 20 for n in counts.values()), counts


def test_png_decoder_rejects_what_is_not_a_png(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a PNG: bad signature"):
        decode(b"GIF89a...")


def test_missing_page_is_a_browser_error(tmp_path: Path) -> None:
    with pytest.raises(BrowserError, match="wrote no screenshot"):
        # Chromium renders an error page for a missing file but writes a PNG; a directory target fails.
        screenshot(tmp_path / "missing.html", tmp_path / "dir-not-file" / "x.png")
