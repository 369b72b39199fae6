"""Commands for a platform team: ``status``, ``promote``, ``rollback``, ``what-runs-where``.

Settings come from the same environment variables as the Lambdas (``lambdas.lifecycle.config``);
``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_GREENGRASSV2`` point the clients at moto and the Greengrass fake.

Exit codes: 0 done, 1 refused (canary not healthy, canary devices also in the fleet group, nothing to
roll back to, unknown model), 2 usage or configuration error, 3 AWS failure (3 with "retryable" in the
message, e.g. another promote, rollback or publish holding the lifecycle lock: run it again).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TextIO

from lambdas.lifecycle.core import (
    device_view,
    group_view,
    model_lineage,
    overview,
    promote,
    rollback,
)
from lambdas.lifecycle.errors import (
    ConfigError,
    LifecycleError,
    LockHeldError,
    RefusedError,
    RetryableError,
)
from lambdas.lifecycle.services import Services, build_services
from lambdas.publisher.errors import PublisherError
from lambdas.publisher.errors import RetryableError as PublisherRetryableError

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_FAILED = 3

_log = logging.getLogger("lambdas.lifecycle.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lambdas.lifecycle",
        description="Model lifecycle: lineage, canary promotion, fleet-wide rollback, what runs where.",
        epilog="Exit codes: 0 ok, 1 refused, 2 usage/configuration, 3 AWS failure.",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    status = commands.add_parser("status", help="the canary's and the fleet's models, or one model's lineage")
    status.add_argument("--model-version", help="show this model's lineage (training job → deployments)")

    prom = commands.add_parser(
        "promote", help="deploy the canary's model to the fleet if the canary is healthy"
    )
    prom.add_argument("--model-version", help="refuse unless the canary runs this model")
    prom.add_argument("--dry-run", action="store_true", help="check the canary's health only")

    back = commands.add_parser("rollback", help="redeploy an earlier model to a whole group")
    back.add_argument("--group", required=True, help="canary, fleet, a thing-group name or ARN")
    back.add_argument("--to-version", help="model component version to restore (default: the previous one)")
    back.add_argument(
        "--from-model-version",
        help="the model to roll back away from: refuse if the group runs another one, and return the "
        "earlier rollback if it was already rolled back away from it (without it, a group whose latest "
        "deployment is a rollback is left as it is)",
    )
    back.add_argument("--reason", default="", help="recorded with the deployment")

    where = commands.add_parser("what-runs-where", help="component, model and training job per device")
    target = where.add_mutually_exclusive_group(required=True)
    target.add_argument("--group", help="canary, fleet, a thing-group name or ARN")
    target.add_argument("--thing", help="one core device's thing name")
    for sub in (status, prom, back, where):
        sub.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    services: Callable[[Mapping[str, str]], Services] = build_services,
    out: TextIO | None = None,
) -> int:
    stdout = out if out is not None else sys.stdout
    args = build_parser().parse_args(argv)  # exits 2 on usage errors, 0 on --help
    try:
        wired = services(os.environ if environ is None else environ)
        document = _run(args, wired)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RefusedError as exc:
        _emit(stdout, args.json, {"refused": str(exc), "reasons": list(exc.reasons)}, _refusal_text(exc))
        return EXIT_REFUSED
    except LockHeldError as exc:
        print(f"busy, retryable: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except (RetryableError, PublisherRetryableError) as exc:
        print(f"retryable AWS failure: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except (LifecycleError, PublisherError) as exc:
        print(f"failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    _emit(stdout, args.json, document, _text(document))
    return EXIT_OK


def _run(args: argparse.Namespace, s: Services) -> dict[str, object]:
    config = s.config
    if args.command == "status":
        if args.model_version:
            model, deployments = model_lineage(s.registry, args.model_version)
            return {"model": model.to_dict(), "deployments": [d.to_dict() for d in deployments]}
        return overview(s.registry, config)
    if args.command == "promote":
        result = promote(
            lifecycle=config,
            registry=s.registry,
            deployments=s.deployments,
            fleet=s.fleet,
            heartbeats=s.heartbeats,
            clock=s.clock,
            expected_model_version=args.model_version,
            dry_run=args.dry_run,
            actor="cli-promote",
            sleep=s.sleep,
        )
        return result.to_dict()
    if args.command == "rollback":
        rolled = rollback(
            lifecycle=config,
            target=config.group(args.group),
            registry=s.registry,
            deployments=s.deployments,
            clock=s.clock,
            to_component_version=args.to_version,
            from_model_version=args.from_model_version,
            reason=args.reason,
            actor="cli-rollback",
            sleep=s.sleep,
        )
        return rolled.to_dict()
    if args.group:
        return group_view(
            config.group(args.group), lifecycle=config, registry=s.registry, fleet=s.fleet
        ).to_dict()
    return device_view(args.thing, lifecycle=config, registry=s.registry, fleet=s.fleet).to_dict()


def _emit(stdout: TextIO, as_json: bool, document: Mapping[str, object], text: str) -> None:
    if as_json:
        stdout.write(json.dumps(document, indent=2, sort_keys=True, default=str) + "\n")
    else:
        stdout.write(text + "\n")


def _refusal_text(exc: RefusedError) -> str:
    return "\n".join([f"refused: {exc}", *(f"  - {reason}" for reason in exc.reasons)])


def _text(document: Mapping[str, object], indent: str = "") -> str:
    """A readable nested listing (``--json`` is the machine-readable form)."""
    lines: list[str] = []
    for key, value in document.items():
        if isinstance(value, Mapping):
            lines.append(f"{indent}{key}:")
            lines.append(_text(value, indent + "  "))
        elif isinstance(value, list) and value and isinstance(value[0], Mapping):
            lines.append(f"{indent}{key}:")
            for number, item in enumerate(value, start=1):
                lines.append(f"{indent}  [{number}]")
                lines.append(_text(item, indent + "    "))
        elif value not in (None, "", [], {}):
            lines.append(f"{indent}{key}: {value}")
    return "\n".join(line for line in lines if line)
