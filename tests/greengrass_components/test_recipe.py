from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

import greengrass_components
from tests.support.recipes import lower_keys

RECIPE = Path(greengrass_components.__file__).parent / "anomaly_detector" / "recipe.yaml"
SCHEMA = Path("/work/shared/schemas/greengrass-recipe.schema.json")
COMPONENT = "com.edgeml.AnomalyDetector"


def rendered(version: str = "1.2.0", uri: str = "s3://bucket/components/x/1.2.0/anomaly_detector.zip") -> Any:
    text = RECIPE.read_text()
    return yaml.safe_load(text.replace("{COMPONENT_VERSION}", version).replace("{ARTIFACT_URI}", uri))


def test_template_has_both_publisher_placeholders() -> None:
    text = RECIPE.read_text()
    assert 'ComponentVersion: "{COMPONENT_VERSION}"' in text
    assert 'URI: "{ARTIFACT_URI}"' in text


def test_rendered_recipe_validates_against_gdk_schema() -> None:
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(lower_keys(rendered())), key=str)
    assert errors == []


def test_schema_validation_would_catch_a_broken_recipe() -> None:
    broken = rendered()
    del broken["ComponentName"]
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
    with pytest.raises(jsonschema.ValidationError, match="'componentname' is a required property"):
        validator.validate(lower_keys(broken))


def test_identity_and_platforms() -> None:
    recipe = rendered()
    assert recipe["RecipeFormatVersion"] == "2020-01-25"
    assert recipe["ComponentName"] == COMPONENT
    assert recipe["ComponentVersion"] == "1.2.0"
    platforms = [(m["Platform"]["os"], m["Platform"]["architecture"]) for m in recipe["Manifests"]]
    assert platforms == [("linux", "amd64"), ("linux", "aarch64")]
    for manifest in recipe["Manifests"]:
        assert manifest["Artifacts"] == [
            {
                "URI": "s3://bucket/components/x/1.2.0/anomaly_detector.zip",
                "Unarchive": "ZIP",
                "Permission": {"Read": "OWNER", "Execute": "NONE"},
            }
        ]
    assert recipe["ComponentDependencies"]["com.edgeml.AnomalyModel"]["DependencyType"] == "SOFT"


def test_access_control_lists_exact_topics_and_no_wildcard_star() -> None:
    access = rendered()["ComponentConfiguration"]["DefaultConfiguration"]["accessControl"]
    assert access == {
        "aws.greengrass.ipc.mqttproxy": {
            f"{COMPONENT}:mqttproxy:1": {
                "policyDescription": access["aws.greengrass.ipc.mqttproxy"][f"{COMPONENT}:mqttproxy:1"][
                    "policyDescription"
                ],
                "operations": ["aws.greengrass#PublishToIoTCore"],
                "resources": ["edge/{iot:thingName}/anomalies", "edge/{iot:thingName}/health"],
            },
            # Acks (ack mode): subscribe on this device's own ack topic only, and publish nothing there.
            f"{COMPONENT}:mqttproxy:2": {
                "policyDescription": access["aws.greengrass.ipc.mqttproxy"][f"{COMPONENT}:mqttproxy:2"][
                    "policyDescription"
                ],
                "operations": ["aws.greengrass#SubscribeToIoTCore"],
                "resources": ["edge/{iot:thingName}/acks"],
            },
        },
        "aws.greengrass.ipc.pubsub": {
            f"{COMPONENT}:pubsub:1": {
                "policyDescription": access["aws.greengrass.ipc.pubsub"][f"{COMPONENT}:pubsub:1"][
                    "policyDescription"
                ],
                "operations": ["aws.greengrass#SubscribeToTopic"],
                "resources": ["sensors/#"],
            }
        },
    }
    assert "*" not in json.dumps(access)


def test_default_configuration_has_every_knob() -> None:
    config = rendered()["ComponentConfiguration"]["DefaultConfiguration"]
    assert config["model"] == {
        "component": "com.edgeml.AnomalyModel",
        "version": "",
        "sha256": "",
        "modelVersion": "",
    }
    assert config["sensorTopic"] == "sensors/#"
    assert config["anomalyTopic"] == "edge/{iot:thingName}/anomalies"
    assert config["healthTopic"] == "edge/{iot:thingName}/health"
    # Ack mode is off by default (docs/contracts.md §6c); the topic is ready for when it is turned on.
    assert config["ackTimeoutS"] == 0
    assert config["ackTopic"] == "edge/{iot:thingName}/acks"
    assert config["ackMaxResends"] == 10  # an event the cloud never acks is given up after that
    assert {"batchSize", "maxWaitMs", "cooldownSeconds", "healthIntervalSeconds", "logLevel"} <= set(config)


def test_run_reads_model_from_configuration_not_from_interpolation() -> None:
    for manifest in rendered()["Manifests"]:
        run = manifest["Lifecycle"]["Run"]["Script"]
        install = manifest["Lifecycle"]["Install"]["Script"]
        assert "-m anomaly_detector" in run
        assert "--kernel-root {kernel:rootPath}" in run
        assert "cd {artifacts:decompressedPath}" in run
        # Interpolating the model into Run would restart the component on every model (AWS-FACTS §2.9).
        assert "configuration:/model" not in run
        assert "AnomalyModel" not in run
        assert "--model " not in run
        # '#' in sensors/# must be quoted or the shell drops the rest of the line
        assert "--sensor-topic '{configuration:/sensorTopic}'" in run
        # The ack knobs reach the process (a missing flag would leave a deployment's value unused).
        for flag, key in (("--ack-timeout-s", "ackTimeoutS"), ("--ack-max-resends", "ackMaxResends")):
            assert f"{flag} '{{configuration:/{key}}}'" in run
        for pin in (
            "onnxruntime==1.31.1",
            "numpy==2.4.6",
            "orjson==3.13.0",
            "awsiotsdk==1.31.0",
            "paho-mqtt==2.2.0",
        ):
            assert pin in install
        assert "{work:path}/venv" in install


def test_every_configuration_flag_in_run_is_a_real_cli_option() -> None:
    from greengrass_components.anomaly_detector.config import build_arg_parser

    known = {opt for action in build_arg_parser()._actions for opt in action.option_strings}
    run = rendered()["Manifests"][0]["Lifecycle"]["Run"]["Script"]
    flags = {word for word in run.split() if word.startswith("--")}
    assert flags
    assert flags <= known
