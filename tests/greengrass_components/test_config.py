from __future__ import annotations

from pathlib import Path

import pytest

from greengrass_components.anomaly_detector.config import ModelRef, parse_config
from greengrass_components.anomaly_detector.errors import ConfigError

FILE_ARGS = ["--model", "m.onnx", "--source", "file", "--file", "d.csv", "--stream", "s"]


def test_thing_name_from_environment_and_topics_substituted() -> None:
    config = parse_config(
        [*FILE_ARGS, "--anomaly-topic", "edge/{iot:thingName}/anomalies"], env={"AWS_IOT_THING_NAME": "gw-07"}
    )
    assert config.thing_name == "gw-07"
    assert config.anomaly_topic == "edge/gw-07/anomalies"
    assert config.health_topic == "edge/gw-07/health"
    assert config.model_path == Path("m.onnx")
    assert config.source == "file"
    assert config.transport == "mqtt"


def test_cli_thing_name_wins_over_environment() -> None:
    config = parse_config([*FILE_ARGS, "--thing-name", "cli-gw"], env={"AWS_IOT_THING_NAME": "env-gw"})
    assert config.anomaly_topic == "edge/cli-gw/anomalies"


def test_greengrass_float_strings_are_accepted_for_integers() -> None:
    config = parse_config(
        [*FILE_ARGS, "--thing-name", "gw", "--batch-size", "32.0", "--mqtt-port", "1884.0"], env={}
    )
    assert config.batch_size == 32
    assert config.mqtt.port == 1884


@pytest.mark.parametrize(
    ("extra", "env", "message"),
    [
        ([], {}, "thing name is required"),
        (["--thing-name", "a/b"], {}, "must not contain"),
        (["--thing-name", "gw", "--batch-size", "0"], {}, "batch size must be >= 1, got 0"),
        (["--thing-name", "gw", "--max-wait-ms", "-1"], {}, "max wait ms must be a finite number >= 0"),
        (["--thing-name", "gw", "--anomaly-topic", "edge/#"], {}, "anomaly topic must be a concrete topic"),
        (["--thing-name", "gw", "--health-topic", "edge/{other}/h"], {}, "health topic must be a concrete"),
        (["--thing-name", "gw", "--model-sha256", "abc"], {}, "64 hex characters"),
        (["--thing-name", "gw", "--mqtt-cert", "c.pem"], {}, "--mqtt-cert and --mqtt-key go together"),
        (["--thing-name", "gw", "--log-level", "LOUD"], {}, "log level must be one of"),
        # A timeout this short spins the forwarder and resends every event (docs/configuration.md).
        (
            ["--thing-name", "gw", "--ack-timeout-s", "0.001"],
            {},
            r"ack timeout seconds must be 0 \(off\) or >= 10",
        ),
        (["--thing-name", "gw", "--ack-timeout-s", "9.9"], {}, r"or >= 10 .*got 9.9"),
        (
            ["--thing-name", "gw", "--ack-timeout-s", "-1"],
            {},
            "ack timeout seconds must be a finite number >= 0",
        ),
        (["--thing-name", "gw", "--ack-max-resends", "0"], {}, "ack max resends must be >= 1, got 0"),
        # The cloud refuses events of such streams (lambdas/ingest/events.py): refused before any is made.
        (["--thing-name", "gw", "--stream", "s" * 129], {}, "--stream: stream must be 1-128 characters"),
        (["--thing-name", "gw", "--stream", "a\tb"], {}, "without control characters"),
    ],
)
def test_invalid_configuration_is_refused(extra: list[str], env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config([*FILE_ARGS, *extra], env=env)


def test_ack_settings_are_read() -> None:
    config = parse_config(
        [*FILE_ARGS, "--thing-name", "gw", "--ack-timeout-s", "10.0", "--ack-max-resends", "3.0"]
    )
    assert (config.ack_timeout_s, config.ack_max_resends) == (10.0, 3)
    assert parse_config([*FILE_ARGS, "--thing-name", "gw"], env={}).ack_max_resends == 10


def test_file_source_needs_file_and_stream() -> None:
    with pytest.raises(ConfigError, match="--source file needs --file CSV and --stream NAME"):
        parse_config(["--model", "m.onnx", "--thing-name", "gw"], env={})


def test_model_or_kernel_root_is_required() -> None:
    with pytest.raises(ConfigError, match="give --model PATH, or --kernel-root"):
        parse_config(["--thing-name", "gw", "--source", "ipc"], env={})


def test_tls_settings_are_built() -> None:
    config = parse_config(
        [
            *FILE_ARGS,
            "--thing-name",
            "gw",
            "--mqtt-ca",
            "ca.pem",
            "--mqtt-cert",
            "c.pem",
            "--mqtt-key",
            "k.pem",
        ],
        env={},
    )
    assert config.mqtt.tls is not None
    assert (config.mqtt.tls.ca_file, config.mqtt.tls.cert_file, config.mqtt.tls.key_file) == (
        Path("ca.pem"),
        Path("c.pem"),
        Path("k.pem"),
    )


def test_model_ref_from_deployment_configuration_gives_artifact_path() -> None:
    value = {
        "component": "com.edgeml.AnomalyModel",
        "version": "1.0.3",
        "sha256": "ab" * 32,
        "modelVersion": "v9",
    }
    ref = ModelRef.from_config(value)
    assert ref == ModelRef("com.edgeml.AnomalyModel", "1.0.3", "ab" * 32, "v9")
    assert ref.path(Path("/greengrass/v2")) == Path(
        "/greengrass/v2/packages/artifacts/com.edgeml.AnomalyModel/1.0.3/model.onnx"
    )
    # the wrapped form {"model": {...}} is accepted too
    assert ModelRef.from_config({"model": value}) == ref


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"version": ""}, "model.version must be a semver string"),
        ({"version": "1.0.0", "sha256": "xyz"}, "model.sha256 must be 64 hex"),
        ({"version": "1.0.0", "component": "../etc"}, "model.component must be a component name"),
    ],
)
def test_model_ref_refuses_bad_values(value: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ModelRef.from_config(value)
