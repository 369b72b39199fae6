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
from moto.server import ThreadedMotoServer

from lambdas.lifecycle.config import load_config
from lambdas.lifecycle.registry import LINEAGE_TABLE_SCHEMA
from lambdas.publisher.config import load_config as load_publisher_config
from standins.greengrass_fake import GreengrassV2Fake, serve
from standins.processes import free_port
from tests.lambdas.lifecycle.helpers import (
    ACCOUNT,
    BUCKET,
    CANARY_THINGS,
    ENVIRONMENT,
    FLEET_THINGS,
    LINEAGE_TABLE,
    REGION,
    Plane,
    inference_recipe,
)


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
    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    moto_url = f"http://127.0.0.1:{port}"
    try:
        # moto's backends are process-wide: start from an empty account whatever ran before.
        requests.post(f"{moto_url}/moto-api/reset", timeout=10).raise_for_status()
        s3 = boto3.client("s3", endpoint_url=moto_url, region_name=REGION)
        s3.create_bucket(Bucket=BUCKET)
        ddb = boto3.client("dynamodb", endpoint_url=moto_url, region_name=REGION)
        ddb.create_table(**LINEAGE_TABLE_SCHEMA.create_table_kwargs(LINEAGE_TABLE))
        iot = boto3.client("iot", endpoint_url=moto_url, region_name=REGION)
        for group, things in ((canary_group, CANARY_THINGS), (fleet_group, FLEET_THINGS)):
            iot.create_thing_group(thingGroupName=group)
            for thing in things:
                iot.create_thing(thingName=thing)
                iot.add_thing_to_thing_group(thingGroupName=group, thingName=thing)
        fake = GreengrassV2Fake(s3_client=s3, iot_client=iot)
        for thing in CANARY_THINGS + FLEET_THINGS:
            fake.register_core_device(thing)
        with serve(fake=fake, host="127.0.0.1", port=0) as running:
            gg = boto3.client("greengrassv2", endpoint_url=running.endpoint_url, region_name=REGION)
            gg.create_component_version(inlineRecipe=inference_recipe())
            arn = f"arn:aws:iot:{REGION}:{ACCOUNT}:thinggroup/"
            environment = {
                **ENVIRONMENT,
                "TARGET_THING_GROUP_ARN": arn + canary_group,
                "FLEET_THING_GROUP_ARN": arn + fleet_group,
            }
            yield ServerPlane(
                plane=Plane(
                    s3=s3,
                    gg=gg,
                    ddb=ddb,
                    iot=iot,
                    fake=running.fake,
                    endpoint_url=running.endpoint_url,
                    publisher=load_publisher_config(environment),
                    lifecycle=load_config(environment),
                ),
                moto_url=moto_url,
                greengrass_url=running.endpoint_url,
                environment=environment,
            )
    finally:
        moto.stop()
