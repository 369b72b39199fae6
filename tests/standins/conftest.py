from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from botocore.model import ServiceModel

from standins.greengrass_fake import GreengrassV2Fake, RunningFake, serve
from standins.greengrass_fake.shapes import load_service_model
from tests.standins.greengrass_helpers import REGION, make_client


@pytest.fixture(autouse=True)
def _fake_aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_GREENGRASSV2", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture(scope="session")
def service_model() -> ServiceModel:
    return load_service_model()


@pytest.fixture
def fake(service_model: ServiceModel) -> GreengrassV2Fake:
    return GreengrassV2Fake(service_model=service_model)


@pytest.fixture
def running(fake: GreengrassV2Fake) -> Iterator[RunningFake]:
    with serve(fake) as server:
        yield server


@pytest.fixture
def gg(running: RunningFake) -> Any:
    return make_client(running.endpoint_url)


@pytest.fixture
def gg_unchecked(running: RunningFake) -> Any:
    """A client that sends whatever it is given, so the fake's own validation is what answers."""
    return make_client(running.endpoint_url, validate=False)
