"""Every test under tests/lambdas runs with fake AWS credentials and no ambient endpoints."""

from __future__ import annotations

import pytest

from tests.support.aws import use_fake_credentials


@pytest.fixture(autouse=True)
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials and no ambient endpoints, so no test can reach a real AWS account."""
    use_fake_credentials(monkeypatch)
