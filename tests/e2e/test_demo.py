"""The whole loop, as `make demo` runs it: real child processes, real broker, real ONNX Runtime."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
NAB = REPO.parent / "shared" / "data" / "nab"
SERIES = "realKnownCause/machine_temperature_system_failure.csv"
STAND_IN_MARKERS = ("moto.server", "standins.greengrass_fake", "mosquitto", "anomaly_detector")


def _stand_in_pids() -> set[int]:
    pids = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(marker in cmdline for marker in STAND_IN_MARKERS):
            pids.add(int(proc.name))
    return pids


DemoRun = tuple[subprocess.CompletedProcess[str], dict[str, Any], set[int], set[int]]


@pytest.fixture(scope="module")
def demo_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> DemoRun:
    assert (NAB / "data" / SERIES).is_file(), f"NAB data missing at {NAB}: the demo needs ../shared/data/nab"
    work = tmp_path_factory.mktemp("demo")
    summary_path = work / "summary.json"
    before = _stand_in_pids()
    done = subprocess.run(
        [sys.executable, "-m", "demo", "--workdir", str(work / "run"), "--summary-json", str(summary_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    after = _stand_in_pids()
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    return done, summary, before, after


def test_demo_exits_zero_and_leaves_no_process(demo_run: DemoRun) -> None:
    done, _summary, before, after = demo_run
    assert done.returncode == 0, done.stderr[-3000:]
    assert after - before == set(), "stand-ins or the component were left running"


def test_demo_replays_every_sample_and_forwards_only_anomalies(demo_run: DemoRun) -> None:
    _done, summary, _b, _a = demo_run
    with (NAB / "data" / SERIES).open() as fh:
        rows = sum(1 for _ in csv.reader(fh)) - 1
    assert summary["samples_in"] == rows
    assert summary["train_rows"] == int(rows * 0.15)
    assert 0 < summary["anomalies_forwarded"] < rows * 0.01
    # What the device said it sent is exactly what the cloud side of the broker received.
    assert summary["anomalies_received_by_cloud"] == summary["anomalies_forwarded"]
    assert summary["bytes_forwarded"] < 0.2 * summary["raw_bytes"]
    assert summary["heartbeat_bytes"] > 0
    sent = summary["bytes_forwarded"] + summary["heartbeat_bytes"]
    assert summary["sent_ratio"] == round(sent / summary["raw_bytes"], 5)


def test_demo_closes_the_delivery_loop_with_acks(demo_run: DemoRun) -> None:
    done, summary, _b, _a = demo_run
    devices = Path(summary["report_path"]).parent / "devices"
    for thing in summary["devices"]:
        config = json.loads((devices / thing / "config/com.edgeml.AnomalyDetector.json").read_text())
        assert config["ackTimeoutS"] == 30  # the devices ran in ack mode
    # The cloud stand-in acked every event it received, as the ingest acks every stored event ...
    assert summary["acks_published"] == summary["anomalies_received_by_cloud"] > 0
    # ... and with every event forwarded, no device's spool held one still awaiting its ack.
    spools = summary["spool_after_replay"]
    assert sorted(spools) == sorted(summary["devices"])
    assert all(spool == {"depth": 0, "awaiting_ack": 0} for spool in spools.values()), spools
    assert "acks (cloud → device)" in done.stdout


def test_demo_hits_nab_label_windows(demo_run: DemoRun) -> None:
    _done, summary, _b, _a = demo_run
    windows = json.loads((NAB / "labels" / "combined_windows.json").read_text())[SERIES]
    assert summary["label_windows"] == len(windows) == 4
    # The failure this series is known for (February 2014) and the earlier ones: at least half found.
    assert summary["label_windows_hit"] >= 2
    assert summary["anomalies_outside_windows"] < summary["anomalies_forwarded"]


def test_demo_deployed_the_published_model(demo_run: DemoRun) -> None:
    done, summary, _b, _a = demo_run
    assert summary["model_component_version"] == "1.0.0"
    assert summary["model_version"] in done.stdout


def test_demo_swaps_in_a_second_model_mid_run_without_restarting(demo_run: DemoRun) -> None:
    done, summary, _b, _a = demo_run
    assert summary["model_update_component_version"] == "1.0.1"
    assert summary["model_update_version"] == f"{summary['model_version']}-r2"
    assert summary["model_update_deployment_id"] != summary["deployment_id"]
    # Events from both halves of the replay: the first model's, then the second's, never the reverse.
    assert summary["model_versions_seen"] == [summary["model_version"], summary["model_update_version"]]
    assert summary["component_restarts"] == 0
    assert "model versions on events" in done.stdout


def test_demo_ran_several_devices_through_the_published_recipe(demo_run: DemoRun) -> None:
    _done, summary, _b, _a = demo_run
    things = summary["devices"]
    assert len(things) == 3
    run_dir = Path(summary["report_path"]).parent
    for thing in things:
        root = run_dir / "devices" / thing
        # The artifact as published (unarchived from the zip), not the source tree.
        package = root / "packages/artifacts-unarchived/com.edgeml.AnomalyDetector/1.0.0/anomaly_detector"
        assert (package / "__main__.py").is_file()
        for model_component_version in ("1.0.0", "1.0.1"):
            assert (
                root / f"packages/artifacts/com.edgeml.AnomalyModel/{model_component_version}/model.onnx"
            ).is_file()
        # Install ran (the local reuse-python policy writes the venv's interpreter wrapper).
        assert (root / "work/com.edgeml.AnomalyDetector/venv/bin/python3").is_file()
        config = json.loads((root / "config/com.edgeml.AnomalyDetector.json").read_text())
        assert config["sensorTopic"] == f"sensors/{thing}/#"
        assert config["model"]["version"] == "1.0.1"
        # The device reported its deployment and component states; the cloud API returns them.
        cloud = summary["device_status_in_cloud"][thing]
        # One deployment per target: the mid-run revision replaced the first one, and succeeded.
        assert cloud["deployments"] == {summary["model_update_deployment_id"]: "SUCCEEDED"}
        assert cloud["components"] == {
            "com.edgeml.AnomalyDetector": "FINISHED",
            "com.edgeml.AnomalyModel": "FINISHED",
        }
        stats = json.loads((root / "logs/com.edgeml.AnomalyDetector.stdout").read_text().splitlines()[-1])
        assert stats["thing_name"] == thing
        assert stats["samples_in"] > 0
        assert stats["model_swaps"] == 1


def test_demo_writes_a_report_that_chromium_renders(demo_run: DemoRun) -> None:
    from report.browser import dump_dom
    from tests.report.helpers import legend, parse
    from tests.report.png import decode
    from tests.report.test_chromium import colour_counts

    _done, summary, _b, _a = demo_run
    html = dump_dom(Path(summary["report_path"]))
    dom = parse(html)
    assert [c["data-stream"] for c in dom.find("svg", "chart")] == [
        f"machine_temperature_system_failure-{i}" for i in (1, 2, 3)
    ]
    # The demo deploys the evaluated NAB detector (edge_postprocess): the charts show the score the
    # component decided on, against its decision level, not the raw score against the raw threshold.
    assert [c["data-score-kind"] for c in dom.find("svg", "chart")] == ["post-processed"] * 3
    assert legend(html)[1].startswith("post-processed score (0-1")
    assert [line["data-decision-level"] for line in dom.find("line", "threshold")] == ["0.5"] * 3
    assert len(dom.find("circle", "anomaly")) == summary["anomalies_forwarded"]
    # Label windows that straddle two slices are drawn on both; every window is drawn at least once.
    windows = {(r["data-start"], r["data-end"]) for r in dom.find("rect", "label-window")}
    assert len(windows) == summary["label_windows"]
    assert int(dom.find("tr", "total")[0]["data-raw-bytes"]) == summary["raw_bytes"]
    assert int(dom.find("tr", "total")[0]["data-anomaly-bytes"]) == summary["bytes_forwarded"]
    assert summary["model_version"] in "".join(dom.text)
    image = decode(Path(summary["screenshot_path"]).read_bytes())
    assert image.height > 2000  # the whole page, tables included
    distinct, counts = colour_counts(image)
    assert distinct > 50
    assert all(n > 20 for n in counts.values()), counts
