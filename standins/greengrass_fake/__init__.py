"""In-memory fake of the AWS IoT Greengrass v2 control plane (moto has no `greengrassv2`).

Point boto3 at it with `boto3.client("greengrassv2", endpoint_url=running.endpoint_url)` or the
`AWS_ENDPOINT_URL_GREENGRASSV2` environment variable. Every request is checked against botocore's
`greengrassv2` service model.
"""

from standins.greengrass_fake.admin import AdminError, FakeAdminClient
from standins.greengrass_fake.errors import (
    ConflictError,
    GreengrassFakeError,
    ResourceNotFoundError,
    ValidationError,
)
from standins.greengrass_fake.server import RunningFake, serve
from standins.greengrass_fake.state import (
    ComponentSpec,
    DeploymentView,
    GreengrassV2Fake,
    InstalledComponentReport,
)

__all__ = [
    "AdminError",
    "ComponentSpec",
    "ConflictError",
    "DeploymentView",
    "FakeAdminClient",
    "GreengrassFakeError",
    "GreengrassV2Fake",
    "InstalledComponentReport",
    "ResourceNotFoundError",
    "RunningFake",
    "ValidationError",
    "serve",
]
