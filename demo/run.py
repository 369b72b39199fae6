"""`make demo`: the whole loop on local stand-ins, with numbers at the end.

moto server (S3, IoT) + our Greengrass v2 fake + mosquitto (IoT Core's broker) are started as child
processes; a model is trained on the first 15% of a NAB series with the SageMaker entry point, stored in
the model store, published by the publisher Lambda's handler, resolved by a stand-in device from its
thing group's deployment, and run by the inference component (as published: the artifact archive, not
the source tree) over the whole series. Only anomalies cross the MQTT link; the listener on the cloud
side counts them.
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
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import boto3
import onnx

from greengrass_components.publish import publish_component
from standins import processes
from training import train
from training.nab_scorer import load_windows

from .cloud_listener import CloudListener
from .device import apply_deployment

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
THING = "demo-gateway-01"
NAB_PROBATION_FRACTION = 0.15


@dataclass(frozen=True)
class DemoConfig:
    corpus: Path
    series: str
    workdir: Path
    train_fraction: float
    summary_path: Path | None


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
    bytes_forwarded: int
    raw_bytes: int
    bandwidth_ratio: float
    label_windows: int
    label_windows_hit: int
    anomalies_outside_windows: int
    samples_per_s: float


def parse_args(argv: Sequence[str] | None) -> DemoConfig:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=SHARED_NAB, help="NAB-format corpus root")
    parser.add_argument("--series", default=SERIES, help="series under <corpus>/data/")
    parser.add_argument("--workdir", type=Path, default=REPO / ".demo", help="scratch folder (recreated)")
    parser.add_argument("--train-fraction", type=float, default=NAB_PROBATION_FRACTION)
    parser.add_argument("--summary-json", type=Path, default=None, help="also write the summary here")
    args = parser.parse_args(argv)
    return DemoConfig(
        corpus=args.corpus,
        series=args.series,
        workdir=args.workdir,
        train_fraction=args.train_fraction,
        summary_path=args.summary_json,
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


def _train(s3: Any, series_csv: Path, train_dir: Path, model_dir: Path, fraction: float) -> tuple[int, str]:
    n_train = _write_training_slice(series_csv, train_dir, fraction)
    s3.upload_file(str(train_dir / series_csv.name), BUCKET, f"datasets/demo/{series_csv.name}")
    args = ["--train", str(train_dir), "--model_dir", str(model_dir), "--model_name", "machine-temperature"]
    if train.main(args) != 0:
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


def run(cfg: DemoConfig) -> DemoSummary:
    series_csv = cfg.corpus / "data" / cfg.series
    if not series_csv.is_file():
        raise FileNotFoundError(f"series not found: {series_csv}")
    work = cfg.workdir
    if work.exists():
        subprocess.run(["rm", "-rf", str(work)], check=True)  # noqa: S603, S607 - our own scratch folder
    logs = work / "logs"
    logs.mkdir(parents=True)

    moto = processes.moto_server(log_path=logs / "moto.log")
    broker = processes.mosquitto(work / "broker", log_path=logs / "mosquitto.log")
    with contextlib.ExitStack() as stack:
        stack.enter_context(moto)
        moto_url = f"http://{moto.host}:{moto.port}"
        greengrass = processes.greengrass_fake(s3_endpoint=moto_url, log_path=logs / "greengrass-fake.log")
        # The fake reads S3 through boto3 too, so it starts inside the same local-AWS environment.
        stack.enter_context(_local_aws_env(moto_url, f"http://{greengrass.host}:{greengrass.port}"))
        stack.enter_context(greengrass)
        stack.enter_context(broker)
        LOG.info(
            "stand-ins up", extra={"moto": moto.port, "greengrass": greengrass.port, "mqtt": broker.port}
        )

        s3, iot, gg = _client("s3", moto_url), _client("iot", moto_url), boto3.client("greengrassv2")
        s3.create_bucket(Bucket=BUCKET)
        group_arn = iot.create_thing_group(thingGroupName=THING_GROUP)["thingGroupArn"]
        iot.create_thing(thingName=THING)
        iot.add_thing_to_thing_group(thingGroupName=THING_GROUP, thingName=THING)

        # 1. Train exactly as SageMaker would run the entry point (SM_* contract), on the first 15%.
        model_dir = work / "model"
        n_train, model_version = _train(
            s3, series_csv, work / "input" / "train", model_dir, cfg.train_fraction
        )

        # 2. Store the model (written once, version-addressed) and publish the inference component's code.
        model_key = f"models/machine-temperature/{model_version}/model.onnx"
        s3.upload_file(str(model_dir / "model.onnx"), BUCKET, model_key)
        publish_component(
            s3=s3,
            greengrass=gg,
            bucket=BUCKET,
            component_dir=REPO / "greengrass_components" / "anomaly_detector",
            version=INFERENCE_VERSION,
            build_dir=work / "build",
        )

        # 3. The publisher Lambda, invoked with the S3 ObjectCreated event the upload would raise.
        published = _invoke_publisher(BUCKET, model_key, group_arn)
        LOG.info("publisher result: %s", json.dumps(published))

        # 4. The device resolves its group's deployment, fetches and checks artifacts, runs the component.
        device_root = work / "device" / THING
        deployment = apply_deployment(gg, s3, target_arn=group_arn, root=device_root)
        model_cfg = deployment.components[INFERENCE_COMPONENT].configuration["model"]
        model_path = (
            device_root
            / "packages"
            / "artifacts"
            / model_cfg["component"]
            / model_cfg["version"]
            / "model.onnx"
        )
        listener = CloudListener(host=broker.host, port=broker.port)
        listener.start()
        stack.callback(listener.stop)
        summary = _run_component(
            deployment.components[INFERENCE_COMPONENT].unarchived[0],
            model_path=model_path,
            model_sha256=str(model_cfg["sha256"]),
            series_csv=series_csv,
            broker_port=broker.port,
            stats_path=work / "component-stats.json",
            log_path=logs / "component.log",
        )
        forwarded = int(summary["anomalies_forwarded"])
        if not listener.wait_for(forwarded, timeout_s=30):
            raise RuntimeError(f"cloud received {len(listener.snapshot())} of {forwarded} anomalies")
        received = listener.snapshot()

    events = [msg.json() for msg in received]
    windows = load_windows(cfg.corpus / "labels" / "combined_windows.json").get(cfg.series, [])
    hit, outside = _window_stats(events, windows)
    bytes_forwarded = sum(len(msg.payload) for msg in received)
    raw_bytes = int(summary["raw_bytes_in"])
    return DemoSummary(
        series=cfg.series,
        train_rows=n_train,
        model_version=model_version,
        model_component_version=str(model_cfg["version"]),
        deployment_id=deployment.deployment_id,
        samples_in=int(summary["samples_in"]),
        anomalies_forwarded=forwarded,
        anomalies_received_by_cloud=len(received),
        bytes_forwarded=bytes_forwarded,
        raw_bytes=raw_bytes,
        bandwidth_ratio=round(bytes_forwarded / raw_bytes, 5) if raw_bytes else 0.0,
        label_windows=len(windows),
        label_windows_hit=hit,
        anomalies_outside_windows=outside,
        samples_per_s=float(summary["samples_per_s"]),
    )


def _run_component(
    package_dir: Path,
    *,
    model_path: Path,
    model_sha256: str,
    series_csv: Path,
    broker_port: int,
    stats_path: Path,
    log_path: Path,
) -> dict[str, Any]:
    """Run the inference component from its unarchived artifact, as the recipe's Run step would."""
    argv = [
        sys.executable,
        "-m",
        package_dir.name,
        "--thing-name",
        THING,
        "--model",
        str(model_path),
        "--model-sha256",
        model_sha256,
        "--source",
        "file",
        "--file",
        str(series_csv),
        "--stream",
        series_csv.stem,
        "--transport",
        "mqtt",
        "--mqtt-port",
        str(broker_port),
        "--stats-json",
        str(stats_path),
    ]
    # cwd is the unarchived artifact's parent so `-m anomaly_detector` imports the published code.
    with log_path.open("ab") as log:
        done = subprocess.run(  # noqa: S603 - argv built above from our own paths
            argv, cwd=package_dir.parent, check=False, timeout=900, stdout=log, stderr=log
        )
    if done.returncode != 0:
        raise RuntimeError(f"inference component exited with {done.returncode}: see {log_path}")
    summary: dict[str, Any] = json.loads(stats_path.read_text(encoding="utf-8"))
    return summary


def render(summary: DemoSummary) -> str:
    s = summary
    rows = [
        ("series", s.series),
        ("trained on (rows)", f"{s.train_rows:,} (first {s.train_rows / s.samples_in:.0%})"),
        ("model version", s.model_version),
        ("model component", f"com.edgeml.AnomalyModel {s.model_component_version}"),
        ("samples in", f"{s.samples_in:,}"),
        (
            "anomalies forwarded",
            f"{s.anomalies_forwarded:,} (cloud received {s.anomalies_received_by_cloud:,})",
        ),
        ("bytes forwarded / raw", f"{s.bytes_forwarded:,} / {s.raw_bytes:,} = {s.bandwidth_ratio:.2%}"),
        ("NAB label windows hit", f"{s.label_windows_hit} of {s.label_windows}"),
        ("anomalies outside windows", f"{s.anomalies_outside_windows}"),
        ("edge throughput", f"{s.samples_per_s:,.0f} samples/s"),
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
