"""docs/benchmarks.md is what bench.edge renders from the committed bench/results.json (no stale numbers)."""

from __future__ import annotations

import json
from pathlib import Path

from bench.edge import TARGETS, render

REPO = Path(__file__).resolve().parents[2]


def _results() -> dict[str, object]:
    results = json.loads((REPO / "bench" / "results.json").read_text())
    assert isinstance(results, dict)
    return results


def test_committed_table_is_the_rendering_of_the_committed_results() -> None:
    doc = (REPO / "docs" / "benchmarks.md").read_text()
    rendered = render(_results())
    table = [line for line in rendered.splitlines() if line.startswith("| ") and "run 1" not in line]
    assert len(table) >= 25
    missing = [line for line in table if line not in doc]
    assert missing == []


def test_verdicts_follow_the_targets() -> None:
    results = _results()
    runs = results["runs"]
    assert isinstance(runs, list)
    assert results["targets"] == TARGETS
    rendered = render(results)
    for key, label in (("edge_binary_vs_naive", "edge_binary / naive"), ("edge_vs_raw", "edge / raw")):
        met = all(run[key] >= TARGETS[key] for run in runs)
        line = next(row for row in rendered.splitlines() if row.startswith(f"| {label} |"))
        assert line.endswith("met in every run |") == met
    # A run that misses a target says so in its own table.
    worse = json.loads(json.dumps(results))
    worse["runs"][0]["edge_binary_vs_naive"] = 1.0
    line = next(row for row in render(worse).splitlines() if row.startswith("| edge_binary / naive |"))
    assert "**missed** in run(s) 1" in line
