from __future__ import annotations

import pytest

from lambdas.publisher.config import DEFAULT_MAX_MODEL_BYTES, load_config
from lambdas.publisher.errors import ConfigError

ENV = {
    "MODEL_BUCKET": "edgeml-models",
    "INFERENCE_COMPONENT_VERSION": "1.2.0",
    "TARGET_THING_GROUP_ARN": "arn:aws:iot:eu-west-1:123456789012:thinggroup/pumps",
}


def test_minimal_environment_uses_contract_defaults():
    config = load_config(ENV)
    assert config.model_bucket == "edgeml-models"
    assert config.model_component_name == "com.edgeml.AnomalyModel"
    assert config.inference_component_name == "com.edgeml.AnomalyDetector"
    assert config.inference_component_version == "1.2.0"
    assert config.max_model_bytes == DEFAULT_MAX_MODEL_BYTES
    target = config.target
    assert (target.partition, target.region, target.account, target.name) == (
        "aws",
        "eu-west-1",
        "123456789012",
        "pumps",
    )


def test_overrides_are_read():
    config = load_config({**ENV, "MODEL_COMPONENT_NAME": "test.Model", "MAX_MODEL_BYTES": "1024"})
    assert (config.model_component_name, config.max_model_bytes) == ("test.Model", 1024)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"MODEL_BUCKET": ""}, "environment variable MODEL_BUCKET is required and is not set"),
        ({"INFERENCE_COMPONENT_VERSION": " "}, "INFERENCE_COMPONENT_VERSION is required"),
        (
            {"TARGET_THING_GROUP_ARN": "arn:aws:iot:eu-west-1:123456789012:thing/t1"},
            "is not a thing-group ARN",
        ),
        (
            {"INFERENCE_COMPONENT_VERSION": "latest"},
            "INFERENCE_COMPONENT_VERSION: 'latest' is not a semantic version",
        ),
        ({"MAX_MODEL_BYTES": "lots"}, "MAX_MODEL_BYTES='lots' is not an integer"),
        ({"MAX_MODEL_BYTES": "0"}, "MAX_MODEL_BYTES=0 must be positive"),
    ],
)
def test_bad_environment_is_refused(change, message):
    with pytest.raises(ConfigError) as caught:
        load_config({**ENV, **change})
    assert message in str(caught.value)
