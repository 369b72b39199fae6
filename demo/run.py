"""`make demo`: the whole loop on local stand-ins, with numbers and an HTML report at the end.

moto server (S3, IoT) + our Greengrass v2 fake + mosquitto (IoT Core's broker) are started as child
processes; a model is trained on the first 15% of a NAB series with the SageMaker entry point, stored in
the model store, published by the publisher Lambda's handler, and deployed to a thing group of several
simulated devices. Each device is the local device runner (`device/`): it reads its deployment, fetches
the published recipe and artifacts, and runs the recipe's Install and Run steps as real processes. Each
device's sensors replay one consecutive slice of the series; only anomalies (and heartbeats) cross the
MQTT link, and the listener on the cloud side counts them.

Halfway through the replay a second model (same data, other hyperparameters) is published the same way: a
new model component version and a new deployment revision. Each device applies it (`DeviceRunner.sync`)
and the running component swaps models without a restart; the summary lists the model versions seen on
the anomaly events and the component restarts (none expected). `--no-model-update` skips this step.

The devices run in ack mode (`ackTimeoutS`): each keeps a sent event in its spool until the cloud
acknowledges it on `edge/<thing>/acks`. The listener acks as the ingest Lambda does for a stored event,
and the demo waits until every device reports an empty spool with every event forwarded: the whole
delivery loop, device spool → broker → cloud → ack → spool row deleted.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import logging
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import boto3
import onnx

from device.runner import DeviceRunner, LocalPolicy, S3ArtifactStore
from greengrass_components.publish import publish_component
from report import write_report
from report.browser import BrowserError, screenshot
from standins import processes
from standins.greengrass_fake.admin import FakeAdminClient
from training import train
from training.evaluate import NAB_HYPERPARAMETERS
from training.nab_scorer import load_windows

from . import sensors
from .cloud_listener import CloudListener, Received
from .report_data import build_report_data

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

LOG = logging.getLogger("demo")
REPO = Path(__file__).resolve().parent.parent
SHARED_NAB = REPO.parent / "shared" / "data" / "nab"
SERIES = "realKnownCause/machine_temperature_system_failure.csv"
REGION = "us-east-1"
BUCKET = "edgeml-model-store-demo"
MODEL_COMPONENT = "com.edgeml.AnomalyModel"
INFERENCE_COMPONENT = "com.edgeml.AnomalyDetector"
INFERENCE_VERSION = "1.0.0"
THING_GROUP = "edgeml-demo-fleet"
DEVICES = 3
NAB_PROBATION_FRACTION = 0.15
# Ack mode on the demo devices: far above the local ack's round trip, so an event is sent once.
ACK_TIMEOUT_S = 30


@dataclass(frozen=True)
class DemoConfig:
    corpus: Path
    series: str
    workdir: Path
    train_fraction: float
    summary_path: Path | None
    devices: int = DEVICES
    model_update: bool = True


@dataclass(frozen=True)
class DemoSummary:
    series: str
    train_rows: int
    model_version: str
    model_component_version: str
    deployment_id: str
    samples_in: int
    anomalies_forwarded: int
    anomalies_received_by_cloud: int
    bytes_forwarded: int  # anomaly events only
    heartbeat_bytes: int
    raw_bytes: int
    bandwidth_ratio: float  # anomaly bytes / raw bytes
    sent_ratio: float  # (anomaly + heartbeat bytes) / raw bytes: all the devices sent the cloud
    label_windows: int
    label_windows_hit: int
    anomalies_outside_windows: int
    samples_per_s: float
    devices: list[str]
    device_status_in_cloud: dict[str, dict[str, Any]]
    report_path: str
    screenshot_path: str | None
    # The mid-run model update (None / empty with --no-model-update).
    model_update_version: str | None
    model_update_component_version: str | None
    model_update_deployment_id: str | None
    model_versions_seen: list[str]
    component_restarts: int
    # Delivery acks: event ids the cloud stand-in acknowledged, and each device's spool once every event
    # was forwarded ({"depth", "awaiting_ack"} from its heartbeat; 0 and 0 = nothing awaits an ack).
    acks_published: int
    spool_after_replay: dict[str, dict[str, int]]


def parse_args(argv: Sequence[str] | None) -> DemoConfig:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=SHARED_NAB, help="NAB-format corpus root")
    parser.add_argument("--series", default=SERIES, help="series under <corpus>/data/")
    parser.add_argument("--workdir", type=Path, default=REPO / ".demo", help="scratch folder (recreated)")
    parser.add_argument("--train-fraction", type=float, default=NAB_PROBATION_FRACTION)
    parser.add_argument("--summary-json", type=Path, default=None, help="also write the summary here")
    parser.add_argument("--devices", type=int, default=DEVICES, help="simulated devices in the thing group")
    parser.add_argument(
        "--no-model-update",
        dest="model_update",
        action="store_false",
        help="do not publish a second model halfway through the replay",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.devices <= 10:
        parser.error("--devices must be 1..10")
    return DemoConfig(
        corpus=args.corpus,
        series=args.series,
        workdir=args.workdir,
        train_fraction=args.train_fraction,
        summary_path=args.summary_json,
        devices=args.devices,
        model_update=args.model_update,
    )


def _client(service: str, endpoint: str) -> Any:
    return boto3.client(service, endpoint_url=endpoint, region_name=REGION)


def _write_training_slice(series_csv: Path, out_dir: Path, fraction: float) -> int:
    with series_csv.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    header, body = rows[0], rows[1:]
    n_train = int(len(body) * fraction)
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / series_csv.name).open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(body[:n_train])
    return n_train


def _model_version(model_path: Path) -> str:
    meta = {p.key: p.value for p in onnx.load(str(model_path), load_external_data=False).metadata_props}
    return str(meta["model_version"])


@contextlib.contextmanager
def _local_aws_env(moto_url: str, greengrass_url: str) -> Iterator[None]:
    """Point boto3 at the stand-ins: the one setting that separates local from real AWS."""
    values = {
        "AWS_ENDPOINT_URL": moto_url,
        "AWS_ENDPOINT_URL_GREENGRASSV2": greengrass_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


@dataclass(frozen=True)
class _LocalLambdaContext:
    """What the Lambda runtime would pass; the handler's logger reads these fields."""

    function_name: str = "edgeml-publisher-local"
    function_version: str = "$LATEST"
    invoked_function_arn: str = f"arn:aws:lambda:{REGION}:123456789012:function:edgeml-publisher-local"
    memory_limit_in_mb: int = 1024
    aws_request_id: str = "local-demo"
    log_group_name: str = "/aws/lambda/edgeml-publisher-local"
    log_stream_name: str = "local"


def _invoke_publisher(bucket: str, key: str, group_arn: str) -> dict[str, Any]:
    os.environ.update(
        {
            "MODEL_BUCKET": bucket,
            "MODEL_COMPONENT_NAME": MODEL_COMPONENT,
            "INFERENCE_COMPONENT_NAME": INFERENCE_COMPONENT,
            "INFERENCE_COMPONENT_VERSION": INFERENCE_VERSION,
            "TARGET_THING_GROUP_ARN": group_arn,
            "POWERTOOLS_SERVICE_NAME": "publisher",
        }
    )
    from lambdas.publisher.handler import handler  # noqa: PLC0415 - reads its settings at invocation

    event = {
        "Records": [
            {
                "eventSource": "aws:s3",
                "eventName": "ObjectCreated:Put",
                "awsRegion": REGION,
                "s3": {"bucket": {"name": bucket}, "object": {"key": key}},
            }
        ]
    }
    result: dict[str, Any] = handler(event, cast("LambdaContext", _LocalLambdaContext()))
    return result


def _hyperparameter_args(overrides: Mapping[str, str] | None = None) -> list[str]:
    """train.py's ``--name value`` args: the evaluated NAB detector's settings, then the overrides.

    ``NAB_HYPERPARAMETERS`` is what docs/detection.md scores (window length and the ``edge_postprocess``
    the component applies), so the demo deploys the detector whose numbers the docs report.
    """
    merged = {**NAB_HYPERPARAMETERS, **(overrides or {})}
    return [arg for name, value in merged.items() for arg in (f"--{name}", value)]


def _train(
    s3: Any,
    series_csv: Path,
    train_dir: Path,
    model_dir: Path,
    fraction: float,
    *,
    overrides: Mapping[str, str] | None = None,
) -> tuple[int, str]:
    n_train = _write_training_slice(series_csv, train_dir, fraction)
    s3.upload_file(str(train_dir / series_csv.name), BUCKET, f"datasets/demo/{series_csv.name}")
    args = ["--train", str(train_dir), "--model_dir", str(model_dir), "--model_name", "machine-temperature"]
    if train.main([*args, *_hyperparameter_args(overrides)]) != 0:
        raise RuntimeError("training failed: see the JSON log above")
    return n_train, _model_version(model_dir / "model.onnx")


def _parse_ts(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    return parsed.astimezone(UTC).replace(tzinfo=None) if parsed.tzinfo else parsed


def _window_stats(events: list[dict[str, Any]], windows: list[tuple[datetime, datetime]]) -> tuple[int, int]:
    stamps = [_parse_ts(str(e["timestamp"])) for e in events]
    hit = sum(1 for start, end in windows if any(start <= t <= end for t in stamps))
    outside = sum(1 for t in stamps if not any(start <= t <= end for start, end in windows))
    return hit, outside


# Demo fleet settings, deployed once by an operator; the publisher Lambda keeps them in every later
# deployment and adds the model. There is no nucleus, so no IPC: samples and anomalies go over MQTT.
# {iot:thingName} in sensorTopic is resolved per device (interpolateComponentConfiguration).
def _fleet_configuration(broker_port: int) -> dict[str, object]:
    return {
        "source": "mqtt",
        "transport": "mqtt",
        "mqttHost": processes.LOOPBACK,
        "mqttPort": broker_port,
        "sensorTopic": "sensors/{iot:thingName}/#",
        "healthIntervalSeconds": 1,
        "ackTimeoutS": ACK_TIMEOUT_S,
    }


def _stat_lines(text: str) -> dict[str, Any]:
    """The component prints one JSON summary on stdout when it stops."""
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            value: dict[str, Any] = json.loads(line)
            return value
    raise RuntimeError("the component wrote no run summary on stdout")


def _all_ingested(expected: dict[str, int]) -> Any:
    def check(_messages: list[Received], listener: CloudListener) -> bool:
        health = listener.latest_health()
        return all(health.get(t, {}).get("samples_in") == n for t, n in expected.items())

    return check


@dataclass(frozen=True)
class _ModelUpdate:
    model_version: str
    component_version: str
    deployment_id: str


def _halves(feeds: dict[str, sensors.SeriesSlice]) -> tuple[dict[str, sensors.SeriesSlice], ...]:
    first, second = {}, {}
    for thing, piece in feeds.items():
        half = len(piece.values) // 2
        first[thing] = sensors.SeriesSlice(piece.stream, piece.timestamps[:half], piece.values[:half])
        second[thing] = sensors.SeriesSlice(piece.stream, piece.timestamps[half:], piece.values[half:])
    return first, second


def _publish_second_model(
    s3: Any, *, work: Path, series_csv: Path, fraction: float, first_version: str, group_arn: str
) -> _ModelUpdate:
    """Retrain with another ridge_alpha (new model version, same post-processing); publish via the Lambda."""
    version = f"{first_version}-r2"
    model_dir = work / "model-update"
    overrides = {"ridge_alpha": "0.01", "model_version": version}
    _train(s3, series_csv, work / "input" / "train-update", model_dir, fraction, overrides=overrides)
    key = f"models/machine-temperature/{version}/model.onnx"
    s3.upload_file(str(model_dir / "model.onnx"), BUCKET, key)
    published = _invoke_publisher(BUCKET, key, group_arn)["published"][0]
    LOG.info("second model published: %s", json.dumps(published))
    return _ModelUpdate(
        model_version=version,
        component_version=str(published["component_version"]),
        deployment_id=str(published["deployment_id"]),
    )


def _all_acked(things: list[str], spools: dict[str, dict[str, int]]) -> Any:
    """Every device's latest heartbeat: all its forwarded events reached the cloud and its spool is empty.

    In ack mode a sent row stays in the spool (``depth``, ``awaiting_ack``) until its ack arrives, so an
    empty spool after the cloud has every event means each of them was acknowledged. The spool states
    that satisfied the check are left in ``spools``.
    """

    def check(_messages: list[Received], listener: CloudListener) -> bool:
        health = listener.latest_health()
        received = Counter(m.topic.split("/")[1] for m in listener.snapshot("anomalies"))
        if not all(t in health and received[t] >= int(health[t]["events"]["forwarded"]) for t in things):
            return False
        states = {t: _spool_state(health[t]) for t in things}
        if any(state != {"depth": 0, "awaiting_ack": 0} for state in states.values()):
            return False
        spools.update(states)
        return True

    return check


def _spool_state(health: dict[str, Any]) -> dict[str, int]:
    spool = health["spool"]
    return {"depth": int(spool["depth"]), "awaiting_ack": int(spool.get("awaiting_ack", 0))}


def _all_on_model(things: list[str], version: str) -> Any:
    def check(_messages: list[Received], listener: CloudListener) -> bool:
        health = listener.latest_health()
        return all(health.get(t, {}).get("model_version") == version for t in things)

    return check


def _detector_pid(runner: DeviceRunner) -> int | None:
    process = runner.components[INFERENCE_COMPONENT].process
    return process.pid if process is not None else None


def _wait(listener: CloudListener, what: str, condition: Any, timeout_s: float) -> None:
    if not listener.wait_until(lambda msgs: bool(condition(msgs, listener)), timeout_s):
        raise RuntimeError(
            f"timed out after {timeout_s:.0f} s waiting for {what}: {listener.latest_health()}"
        )


def _cloud_view(gg: Any, thing: str) -> dict[str, Any]:
    installed = gg.list_installed_components(coreDeviceThingName=thing)["installedComponents"]
    effective = gg.list_effective_deployments(coreDeviceThingName=thing)["effectiveDeployments"]
    return {
        "components": {c["componentName"]: c["lifecycleState"] for c in installed},
        "deployments": {d["deploymentId"]: d["coreDeviceExecutionStatus"] for d in effective},
    }


def run(cfg: DemoConfig) -> DemoSummary:  # noqa: PLR0915 - one linear story, kept in one place
    series_csv = cfg.corpus / "data" / cfg.series
    if not series_csv.is_file():
        raise FileNotFoundError(f"series not found: {series_csv}")
    work = cfg.workdir.resolve()
    if work.exists():
        subprocess.run(["rm", "-rf", str(work)], check=True)  # noqa: S603, S607 - our own scratch folder
    logs = work / "logs"
    logs.mkdir(parents=True)
    things = [f"demo-gateway-{i + 1:02d}" for i in range(cfg.devices)]

    moto = processes.moto_server(log_path=logs / "moto.log")
    broker = processes.mosquitto(work / "broker", log_path=logs / "mosquitto.log")
    with contextlib.ExitStack() as stack:
        stack.enter_context(moto)
        moto_url = f"http://{moto.host}:{moto.port}"
        greengrass = processes.greengrass_fake(s3_endpoint=moto_url, log_path=logs / "greengrass-fake.log")
        greengrass_url = f"http://{greengrass.host}:{greengrass.port}"
        # The fake reads S3 through boto3 too, so it starts inside the same local-AWS environment.
        stack.enter_context(_local_aws_env(moto_url, greengrass_url))
        stack.enter_context(greengrass)
        stack.enter_context(broker)
        LOG.info(
            "stand-ins up", extra={"moto": moto.port, "greengrass": greengrass.port, "mqtt": broker.port}
        )

        s3, iot, gg = _client("s3", moto_url), _client("iot", moto_url), boto3.client("greengrassv2")
        admin = FakeAdminClient(greengrass_url)
        s3.create_bucket(Bucket=BUCKET)
        group_arn = iot.create_thing_group(thingGroupName=THING_GROUP)["thingGroupArn"]
        for thing in things:
            iot.create_thing(thingName=thing)
            iot.add_thing_to_thing_group(thingGroupName=THING_GROUP, thingName=thing)
        # The fake does not read IoT's registry: tell it the group's members, as IoT would.
        admin.set_thing_group_members(THING_GROUP, things)

        # 1. Train exactly as SageMaker would run the entry point (SM_* contract), on the first 15%.
        model_dir = work / "model"
        n_train, model_version = _train(
            s3, series_csv, work / "input" / "train", model_dir, cfg.train_fraction
        )

        # 2. Store the model (written once, version-addressed) and publish the inference component's code.
        model_key = f"models/machine-temperature/{model_version}/model.onnx"
        s3.upload_file(str(model_dir / "model.onnx"), BUCKET, model_key)
        component = publish_component(
            s3=s3,
            greengrass=gg,
            bucket=BUCKET,
            component_dir=REPO / "greengrass_components" / "anomaly_detector",
            version=INFERENCE_VERSION,
            build_dir=work / "build",
        )
        gg.create_deployment(
            targetArn=group_arn,
            deploymentName=f"edgeml-{THING_GROUP}",
            components={
                INFERENCE_COMPONENT: {
                    "componentVersion": INFERENCE_VERSION,
                    "configurationUpdate": {"merge": json.dumps(_fleet_configuration(broker.port))},
                }
            },
        )

        # 3. The publisher Lambda, invoked with the S3 ObjectCreated event the upload would raise.
        published = _invoke_publisher(BUCKET, model_key, group_arn)
        LOG.info("publisher result: %s", json.dumps(published))
        deployment_id = str(published["published"][0]["deployment_id"])
        model_component_version = str(published["published"][0]["component_version"])

        # 4. The cloud side listens before any device can publish.
        listener = CloudListener(host=broker.host, port=broker.port)
        listener.start()
        stack.callback(listener.stop)

        # 5. Each device runs its deployment through the recipe's lifecycle (Install, then Run).
        runners = []
        for thing in things:
            runner = DeviceRunner(
                thing_name=thing,
                root=work / "devices" / thing,
                control=admin,
                store=S3ArtifactStore(s3),
                policy=LocalPolicy(interpolate_component_configuration=True, reuse_python=sys.executable),
                region=REGION,
            )
            stack.callback(runner.stop)
            runner.deploy()
            runners.append(runner)
        # A first heartbeat means the component is subscribed to its sensor topic.
        _wait(
            listener,
            "every device's first heartbeat",
            lambda _m, lst: set(lst.latest_health()) >= set(things),
            60,
        )

        # 6. Sensors replay one slice of the series per device; wait until every sample was scored.
        timestamps, values = sensors.load_series(series_csv)
        slices = sensors.split(series_csv.stem, timestamps, values, len(things))
        feeds = dict(zip(things, slices, strict=True))
        pids = {r.thing_name: _detector_pid(r) for r in runners}
        update: _ModelUpdate | None = None
        ingest_s = 0.0
        sent = dict.fromkeys(things, 0)
        for number, part in enumerate(_halves(feeds) if cfg.model_update else (feeds,)):
            if number == 1:
                # 6b. A second model, published as the first was; every device swaps it in while running.
                update = _publish_second_model(
                    s3,
                    work=work,
                    series_csv=series_csv,
                    fraction=cfg.train_fraction,
                    first_version=model_version,
                    group_arn=group_arn,
                )
                for runner in runners:
                    runner.sync()
                _wait(
                    listener, "every device to swap models", _all_on_model(things, update.model_version), 60
                )
            started = time.monotonic()
            more = sensors.publish(broker.host, broker.port, part)
            sent = {thing: sent[thing] + more[thing] for thing in things}
            _wait(listener, "every sample to be scored", _all_ingested(sent), 120)
            ingest_s += time.monotonic() - started
        restarts = sum(1 for r in runners if _detector_pid(r) != pids[r.thing_name])
        # 6c. The loop closes: every forwarded event acknowledged and deleted from its device's spool.
        spool_after_replay: dict[str, dict[str, int]] = {}
        acked_check = _all_acked(things, spool_after_replay)
        _wait(listener, "every forwarded event to be acknowledged", acked_check, 60)

        # 7. Stop the devices (SIGTERM, as a nucleus stops a component) and collect their summaries.
        stats = {}
        for runner in runners:
            runner.stop()
            stats[runner.thing_name] = _stat_lines(runner.stdout(INFERENCE_COMPONENT))
        forwarded = sum(int(s["anomalies_forwarded"]) for s in stats.values())
        if not listener.wait_until(
            lambda m: len([x for x in m if x.topic.endswith("/anomalies")]) >= forwarded, 30
        ):
            raise RuntimeError(
                f"cloud received {len(listener.snapshot('anomalies'))} of {forwarded} anomalies"
            )
        received = listener.snapshot()
        acked = list(listener.acked)
        states = {r.thing_name: {n: c.state.value for n, c in r.components.items()} for r in runners}
        # What the cloud knows about each device: the runners' status reports, read back through the API.
        cloud_view = {thing: _cloud_view(gg, thing) for thing in things}

    anomalies = [m for m in received if m.topic.endswith("/anomalies")]
    events = [msg.json() for msg in anomalies]
    windows = load_windows(cfg.corpus / "labels" / "combined_windows.json").get(cfg.series, [])
    hit, outside = _window_stats(events, windows)
    bytes_forwarded = sum(len(msg.payload) for msg in anomalies)
    heartbeat_bytes = sum(len(msg.payload) for msg in received if msg.topic.endswith("/health"))
    raw_bytes = sum(int(s["raw_bytes_in"]) for s in stats.values())
    samples_in = sum(int(s["samples_in"]) for s in stats.values())
    report_path = work / "report.html"
    write_report(
        build_report_data(
            series=cfg.series,
            model_path=model_dir / "model.onnx",
            feeds=feeds,
            received=received,
            stats=stats,
            states=states,
            windows=windows,
            lineage_extra={
                "model store key": f"s3://{BUCKET}/{model_key}",
                "model component": f"{MODEL_COMPONENT} {model_component_version}",
                "inference component": f"{INFERENCE_COMPONENT} {INFERENCE_VERSION}",
                "inference artifact": f"{component.artifact_uri} (sha256 {component.artifact_sha256[:16]}…)",
                "deployment": f"{deployment_id} → {THING_GROUP} ({len(things)} devices)",
                "training rows": f"{n_train:,} (first {cfg.train_fraction:.0%} of the series)",
                **(
                    {
                        "model update (mid-run)": (
                            f"{update.model_version} as {MODEL_COMPONENT} {update.component_version}, "
                            f"deployment {update.deployment_id}; charts show the first model's scores"
                        )
                    }
                    if update is not None
                    else {}
                ),
            },
        ),
        report_path,
    )
    screenshot_path: Path | None = work / "report.png"
    try:
        # Tall enough for every chart and the tables below them (bandwidth, anomalies, lineage).
        height = 640 * len(things) + 24 * forwarded + 1000
        screenshot(report_path, work / "report.png", window=(1400, height))
    except BrowserError as exc:
        # The HTML report is the product; the PNG is a convenience that needs the Debian chromium package.
        LOG.warning("no report screenshot: %s", exc)
        screenshot_path = None
    return DemoSummary(
        series=cfg.series,
        train_rows=n_train,
        model_version=model_version,
        model_component_version=model_component_version,
        deployment_id=deployment_id,
        samples_in=samples_in,
        anomalies_forwarded=forwarded,
        anomalies_received_by_cloud=len(anomalies),
        bytes_forwarded=bytes_forwarded,
        raw_bytes=raw_bytes,
        heartbeat_bytes=heartbeat_bytes,
        bandwidth_ratio=round(bytes_forwarded / raw_bytes, 5) if raw_bytes else 0.0,
        sent_ratio=round((bytes_forwarded + heartbeat_bytes) / raw_bytes, 5) if raw_bytes else 0.0,
        label_windows=len(windows),
        label_windows_hit=hit,
        anomalies_outside_windows=outside,
        samples_per_s=round(samples_in / ingest_s, 1) if ingest_s > 0 else 0.0,
        devices=things,
        device_status_in_cloud=cloud_view,
        report_path=str(report_path),
        screenshot_path=str(screenshot_path) if screenshot_path else None,
        model_update_version=update.model_version if update else None,
        model_update_component_version=update.component_version if update else None,
        model_update_deployment_id=update.deployment_id if update else None,
        # In order of first appearance on the anomaly events the cloud received.
        model_versions_seen=list(dict.fromkeys(str(e["model_version"]) for e in events)),
        component_restarts=restarts,
        acks_published=len(acked),
        spool_after_replay=spool_after_replay,
    )


def render(summary: DemoSummary) -> str:
    s = summary
    rows = [
        ("series", s.series),
        ("trained on (rows)", f"{s.train_rows:,} (first {s.train_rows / s.samples_in:.0%})"),
        ("model version", s.model_version),
        ("model component", f"com.edgeml.AnomalyModel {s.model_component_version}"),
        *(
            [
                (
                    "model update (mid-run)",
                    f"{s.model_update_version} (com.edgeml.AnomalyModel {s.model_update_component_version}),"
                    f" {s.component_restarts} component restarts",
                )
            ]
            if s.model_update_version
            else []
        ),
        ("model versions on events", ", ".join(s.model_versions_seen) or "-"),
        ("samples in", f"{s.samples_in:,}"),
        (
            "anomalies forwarded",
            f"{s.anomalies_forwarded:,} (cloud received {s.anomalies_received_by_cloud:,})",
        ),
        (
            "acks (cloud → device)",
            f"{s.acks_published:,} events acked; awaiting an ack after the replay: "
            f"{sum(v['awaiting_ack'] for v in s.spool_after_replay.values())} "
            f"(spool depth {sum(v['depth'] for v in s.spool_after_replay.values())})",
        ),
        ("anomaly bytes / raw", f"{s.bytes_forwarded:,} / {s.raw_bytes:,} = {s.bandwidth_ratio:.2%}"),
        (
            "all bytes sent / raw",
            f"{s.bytes_forwarded + s.heartbeat_bytes:,} (with {s.heartbeat_bytes:,} of heartbeats) / "
            f"{s.raw_bytes:,} = {s.sent_ratio:.2%}",
        ),
        ("NAB label windows hit", f"{s.label_windows_hit} of {s.label_windows}"),
        ("anomalies outside windows", f"{s.anomalies_outside_windows}"),
        ("devices", f"{len(s.devices)} ({', '.join(s.devices)}), one slice of the series each"),
        ("fleet throughput", f"{s.samples_per_s:,.0f} samples/s (publish to last heartbeat)"),
        ("report", f"{s.report_path}" + (f" (screenshot {s.screenshot_path})" if s.screenshot_path else "")),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    cfg = parse_args(argv)
    started = time.monotonic()
    summary = run(cfg)
    if cfg.summary_path:
        cfg.summary_path.write_text(json.dumps(asdict(summary), indent=2), encoding="utf-8")
    print(render(summary))
    LOG.info("demo finished in %.1f s; stand-ins stopped", time.monotonic() - started)
    return 0
