"""CDK entry point: read the environment's settings, build the stacks, attach cdk-nag, synthesize.

    python app.py                                  # dev, into ./cdk.out (or $CDK_OUTDIR)
    CDK_CONTEXT_JSON='{"env": "prod"}' python app.py
    cdk synth -c env=prod                          # the CDK CLI passes context the same way

No resource is defined here; see infra/stacks and infra/parts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aws_cdk import App, Validations
from cdk_nag import AwsSolutionsChecks

from infra.config import PlatformConfig, read_cdk_json_context, select_environment
from infra.stacks.fleet_stack import FleetStack
from infra.stacks.ingest_stack import IngestStack
from infra.stacks.lifecycle_stack import LifecycleStack
from infra.stacks.model_store_stack import ModelStoreStack
from infra.stacks.monitoring_stack import MonitoringStack
from infra.stacks.publisher_stack import PublisherStack
from infra.stacks.training_stack import TrainingStack

ROOT = Path(__file__).resolve().parent
CDK_JSON = ROOT / "cdk.json"
LAMBDAS_DIRECTORY = ROOT / "lambdas"
DEFAULT_OUTDIR = "cdk.out"


@dataclass(frozen=True)
class Platform:
    app: App
    config: PlatformConfig
    model_store: ModelStoreStack
    training: TrainingStack
    fleet: FleetStack
    publisher: PublisherStack
    ingest: IngestStack
    lifecycle: LifecycleStack
    monitoring: MonitoringStack


def build(*, context: Mapping[str, Any] | None = None, outdir: str | None = None) -> Platform:
    """Compose the platform. ``context`` overrides cdk.json's; the CLI's ``-c`` overrides both."""
    defaults = {**read_cdk_json_context(CDK_JSON), **(context or {})}
    # The CLI sets CDK_OUTDIR; a plain `python app.py` writes where `cdk synth` would.
    app = App(context=defaults, outdir=outdir or os.environ.get("CDK_OUTDIR", DEFAULT_OUTDIR))
    config = select_environment(_context_of(app, defaults))

    prefix = "".join(part.capitalize() for part in config.name_prefix.split("-"))
    model_store = ModelStoreStack(app, f"{prefix}ModelStore", config=config)
    training = TrainingStack(app, f"{prefix}Training", config=config, model_store=model_store.model_store)
    fleet = FleetStack(app, f"{prefix}Fleet", config=config, model_store=model_store.model_store)
    publisher = PublisherStack(
        app,
        f"{prefix}Publisher",
        config=config,
        model_store=model_store.model_store,
        fleet=fleet.fleet,
        lineage=model_store.lineage,
        code_directory=str(LAMBDAS_DIRECTORY),
    )
    ingest = IngestStack(
        app,
        f"{prefix}Ingest",
        config=config,
        lineage=model_store.lineage,
        code_directory=str(LAMBDAS_DIRECTORY),
    )
    lifecycle = LifecycleStack(
        app,
        f"{prefix}Lifecycle",
        config=config,
        model_store=model_store.model_store,
        fleet=fleet.fleet,
        lineage=model_store.lineage,
        events_table=ingest.ingest.table,
        events_key=ingest.ingest.key,
        code_directory=str(LAMBDAS_DIRECTORY),
    )
    monitoring = MonitoringStack(
        app,
        f"{prefix}Monitoring",
        config=config,
        publisher=publisher.publisher,
        ingest=ingest.ingest,
        lifecycle=lifecycle.lifecycle,
        training_role=training.training.role,
        model_store_key_arn=model_store.model_store.key.key_arn,
        code_directory=str(LAMBDAS_DIRECTORY),
    )

    Validations.of(app).add_plugins(AwsSolutionsChecks(app, verbose=True))
    return Platform(app, config, model_store, training, fleet, publisher, ingest, lifecycle, monitoring)


def _context_of(app: App, keys: Mapping[str, Any]) -> dict[str, Any]:
    """The app's effective context for the keys the config reads (defaults merged with CLI overrides)."""
    return {key: app.node.try_get_context(key) for key in ("env", "environments", *keys)}


def main() -> None:
    build().app.synth()


if __name__ == "__main__":
    main()
