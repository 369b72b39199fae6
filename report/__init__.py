"""The demo's visual report: one self-contained HTML file, charts drawn as inline SVG (no network)."""

from .html import render_report, write_report
from .model import Anomaly, ReportData, StreamView

__all__ = ["Anomaly", "ReportData", "StreamView", "render_report", "write_report"]
