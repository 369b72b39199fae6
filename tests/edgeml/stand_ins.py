"""The lifecycle tests' control plane (tests/lambdas/lifecycle/helpers.py), served over HTTP.

The CLI builds its own boto3 clients from the environment, so here moto runs as a real server
(``ThreadedMotoServer``) instead of ``mock_aws``, and the CLI reaches it and the Greengrass fake through
``--endpoint-url`` / ``--greengrass-endpoint-url``, as an operator's shell would.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import boto3
import requests

from tests.lambdas.lifecycle.helpers import (
    ACCOUNT,
    ENVIRONMENT,
    REGION,
    Plane,
    served_plane,
)
from tests.support.moto import moto_server


@dataclass
class ServerPlane:
    plane: Plane
    moto_url: str
    greengrass_url: str
    environment: dict[str, str]

    def endpoint_args(self) -> list[str]:
        return ["--endpoint-url", self.moto_url, "--greengrass-endpoint-url", self.greengrass_url]


@contextmanager
def server_plane(
    *, canary_group: str = "edgeml-canary", fleet_group: str = "edgeml-fleet"
) -> Iterator[ServerPlane]:
    with moto_server() as moto_url:
        # moto's backends are process-wide: start from an empty account whatever ran before.
        requests.post(f"{moto_url}/moto-api/reset", timeout=10).raise_for_status()
        s3 = boto3.client("s3", endpoint_url=moto_url, region_name=REGION)
        ddb = boto3.client("dynamodb", endpoint_url=moto_url, region_name=REGION)
        iot = boto3.client("iot", endpoint_url=moto_url, region_name=REGION)
        arn = f"arn:aws:iot:{REGION}:{ACCOUNT}:thinggroup/"
        environment = {
            **ENVIRONMENT,
            "TARGET_THING_GROUP_ARN": arn + canary_group,
            "FLEET_THING_GROUP_ARN": arn + fleet_group,
        }
        with served_plane(
            s3, ddb, iot, environment, canary_group=canary_group, fleet_group=fleet_group
        ) as plane:
            yield ServerPlane(
                plane=plane, moto_url=moto_url, greengrass_url=plane.endpoint_url, environment=environment
            )
