"""`python -m standins.greengrass_fake`: serve the fake until SIGTERM or SIGINT.

Prints exactly one line to stdout, `{"endpoint_url": ...}`, once the port accepts requests, so a parent
process can wait for it; everything else goes to stderr as JSON log lines.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import Any

from standins.greengrass_fake.server import serve
from standins.greengrass_fake.state import GreengrassV2Fake

_STANDARD_RECORD_KEYS = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD_RECORD_KEYS})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m standins.greengrass_fake", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--account-id", default="123456789012")
    parser.add_argument("--s3-endpoint", help="S3 (e.g. moto server) used to check artifacts and digests")
    parser.add_argument("--iot-endpoint", help="IoT (e.g. moto server) used to resolve thing-group members")
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def _client(service: str, endpoint_url: str | None, region: str) -> Any:
    if endpoint_url is None:
        return None
    import boto3  # noqa: PLC0415 - only needed when an endpoint is given

    return boto3.client(service, endpoint_url=endpoint_url, region_name=region)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=args.log_level.upper(), handlers=[handler], force=True)
    log = logging.getLogger("standins.greengrass_fake")

    stop = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("stopping", extra={"signal": signal.Signals(signum).name})
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    fake = GreengrassV2Fake(
        region=args.region,
        account_id=args.account_id,
        s3_client=_client("s3", args.s3_endpoint, args.region),
        iot_client=_client("iot", args.iot_endpoint, args.region),
    )
    with serve(fake, host=args.host, port=args.port) as running:
        log.info("serving", extra={"endpoint_url": running.endpoint_url})
        sys.stdout.write(json.dumps({"endpoint_url": running.endpoint_url}) + "\n")
        sys.stdout.flush()
        while not stop.wait(0.5):
            pass
    log.info("stopped")
    return 0
