"""A new model reaches a running device without a restart; a corrupt one is vetoed, the last good one stays.

Real processes throughout: moto server (S3), the Greengrass v2 fake, mosquitto, and the inference component
run by the local device runner from the published recipe. Two models are trained with the SageMaker entry
point and published by the publisher Lambda's handler (each a new ``com.edgeml.AnomalyModel`` version and a
new deployment revision for the thing group); a third, corrupt one is published the way a model that
skipped the publisher's validation would arrive, and the component vetoes it in the deployment's
validation phase. A paced sensor stream flows over MQTT throughout.
"""

from __future__ import annotations

import csv
import hashlib
import json
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlparse

import boto3
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from demo.cloud_listener import CloudListener
from device import ConfigurationValidationError
from device.runner import DeploymentUpdate, DeviceRunner, LocalPolicy, S3ArtifactStore
from greengrass_components.publish import publish_component
from lambdas.publisher.adapters import GreengrassComponents, GreengrassDeployments, S3ModelStore
from lambdas.publisher.config import ThingGroupArn, load_config
from lambdas.publisher.core import ComponentVersionRef, RolloutPolicy, plan_model_deployment
from lambdas.publisher.handler import Dependencies, handle
from lambdas.publisher.recipe import recipe_json
from standins import processes
from standins.greengrass_fake.admin import FakeAdminClient
from training import train

REPO = Path(__file__).resolve().parents[2]
SERIES = REPO / "tests" / "training" / "data" / "machine_temperature_head2500.csv"
REGION = "us-east-1"
BUCKET = "edgeml-model-store-e2e"
GROUP = "edgeml-e2e-fleet"
THING = "e2e-gateway-01"
DETECTOR = "com.edgeml.AnomalyDetector"
MODEL = "com.edgeml.AnomalyModel"
MODEL_NAME = "machine-temperature"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
}

# The stream: samples [0, SWAP_GATE) flow while model B is published; the rest only after the swap (and
# after the corrupt model's rejection for [REJECT_GATE, end)). One spike in each part makes an event.
TRAIN_ROWS = 1000
PUBLISH_B_AT = 600
SWAP_GATE = 2000
REJECT_GATE = 2300
SPIKES = (350, 2150, 2400)
SPIKE = 40.0
PER_MESSAGE = 10
PACE_S = 0.01
DEADLINE_S = 60.0


@dataclass(frozen=True)
class Story:
    """Everything observed along the way; the tests below each check one claim."""

    timestamps: list[float]
    sent: int
    pid_a: int
    pid_b: int
    pid_c: int
    update_b: DeploymentUpdate
    failure_c: str
    samples_at_publish_b: int
    health_at_swap: dict[str, Any]
    health_at_reject: dict[str, Any]
    final_health: dict[str, Any]
    events: list[dict[str, Any]]
    summary: dict[str, Any]
    component_log: str
    cloud_after_b: dict[str, Any]
    cloud: dict[str, Any]
    reason_c: str | None
    deployment_b: str
    deployment_c: str
    model_b_component_version: str
    exit_codes: dict[str, int | None]
    downloads: list[str]
    published_b: dict[str, Any]


class TokenExchangeScopedStore:
    """The device's artifact downloads, limited as the token-exchange role limits them
    (infra/parts/fleet.py): objects under ``components/`` only, never the candidates under ``models/``."""

    def __init__(self, inner: S3ArtifactStore) -> None:
        self._inner = inner
        self.downloads: list[str] = []

    def get(self, uri: str) -> bytes:
        if not urlparse(uri).path.lstrip("/").startswith("components/"):
            raise PermissionError(f"AccessDenied: the token-exchange role cannot read {uri}")
        self.downloads.append(uri)
        return self._inner.get(uri)


def _train(out: Path, version: str, *hyperparameters: str) -> Path:
    argv = ["--train", str(SERIES), "--model_dir", str(out), "--model_name", MODEL_NAME]
    argv += ["--model_version", version, "--train_rows", str(TRAIN_ROWS), *hyperparameters]
    assert train.main(argv) == train.EXIT_OK
    return out / "model.onnx"


def _series() -> tuple[list[float], list[float]]:
    with SERIES.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    stamps = [datetime.fromisoformat(r["timestamp"]).replace(tzinfo=UTC).timestamp() for r in rows]
    values = [float(r["value"]) for r in rows]
    for index in SPIKES:
        values[index] += SPIKE
    return stamps, values


class PacedSensor:
    """Publishes ``sensors/<thing>/<stream>`` messages (columnar, contracts §5) at a steady pace, QoS 1."""

    def __init__(self, port: int, stamps: list[float], values: list[float]) -> None:
        self._stamps, self._values = stamps, values
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="e2e-sensor")
        self._client.connect(processes.LOOPBACK, port)
        self._client.loop_start()

    def send(self, start: int, end: int) -> threading.Thread:
        def run() -> None:
            for first in range(start, end, PER_MESSAGE):
                last = min(first + PER_MESSAGE, end)
                body = {
                    "stream": "machine-temperature-1",
                    "timestamps": self._stamps[first:last],
                    "values": {"value": self._values[first:last]},
                }
                info = self._client.publish(f"sensors/{THING}/machine-temperature-1", json.dumps(body), qos=1)
                info.wait_for_publish(timeout=10)
                time.sleep(PACE_S)

        thread = threading.Thread(target=run, name=f"sensor-{start}", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


def _health(
    listener: CloudListener, what: str, condition: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """The first newest-heartbeat that satisfies ``condition``, polled until a deadline."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        health = listener.latest_health().get(THING)
        if health is not None and condition(health):
            return health
        time.sleep(0.05)
    raise AssertionError(
        f"timed out waiting for {what}; last heartbeat: {listener.latest_health().get(THING)}"
    )


def _cloud(gg: Any) -> dict[str, Any]:
    """What the cloud API says about the device: its deployments' status and its components."""
    effective = gg.list_effective_deployments(coreDeviceThingName=THING)["effectiveDeployments"]
    installed = gg.list_installed_components(coreDeviceThingName=THING)["installedComponents"]
    return {
        "deployments": {d["deploymentId"]: d["coreDeviceExecutionStatus"] for d in effective},
        "components": {c["componentName"]: (c["componentVersion"], c["lifecycleState"]) for c in installed},
    }


def _pid(runner: DeviceRunner) -> int:
    process = runner.components[DETECTOR].process
    assert process is not None
    assert process.poll() is None, f"the detector exited: {runner.components[DETECTOR].exit_code}"
    return process.pid


def _publish_event(key: str) -> dict[str, Any]:
    """The S3 ObjectCreated notification the model upload raises (what triggers the publisher)."""
    return {
        "Records": [
            {
                "eventSource": "aws:s3",
                "eventName": "ObjectCreated:Put",
                "awsRegion": REGION,
                "s3": {"bucket": {"name": BUCKET}, "object": {"key": key}},
            }
        ]
    }


def _publish_corrupt_model(gg: Any, s3: Any, group_arn: str) -> str:
    """A model that never went through the publisher's validation: a new component version + revision.

    It is built exactly as the publisher builds one (same recipe shape, same deployment planning), so the
    device sees what it would see if a bad model reached the registry some other way.
    """
    data = b"this is not an ONNX model"
    # Where the publisher would put a released model: the only prefix the device may download from.
    key = f"components/{MODEL}/1.0.2/model.onnx"
    s3.put_object(Bucket=BUCKET, Key=key, Body=data)
    sha256 = hashlib.sha256(data).hexdigest()
    recipe = {
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": MODEL,
        "ComponentVersion": "1.0.2",
        "ComponentPublisher": "edgeml",
        "ComponentConfiguration": {"DefaultConfiguration": {"modelVersion": "mt-c", "sha256": sha256}},
        "Manifests": [
            {
                "Platform": {"os": "linux"},
                "Artifacts": [
                    {"URI": f"s3://{BUCKET}/{key}", "Unarchive": "NONE", "Permission": {"Read": "OWNER"}}
                ],
                "Lifecycle": {},
            }
        ],
    }
    created = GreengrassComponents(gg).create(recipe_json(recipe))
    deployments = GreengrassDeployments(gg)
    target = ThingGroupArn.parse(group_arn)
    request = plan_model_deployment(
        deployments.latest_for_target(group_arn),
        target=target,
        inference_component_name=DETECTOR,
        inference_component_version="1.0.0",
        model_component=ComponentVersionRef(name=MODEL, version=created.version, arn=created.arn),
        model_configuration={
            "component": MODEL,
            "version": "1.0.2",
            "sha256": sha256,
            "modelVersion": "mt-c",
        },
        rollout=RolloutPolicy(),
    )
    return deployments.create(request)


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Story:  # noqa: PLR0915 - one linear story
    work = tmp_path_factory.mktemp("model-update")
    logs = work / "logs"
    logs.mkdir()
    stamps, values = _series()
    model_a = _train(work / "model-a", "mt-a")
    # Different hyperparameters (and version): a different model, as a retraining would produce.
    model_b = _train(work / "model-b", "mt-b", "--ridge_alpha", "0.01", "--threshold_quantile", "0.99")

    moto = processes.moto_server(log_path=logs / "moto.log")
    broker = processes.mosquitto(work / "broker", log_path=logs / "mosquitto.log")
    with moto, broker:
        moto_url = f"http://{moto.host}:{moto.port}"
        fake = processes.greengrass_fake(s3_endpoint=moto_url, log_path=logs / "greengrass-fake.log")
        fake.env = CREDENTIALS
        with fake:
            fake_url = f"http://{fake.host}:{fake.port}"
            s3 = boto3.client("s3", endpoint_url=moto_url, region_name=REGION, **_keys())
            iot = boto3.client("iot", endpoint_url=moto_url, region_name=REGION, **_keys())
            gg = boto3.client("greengrassv2", endpoint_url=fake_url, region_name=REGION, **_keys())
            admin = FakeAdminClient(fake_url)
            s3.create_bucket(Bucket=BUCKET)
            group_arn = iot.create_thing_group(thingGroupName=GROUP)["thingGroupArn"]
            admin.set_thing_group_members(GROUP, [THING])
            publish_component(
                s3=s3,
                greengrass=gg,
                bucket=BUCKET,
                component_dir=REPO / "greengrass_components" / "anomaly_detector",
                version="1.0.0",
                build_dir=work / "build",
            )
            gg.create_deployment(
                targetArn=group_arn,
                deploymentName=f"edgeml-{GROUP}",
                components={
                    DETECTOR: {
                        "componentVersion": "1.0.0",
                        "configurationUpdate": {
                            "merge": json.dumps(
                                {
                                    "source": "mqtt",
                                    "transport": "mqtt",
                                    "mqttHost": processes.LOOPBACK,
                                    "mqttPort": broker.port,
                                    "sensorTopic": "sensors/{iot:thingName}/#",
                                    "healthIntervalSeconds": 1,
                                }
                            )
                        },
                    }
                },
            )
            deps = Dependencies(
                config=load_config(
                    {
                        "MODEL_BUCKET": BUCKET,
                        "MODEL_COMPONENT_NAME": MODEL,
                        "INFERENCE_COMPONENT_NAME": DETECTOR,
                        "INFERENCE_COMPONENT_VERSION": "1.0.0",
                        "TARGET_THING_GROUP_ARN": group_arn,
                    }
                ),
                store=S3ModelStore(s3),
                components=GreengrassComponents(gg),
                deployments=GreengrassDeployments(gg),
            )

            def publish(model: Path, version: str) -> dict[str, Any]:
                key = f"models/{MODEL_NAME}/{version}/model.onnx"
                s3.upload_file(str(model), BUCKET, key)
                response = handle(_publish_event(key), deps)
                published = cast("list[dict[str, Any]]", response["published"])
                return published[0]

            publish(model_a, "mt-a")
            listener = CloudListener(host=broker.host, port=broker.port)
            listener.start()
            sensor = PacedSensor(broker.port, stamps, values)
            device_store = TokenExchangeScopedStore(S3ArtifactStore(s3))
            runner = DeviceRunner(
                thing_name=THING,
                root=work / "device",
                control=admin,
                store=device_store,
                policy=LocalPolicy(interpolate_component_configuration=True, reuse_python=sys.executable),
                region=REGION,
            )
            try:
                runner.deploy()
                _health(listener, "the first heartbeat (subscribed)", lambda h: h["model_version"] == "mt-a")
                pid_a = _pid(runner)

                # Model B is published while samples flow.
                first = sensor.send(0, SWAP_GATE)
                at_publish = _health(listener, "streaming", lambda h: h["samples_in"] >= PUBLISH_B_AT)
                published_b = publish(model_b, "mt-b")
                update_b = runner.sync()
                assert update_b is not None
                cloud_after_b = _cloud(gg)
                at_swap = _health(listener, "model B swapped in", lambda h: h["model_version"] == "mt-b")
                pid_b = _pid(runner)
                first.join(DEADLINE_S)
                sensor.send(SWAP_GATE, REJECT_GATE).join(DEADLINE_S)
                _health(listener, "samples before C", lambda h: h["samples_in"] == REJECT_GATE)

                # A corrupt model C: the device downloads it, the component vetoes it and keeps B.
                deployment_c = _publish_corrupt_model(gg, s3, group_arn)
                with pytest.raises(ConfigurationValidationError) as vetoed:
                    runner.sync()
                at_reject = _health(listener, "model C refused", lambda h: h["models_rejected"] >= 1)
                pid_c = _pid(runner)
                sensor.send(REJECT_GATE, len(values)).join(DEADLINE_S)
                final = _health(listener, "every sample", lambda h: h["samples_in"] == len(values))
                cloud = _cloud(gg)
                effective = gg.list_effective_deployments(coreDeviceThingName=THING)["effectiveDeployments"]
                reason_c = next(d.get("reason") for d in effective if d["deploymentId"] == deployment_c)
            finally:
                exit_codes = runner.stop()
                sensor.close()
            summary = json.loads(runner.stdout(DETECTOR).splitlines()[-1])
            forwarded = int(summary["anomalies_forwarded"])
            assert listener.wait_until(
                lambda msgs: len([m for m in msgs if m.topic.endswith("/anomalies")]) >= forwarded, 10
            )
            events = [m.json() for m in listener.snapshot("anomalies")]
            listener.stop()
    return Story(
        timestamps=stamps,
        sent=len(values),
        pid_a=pid_a,
        pid_b=pid_b,
        pid_c=pid_c,
        update_b=update_b,
        failure_c=str(vetoed.value),
        samples_at_publish_b=int(at_publish["samples_in"]),
        health_at_swap=at_swap,
        health_at_reject=at_reject,
        final_health=final,
        events=events,
        summary=summary,
        component_log=(work / "device" / "logs" / f"{DETECTOR}.log").read_text(encoding="utf-8"),
        cloud_after_b=cloud_after_b,
        cloud=cloud,
        reason_c=reason_c,
        deployment_b=str(published_b["deployment_id"]),
        deployment_c=deployment_c,
        model_b_component_version=str(published_b["component_version"]),
        exit_codes=exit_codes,
        downloads=list(device_store.downloads),
        published_b=published_b,
    )


def _keys() -> dict[str, str]:
    return {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _log_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_the_runner_hands_model_b_to_the_running_component_without_a_restart(story: Story) -> None:
    assert story.update_b.installed == (MODEL,)
    assert story.update_b.reconfigured == (DETECTOR,)
    assert story.update_b.restarted == ()
    assert story.pid_b == story.pid_a
    assert story.model_b_component_version == "1.0.1"


def test_the_component_swapped_mid_stream_and_reported_it(story: Story) -> None:
    # Samples kept arriving between the publish and the swap: the swap happened on a live stream.
    assert story.samples_at_publish_b < story.health_at_swap["samples_in"]
    assert story.health_at_swap["model_swaps"] == 1
    swaps = [e for e in _log_lines(story.component_log) if e.get("message") == "model swapped"]
    assert [(e["from"], e["to"]) for e in swaps] == [("mt-a", "mt-b")]


def test_events_before_the_swap_carry_model_a_and_after_it_model_b(story: Story) -> None:
    gate = story.timestamps[SWAP_GATE]
    before = {e["model_version"] for e in story.events if _ts(e["end"]) < story.timestamps[PUBLISH_B_AT]}
    after = [e["model_version"] for e in story.events if _ts(e["start"]) >= gate]
    assert before == {"mt-a"}
    # Both later spikes (one after the swap, one after C was refused) were scored by model B only.
    spikes_after = {s for s in SPIKES if s >= SWAP_GATE}
    hit = {
        s
        for s in spikes_after
        for e in story.events
        if _ts(e["start"]) <= story.timestamps[s] <= _ts(e["end"])
    }
    assert hit == spikes_after
    assert after
    assert set(after) == {"mt-b"}


def test_no_sample_was_dropped(story: Story) -> None:
    assert story.final_health["samples_in"] == story.sent
    assert story.summary["samples_in"] == story.sent
    assert story.summary["input_dropped"] == 0
    assert story.summary["rejects"] == {}


def test_the_cloud_shows_b_succeeded_and_c_failed_with_the_components_reason(story: Story) -> None:
    assert story.cloud_after_b == {
        "deployments": {story.deployment_b: "SUCCEEDED"},
        "components": {DETECTOR: ("1.0.0", "RUNNING"), MODEL: ("1.0.1", "FINISHED")},
    }
    # One deployment per target: revision C replaced B's. The component vetoed it in the validation
    # phase, so it FAILED with no state change: the device still runs model component 1.0.1.
    assert story.cloud == {
        "deployments": {story.deployment_c: "FAILED"},
        "components": {DETECTOR: ("1.0.0", "RUNNING"), MODEL: ("1.0.1", "FINISHED")},
    }
    assert story.reason_c == story.failure_c
    assert story.failure_c.startswith(
        "Components reported that their to-be-deployed configuration is invalid "
        f"{{ name = {DETECTOR}, message = model 1.0.2 fails validation"
    )


def test_a_corrupt_model_is_vetoed_and_model_b_keeps_running(story: Story) -> None:
    assert story.pid_c == story.pid_a
    assert story.health_at_reject["models_rejected"] == 1
    assert story.health_at_reject["model_version"] == "mt-b"
    assert story.final_health["model_version"] == "mt-b"
    assert story.final_health["model_swaps"] == 1
    vetoed = [e for e in _log_lines(story.component_log) if e.get("message") == "configuration vetoed"]
    assert [e["deployment_id"] for e in vetoed] == [story.deployment_c]
    # Vetoed before it was applied: the watcher never tried to swap it in.
    assert not [
        e
        for e in _log_lines(story.component_log)
        if e.get("message") == "model refused, keeping the running model"
    ]
    after_reject = [
        e["model_version"] for e in story.events if _ts(e["start"]) >= story.timestamps[REJECT_GATE]
    ]
    assert after_reject
    assert set(after_reject) == {"mt-b"}


def test_the_device_stopped_cleanly_and_left_no_process(story: Story) -> None:
    assert story.exit_codes == {MODEL: None, DETECTOR: 0}
    assert not Path(f"/proc/{story.pid_a}").exists()


def test_the_device_downloads_released_models_from_components_only(story: Story) -> None:
    artifact_b = f"s3://{BUCKET}/components/{MODEL}/1.0.1/model.onnx"
    assert story.published_b["artifact_uri"] == artifact_b
    assert story.published_b["model_uri"] == f"s3://{BUCKET}/models/{MODEL_NAME}/mt-b/model.onnx"
    # Every download passed the token-exchange scope; the three model versions came from components/.
    assert [uri for uri in story.downloads if uri.endswith("/model.onnx")] == [
        f"s3://{BUCKET}/components/{MODEL}/1.0.0/model.onnx",
        artifact_b,
        f"s3://{BUCKET}/components/{MODEL}/1.0.2/model.onnx",
    ]
