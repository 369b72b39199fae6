from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.edgeml.stand_ins import ServerPlane, server_plane
from tests.support.aws import use_fake_credentials


@pytest.fixture(autouse=True)
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials and no ambient endpoints, so no test can reach a real AWS account."""
    use_fake_credentials(monkeypatch)


@pytest.fixture
def plane(monkeypatch: pytest.MonkeyPatch) -> Iterator[ServerPlane]:
    """A moto server and the Greengrass fake over HTTP, with the Lambdas' environment set."""
    with server_plane() as running:
        for name, value in running.environment.items():
            monkeypatch.setenv(name, value)
        yield running
