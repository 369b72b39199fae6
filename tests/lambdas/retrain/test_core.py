"""The pure parts: reading the alarm event, naming the job, building the request, reading a template."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from lambdas.retrain.config import RetrainConfig, load_config
from lambdas.retrain.core import (
    AlarmEvent,
    TemplateJob,
    check_template,
    is_environment_job,
    job_name,
    parse_alarm_event,
    template_from_description,
    training_job_request,
    with_tags,
)
from lambdas.retrain.errors import BadRequestError, ConfigError, ForeignTemplateError
from tests.lambdas.retrain.helpers import (
    BUCKET,
    CONFIG,
    IMAGE,
    PREFIX,
    ROLE_ARN,
    alarm_event,
    launcher_request,
)


def test_alarm_event_is_read() -> None:
    alarm = parse_alarm_event(json.dumps(alarm_event()))
    assert alarm == AlarmEvent(
        alarm_name="edgeml-test-drift-score",
        state="ALARM",
        state_changed_at=datetime(2026, 11, 24, 20, 40, 5, 123000, tzinfo=UTC),
        reason="Threshold Crossed",
    )


def test_job_name_derives_from_the_state_change_time() -> None:
    alarm = parse_alarm_event(json.dumps(alarm_event()))
    assert job_name(PREFIX, alarm) == "edgeml-test-drift-20261124-204005"
    # Another offset, same instant: the same job.
    shifted = alarm_event(state={"value": "ALARM", "timestamp": "2026-11-24T21:40:05.9+0100"})
    assert job_name(PREFIX, parse_alarm_event(json.dumps(shifted))) == "edgeml-test-drift-20261124-204005"
    longest = job_name("a" * 24, alarm)
    assert len(longest) <= 63


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("not json", "message body is not JSON"),
        ("[1]", "message body must be a JSON object"),
        (json.dumps({**alarm_event(), "detail-type": "Scheduled Event"}), "expected detail-type"),
        (json.dumps(alarm_event(state={"value": "OK", "timestamp": "x"})), "got 'OK'"),
        (json.dumps({**alarm_event(), "detail": "x"}), "event has no detail.state object"),
        (json.dumps(alarm_event(alarmName="")), "event has no detail.alarmName"),
        (json.dumps(alarm_event(state={"value": "ALARM"})), "detail.state.timestamp must be a string"),
        (
            json.dumps(alarm_event(state={"value": "ALARM", "timestamp": "yesterday"})),
            "detail.state.timestamp 'yesterday' is not an ISO 8601 time",
        ),
        (
            json.dumps(alarm_event(state={"value": "ALARM", "timestamp": "2026-11-24T20:40:05"})),
            "has no UTC offset",
        ),
    ],
)
def test_bad_messages_are_refused(body: str, message: str) -> None:
    with pytest.raises(BadRequestError) as caught:
        parse_alarm_event(body)
    assert message in str(caught.value)


def _template(**overrides: Any) -> TemplateJob:
    found = template_from_description(launcher_request("edgeml-test-train-20261101000000", **overrides))
    assert found is not None
    return found


def test_template_is_read_from_a_job_description() -> None:
    template = _template(window_length="32")
    assert template.training_image == IMAGE
    assert template.code_uri.endswith("/input/code")
    assert template.drivers_uri.endswith("/input/sm_drivers")
    assert template.hyperparameters["window_length"] == "32"


def test_job_without_code_channels_is_no_template() -> None:
    description = launcher_request("edgeml-test-x")
    description["InputDataConfig"] = description["InputDataConfig"][:1]
    assert template_from_description(description) is None


def test_request_reuses_the_code_and_sets_the_rest_from_the_configuration() -> None:
    request = training_job_request(CONFIG, _template(window_length="32"), "edgeml-test-drift-20261124-204005")
    expected = launcher_request("edgeml-test-drift-20261124-204005", window_length="32")
    # A retraining gets a fresh model_version from training; model_name is the configured one.
    del expected["HyperParameters"]["model_version"]
    template_code = _template().code_uri
    expected["InputDataConfig"][1]["DataSource"]["S3DataSource"]["S3Uri"] = template_code
    expected["InputDataConfig"][2]["DataSource"]["S3DataSource"]["S3Uri"] = _template().drivers_uri
    assert request == expected
    assert request["RoleArn"] == ROLE_ARN
    assert (
        request["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] == f"s3://{BUCKET}/datasets/nab/"
    )


def test_config_is_read_from_the_environment() -> None:
    config = load_config(
        {
            "JOB_NAME_PREFIX": PREFIX,
            "TRAINING_ROLE_ARN": ROLE_ARN,
            "MODEL_STORE_BUCKET": BUCKET,
            "RETRAIN_DATASET": "nab",
            "RETRAIN_MODEL_NAME": "pump",
            "RETRAIN_INSTANCE_TYPE": "ml.c5.xlarge",
            "RETRAIN_MAX_RUNTIME_S": "1800",
            "RETRAIN_COOLDOWN_HOURS": "6",
        }
    )
    assert config == RetrainConfig(PREFIX, ROLE_ARN, BUCKET, "nab", "pump", "ml.c5.xlarge", 1800, 6)
    assert config.kms_key_arn is None


def test_the_model_store_key_is_read_from_the_environment() -> None:
    key = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    environ = {
        "JOB_NAME_PREFIX": PREFIX,
        "TRAINING_ROLE_ARN": ROLE_ARN,
        "MODEL_STORE_BUCKET": BUCKET,
        "RETRAIN_DATASET": "nab",
        "RETRAIN_MODEL_NAME": "pump",
        "MODEL_STORE_KEY_ARN": key,
    }
    assert load_config(environ).kms_key_arn == key


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"JOB_NAME_PREFIX": ""}, "environment variable JOB_NAME_PREFIX is required"),
        ({"TRAINING_ROLE_ARN": "role"}, "TRAINING_ROLE_ARN='role' does not match"),
        ({"RETRAIN_COOLDOWN_HOURS": "0"}, "RETRAIN_COOLDOWN_HOURS=0 must be positive"),
        ({"RETRAIN_COOLDOWN_HOURS": "soon"}, "RETRAIN_COOLDOWN_HOURS='soon' is not an integer"),
        ({"RETRAIN_INSTANCE_TYPE": "m5.large"}, "is not a SageMaker type"),
        ({"RETRAIN_MAX_RUNTIME_S": "9999999"}, "exceeds SageMaker's 2419200"),
        ({"MODEL_STORE_KEY_ARN": "alias/models"}, "MODEL_STORE_KEY_ARN='alias/models' does not match"),
    ],
)
def test_bad_config_is_refused(overrides: dict[str, str], message: str) -> None:
    environ = {
        "JOB_NAME_PREFIX": PREFIX,
        "TRAINING_ROLE_ARN": ROLE_ARN,
        "MODEL_STORE_BUCKET": BUCKET,
        "RETRAIN_DATASET": "nab",
        "RETRAIN_MODEL_NAME": "pump",
        **overrides,
    }
    with pytest.raises(ConfigError) as caught:
        load_config(environ)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("prefix", "name", "ours"),
    [
        ("edgeml", "edgeml-train-20261125120000", True),  # the launcher's (SDK) name
        ("edgeml", "edgeml-train-20261125120000-a1b2c3d4", True),  # with a uniqueness suffix
        ("edgeml", "edgeml-drift-20261125-120000", True),  # this function's
        # Environment "edgeml-staging": its jobs start with "edgeml-" too.
        ("edgeml", "edgeml-staging-train-20261125120000", False),
        ("edgeml", "edgeml-staging-drift-20261125-120000", False),
        ("edgeml-staging", "edgeml-staging-train-20261125120000", True),
        ("edgeml-staging", "edgeml-train-20261125120000", False),
        # Environments named like our job kinds: "edgeml-train", "edgeml-drift".
        ("edgeml", "edgeml-train-train-20261125120000", False),
        ("edgeml", "edgeml-train-drift-20261125-120000", False),
        ("edgeml", "edgeml-drift-drift-20261125-120000", False),
        ("edgeml-train", "edgeml-train-20261125120000", False),
        # An environment named like one of our job names: its jobs have a second segment after ours.
        ("ab", "ab-train-20261125120000-train-20261126120000", False),
        ("edgeml", "edgeml-20261125120000", False),
        ("edgeml", "edgeml-experiment-20261125120000", False),
        ("edgeml", "edgeml-drift-20261125-120000x", False),
    ],
)
def test_a_job_belongs_to_an_environment_by_its_exact_name_shape(prefix: str, name: str, ours: bool) -> None:
    assert is_environment_job(prefix, name) is ours


def test_job_names_this_function_makes_are_its_environments() -> None:
    alarm = parse_alarm_event(json.dumps(alarm_event()))
    assert is_environment_job(PREFIX, job_name(PREFIX, alarm))


def test_request_encrypts_the_output_with_the_configured_key() -> None:
    key = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    config = replace(CONFIG, kms_key_arn=key)
    request = training_job_request(config, _template(), "edgeml-test-drift-20261124-204005")
    assert request["OutputDataConfig"] == {
        "S3OutputPath": f"s3://{BUCKET}/training-output/",
        "CompressionType": "GZIP",
        "KmsKeyId": key,
    }
    unkeyed = training_job_request(CONFIG, _template(), "edgeml-test-drift-20261124-204005")
    assert "KmsKeyId" not in unkeyed["OutputDataConfig"]


def test_request_keeps_the_templates_volume_key_and_tags() -> None:
    key = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    description = launcher_request("edgeml-test-train-20261101000000")
    description["ResourceConfig"]["VolumeKmsKeyId"] = key
    template = template_from_description(description)
    assert template is not None
    # AWS's own tags (e.g. from CloudFormation or a pipeline) cannot be set in a request.
    tagged = with_tags(
        template,
        [
            {"Key": "cost-center", "Value": "ml"},
            {"Key": "aws:cloudformation:stack-name", "Value": "x"},
            {"Key": "owner", "Value": "team-a"},
        ],
    )

    request = training_job_request(CONFIG, tagged, "edgeml-test-drift-20261124-204005")

    assert request["ResourceConfig"] == {
        "InstanceType": "ml.m5.large",
        "InstanceCount": 1,
        "VolumeSizeInGB": 30,
        "VolumeKmsKeyId": key,
    }
    assert request["Tags"] == [{"Key": "cost-center", "Value": "ml"}, {"Key": "owner", "Value": "team-a"}]
    # A template without them gives a request without them (as the launcher sends none).
    plain = training_job_request(CONFIG, with_tags(_template(), []), "edgeml-test-drift-20261124-204005")
    assert "VolumeKmsKeyId" not in plain["ResourceConfig"]
    assert "Tags" not in plain


@pytest.mark.parametrize(
    ("channel", "uri"),
    [
        ("code", "s3://edgeml-test-staging-models/code/x/input/code"),
        ("sm_drivers", "s3://edgeml-test-staging-models/code/x/input/sm_drivers"),
        # Our bucket, but where the training role cannot read (the SDK's fallback under the output path).
        ("code", f"s3://{BUCKET}/training-output/code/x/input/code"),
        # A bucket whose name merely starts with ours.
        ("code", f"s3://{BUCKET}-copy/code/x/input/code"),
    ],
)
def test_a_template_outside_this_environments_code_prefix_is_refused(channel: str, uri: str) -> None:
    template = _template()
    foreign = replace(template, code_uri=uri) if channel == "code" else replace(template, drivers_uri=uri)
    with pytest.raises(ForeignTemplateError) as caught:
        check_template(CONFIG, foreign)
    assert f"has its {channel} channel at {uri}, outside this environment's s3://{BUCKET}/code/" in str(
        caught.value
    )
    check_template(CONFIG, template)  # the launcher's own layout passes


def test_the_volume_key_is_kept_only_on_the_instance_type_it_ran_on() -> None:
    key = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    description = launcher_request("edgeml-test-train-20261101000000")
    description["ResourceConfig"]["VolumeKmsKeyId"] = key
    template = template_from_description(description)
    assert template is not None
    local_storage = replace(CONFIG, instance_type="ml.g4dn.xlarge")  # refuses a volume key

    request = training_job_request(local_storage, template, "edgeml-test-drift-20261124-204005")

    assert request["ResourceConfig"]["InstanceType"] == "ml.g4dn.xlarge"
    assert "VolumeKmsKeyId" not in request["ResourceConfig"]
