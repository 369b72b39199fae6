"""``python -m device``: run one simulated Greengrass core device until SIGTERM/SIGINT or its components end.

While it runs it polls the control plane for new deployments (``--deployment-poll-s``) and applies them
as a nucleus does (:meth:`DeviceRunner.sync`): a configuration-only change reaches the running component
without a restart. A deployment that fails is reported FAILED and the device keeps running.

Example (stand-ins from the demo running)::

    python -m device --thing-name gw-01 --root .demo/devices/gw-01 \\
        --greengrass-endpoint http://127.0.0.1:PORT --s3-endpoint http://127.0.0.1:PORT \\
        --interpolate-component-configuration --reuse-python "$(command -v python)"
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import boto3

from standins.greengrass_fake.admin import AdminError, FakeAdminClient

from .errors import DeviceError
from .lifecycle import ComponentState
from .runner import DeviceRunner, LocalPolicy, S3ArtifactStore

EXIT_OK, EXIT_DEVICE = 0, 3
_ACTIVE = {ComponentState.RUNNING, ComponentState.STARTING}


@dataclass(frozen=True)
class CliConfig:
    thing_name: str
    root: Path
    greengrass_endpoint: str
    s3_endpoint: str | None
    region: str
    policy: LocalPolicy
    poll_s: float
    deployment_poll_s: float


def parse_args(argv: Sequence[str] | None) -> CliConfig:
    p = argparse.ArgumentParser(prog="python -m device", description=__doc__.splitlines()[0])
    p.add_argument("--thing-name", required=True)
    p.add_argument("--root", type=Path, required=True, help="the device's kernel root (created)")
    p.add_argument("--greengrass-endpoint", required=True, help="Greengrass v2 fake URL (its /_fake/ API)")
    p.add_argument("--s3-endpoint", help="S3 endpoint for artifacts (moto); default: AWS")
    p.add_argument("--region", default="us-east-1")
    p.add_argument(
        "--interpolate-component-configuration",
        action="store_true",
        help="resolve recipe variables inside configuration values (the nucleus option of that name)",
    )
    p.add_argument(
        "--reuse-python", help="interpreter with the components' dependencies ($EDGEML_REUSE_PYTHON)"
    )
    p.add_argument("--poll-s", type=float, default=1.0, help="how often component states are checked")
    p.add_argument(
        "--deployment-poll-s",
        type=float,
        default=5.0,
        help="how often new deployments are looked for (0: never, run the first deployment only)",
    )
    args = p.parse_args(argv)
    if args.poll_s <= 0 or args.deployment_poll_s < 0:
        p.error("--poll-s must be > 0 and --deployment-poll-s >= 0")
    return CliConfig(
        thing_name=args.thing_name,
        root=args.root,
        greengrass_endpoint=args.greengrass_endpoint,
        s3_endpoint=args.s3_endpoint,
        region=args.region,
        policy=LocalPolicy(
            interpolate_component_configuration=args.interpolate_component_configuration,
            reuse_python=args.reuse_python,
        ),
        poll_s=args.poll_s,
        deployment_poll_s=args.deployment_poll_s,
    )


def _sync(runner: DeviceRunner) -> None:
    """One look for a new deployment; a failed one is already reported, the device keeps running."""
    try:
        runner.sync()
    except DeviceError as exc:
        logging.getLogger("device").error("deployment update failed: %s", exc)  # noqa: TRY400
    except (OSError, AdminError) as exc:
        # The control plane may be briefly unreachable; the next poll tries again.
        logging.getLogger("device").warning("could not check for deployments: %s", exc)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    cfg = parse_args(argv)
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    runner = DeviceRunner(
        thing_name=cfg.thing_name,
        root=cfg.root,
        control=FakeAdminClient(cfg.greengrass_endpoint),
        store=S3ArtifactStore(boto3.client("s3", endpoint_url=cfg.s3_endpoint, region_name=cfg.region)),
        policy=cfg.policy,
        region=cfg.region,
    )
    with runner:
        try:
            runner.deploy()
        except DeviceError as exc:
            # Expected failure (refused recipe, failed step): one clear line, no traceback.
            logging.getLogger("device").error("deployment failed: %s", exc)  # noqa: TRY400
            return EXIT_DEVICE
        next_sync = time.monotonic() + cfg.deployment_poll_s
        while not stop.wait(cfg.poll_s):
            if cfg.deployment_poll_s > 0 and time.monotonic() >= next_sync:
                next_sync = time.monotonic() + cfg.deployment_poll_s
                _sync(runner)
            if not _ACTIVE & set(runner.refresh().values()):
                break
    states = {name: c.state.value for name, c in runner.components.items()}
    sys.stdout.write(json.dumps({"thing_name": cfg.thing_name, "components": states}) + "\n")
    return EXIT_OK if ComponentState.ERRORED.value not in states.values() else EXIT_DEVICE
