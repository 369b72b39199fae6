from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.edgeml.stand_ins import ServerPlane, server_plane


@pytest.fixture(autouse=True)
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials and no ambient endpoints, so no test can reach a real AWS account."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SECURITY_TOKEN": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_GREENGRASSV2"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def plane(monkeypatch: pytest.MonkeyPatch) -> Iterator[ServerPlane]:
    """A moto server and the Greengrass fake over HTTP, with the Lambdas' environment set."""
    with server_plane() as running:
        for name, value in running.environment.items():
            monkeypatch.setenv(name, value)
        yield running
