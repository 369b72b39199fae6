"""Fake AWS credentials for tests, so that none can reach a real AWS account."""

from __future__ import annotations

import pytest

FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
# A moto *server* endpoint from the demo environment would bypass an in-process mock.
AMBIENT = ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_GREENGRASSV2")


def use_fake_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials and no ambient profile or endpoints, for the rest of the test."""
    for name, value in FAKE_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    for name in AMBIENT:
        monkeypatch.delenv(name, raising=False)
