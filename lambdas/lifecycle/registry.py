"""The lineage registry: what was trained, published and deployed where, in one DynamoDB table.

Every step of a model's life is an item, so "what runs where" and "where did this come from" are queries:

| item | pk | sk |
|---|---|---|
| model (one per model_version) | ``MODEL#<model_version>`` | ``MODEL`` |
| deployment, under its model | ``MODEL#<model_version>`` | ``DEPLOY#<created_at>#<deployment_id>`` |
| deployment, under its target | ``TARGET#<thing-group ARN>`` | ``DEPLOY#<created_at>#<deployment_id>`` |
| training job → model | ``JOB#<training job name>`` | ``JOB`` |
| component version → model | ``COMPONENT#<component name>`` | ``VERSION#<component version>`` |
| the lifecycle lock | ``LOCK#lifecycle`` | ``LOCK`` |

A deployment is written twice (under its model and under its target) in the same transaction, so both
"this model's deployments" and "this group's deployment history" are one ``Query`` each, newest first
(``created_at`` is fixed-width UTC text, so string order is time order). No index is needed.
``LINEAGE_TABLE_SCHEMA`` is what the CDK table must match.

Two writers must not interleave Greengrass deployments (a CLI rollback landing inside a scheduled promote
leaves the fleet on the model just rolled back), and the Lambda's reserved concurrency covers neither the
CLI nor the publisher. So every command that writes a deployment first takes the **lifecycle lock**: one
item, put only if absent, expired or already its owner's, with an expiry (``expires_at``, epoch seconds)
so that a holder killed mid-command blocks the others for at most ``LOCK_TTL_SECONDS``. Release sets the
expiry to 0 (an update, not a delete: the roles have no ``DeleteItem``). Expiry is enforced by the put's
condition; the table needs no TTL setting.

A publish **claims** its model first: the model item is put with status ``PUBLISHING`` only if it does not
exist yet (or is the same request's own, or a stale claim), so the ObjectCreated event of the copy a
publish writes under ``models/`` finds the claim and changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

PARTITION_KEY = "pk"
SORT_KEY = "sk"
MODEL_SK = "MODEL"
JOB_SK = "JOB"
DEPLOY_SK_PREFIX = "DEPLOY#"
LOCK_PK = "LOCK#lifecycle"
LOCK_SK = "LOCK"
# Longer than any holder can live: the publisher Lambda's 5-minute timeout (its work under the lock, a
# component becoming deployable and one deployment, takes at most ~2 minutes). A holder killed before its
# release blocks the others for at most this long; a retry of the same publish takes its own lock back.
LOCK_TTL_SECONDS = 360


@dataclass(frozen=True)
class RegistryTableSchema:
    """Key attribute names of the lineage table (both strings; billing on demand; no index)."""

    partition_key: str
    sort_key: str

    def create_table_kwargs(self, table_name: str) -> dict[str, Any]:
        """Arguments for boto3 ``dynamodb.create_table`` (moto tests, local stand-ins)."""
        return {
            "TableName": table_name,
            "BillingMode": "PAY_PER_REQUEST",
            "AttributeDefinitions": [
                {"AttributeName": self.partition_key, "AttributeType": "S"},
                {"AttributeName": self.sort_key, "AttributeType": "S"},
            ],
            "KeySchema": [
                {"AttributeName": self.partition_key, "KeyType": "HASH"},
                {"AttributeName": self.sort_key, "KeyType": "RANGE"},
            ],
        }


LINEAGE_TABLE_SCHEMA = RegistryTableSchema(partition_key=PARTITION_KEY, sort_key=SORT_KEY)


class ModelStatus(StrEnum):
    PUBLISHING = "PUBLISHING"  # claimed by a publish in progress (or one that failed and will be retried)
    REJECTED = "REJECTED"  # refused by the gate; never reached Greengrass
    CANARY = "CANARY"  # published and deployed to the canary group
    FLEET = "FLEET"  # promoted: the fleet's model
    SUPERSEDED = "SUPERSEDED"  # was the fleet's model until a newer one was promoted
    ROLLED_BACK = "ROLLED_BACK"  # taken off a group by a rollback; never promoted again automatically


class Stage(StrEnum):
    CANARY = "canary"
    FLEET = "fleet"
    ROLLBACK = "rollback"


def utc_text(moment: datetime) -> str:
    """Fixed-width UTC text (microseconds always present) so that string order is time order."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class ModelRecord:
    model_version: str
    model_name: str
    model_uri: str
    sha256: str
    status: ModelStatus
    created_at: str
    updated_at: str
    training_job: str | None = None
    training_metrics: Mapping[str, object] = field(default_factory=dict)
    reason: str = ""
    component_name: str | None = None
    component_version: str | None = None
    component_arn: str | None = None

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["status"] = str(self.status)
        data["training_metrics"] = dict(self.training_metrics)
        return data


@dataclass(frozen=True)
class DeploymentRecord:
    deployment_id: str
    target_arn: str
    stage: Stage
    model_version: str
    component_name: str
    component_version: str
    created_at: str
    created_by: str
    inference_component_version: str | None = None
    reason: str = ""
    # A rollback's: the model the target ran before it (what it rolled back away from).
    rolled_back_from: str | None = None

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["stage"] = str(self.stage)
        return data


@dataclass(frozen=True)
class LockRecord:
    """Who holds the lifecycle lock, since when, and until when (epoch seconds)."""

    owner: str
    acquired_at: str
    expires_at: int


class Registry(Protocol):
    def get_model(self, model_version: str) -> ModelRecord | None: ...

    def model_for_job(self, training_job: str) -> str | None:
        """The model_version a training job produced, if recorded."""
        ...

    def model_for_component(self, component_name: str, component_version: str) -> str | None: ...

    def deployments_for_target(self, target_arn: str, *, limit: int = 50) -> list[DeploymentRecord]:
        """The target's recorded deployments, newest first."""
        ...

    def deployments_for_model(self, model_version: str) -> list[DeploymentRecord]:
        """The model's recorded deployments, newest first."""
        ...

    def record_rejection(self, model: ModelRecord) -> None:
        """Record a REJECTED model (and its training job), unless the model is already recorded."""
        ...

    def claim_model(self, model: ModelRecord, *, claimant: str, now: int, expires_at: int) -> bool:
        """Put ``model`` (status PUBLISHING) unless the model is recorded or claimed by another claimant
        whose claim has not expired by ``now``; False when it is."""
        ...

    def record_publication(
        self, model: ModelRecord, deployment: DeploymentRecord | None, *, claimant: str | None = None
    ) -> bool:
        """Record a published model, its training job, component version and first deployment at once.

        With ``claimant``: only while the model is still that claimant's PUBLISHING claim; False (and
        nothing written) when it is not.
        """
        ...

    def record_deployment(
        self,
        deployment: DeploymentRecord,
        *,
        status_changes: Mapping[str, ModelStatus] | None = None,
        expected_statuses: Mapping[str, ModelStatus] | None = None,
    ) -> None:
        """Record a deployment and, in the same transaction, move models to new statuses.

        A model in ``expected_statuses`` moves only from that status; if another writer changed it,
        nothing is written and ``ConcurrentChangeError`` is raised.
        """
        ...

    def acquire_lock(self, lock: LockRecord, *, now: int) -> LockRecord | None:
        """Take the lifecycle lock for ``lock.owner``; None when taken, else the current holder."""
        ...

    def release_lock(self, owner: str) -> None:
        """Give the lock up, if ``owner`` still holds it."""
        ...


# --- item keys and (de)serialisation (pure; the adapter sends these) ---------------------------------


def model_pk(model_version: str) -> str:
    return f"MODEL#{model_version}"


def target_pk(target_arn: str) -> str:
    return f"TARGET#{target_arn}"


def job_pk(training_job: str) -> str:
    return f"JOB#{training_job}"


def component_pk(component_name: str) -> str:
    return f"COMPONENT#{component_name}"


def component_sk(component_version: str) -> str:
    return f"VERSION#{component_version}"


def deployment_sk(record: DeploymentRecord) -> str:
    return f"{DEPLOY_SK_PREFIX}{record.created_at}#{record.deployment_id}"


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _optional(item: dict[str, Any], name: str, value: str | None) -> None:
    if value:
        item[name] = _s(value)


def model_item(model: ModelRecord) -> dict[str, Any]:
    item: dict[str, Any] = {
        PARTITION_KEY: _s(model_pk(model.model_version)),
        SORT_KEY: _s(MODEL_SK),
        "kind": _s("model"),
        "model_version": _s(model.model_version),
        "model_name": _s(model.model_name),
        "model_uri": _s(model.model_uri),
        "sha256": _s(model.sha256),
        "status": _s(str(model.status)),
        "created_at": _s(model.created_at),
        "updated_at": _s(model.updated_at),
        # Nested metrics stay one JSON string: they are read whole, never queried by field.
        "training_metrics_json": _s(json.dumps(model.training_metrics, sort_keys=True)),
    }
    _optional(item, "training_job", model.training_job)
    _optional(item, "reason", model.reason)
    _optional(item, "component_name", model.component_name)
    _optional(item, "component_version", model.component_version)
    _optional(item, "component_arn", model.component_arn)
    return item


def _text(item: Mapping[str, Any], name: str) -> str | None:
    value = item.get(name)
    return str(value["S"]) if isinstance(value, Mapping) and "S" in value else None


def _required(item: Mapping[str, Any], name: str) -> str:
    value = _text(item, name)
    if value is None:
        raise ValueError(f"registry item {_text(item, PARTITION_KEY)!r} has no {name!r}")
    return value


def model_from_item(item: Mapping[str, Any]) -> ModelRecord:
    metrics = json.loads(_text(item, "training_metrics_json") or "{}")
    return ModelRecord(
        model_version=_required(item, "model_version"),
        model_name=_required(item, "model_name"),
        model_uri=_required(item, "model_uri"),
        sha256=_required(item, "sha256"),
        status=ModelStatus(_required(item, "status")),
        created_at=_required(item, "created_at"),
        updated_at=_required(item, "updated_at"),
        training_job=_text(item, "training_job"),
        training_metrics=metrics if isinstance(metrics, dict) else {},
        reason=_text(item, "reason") or "",
        component_name=_text(item, "component_name"),
        component_version=_text(item, "component_version"),
        component_arn=_text(item, "component_arn"),
    )


def deployment_items(record: DeploymentRecord) -> list[dict[str, Any]]:
    """The two copies of a deployment: under its model and under its target."""
    body: dict[str, Any] = {
        SORT_KEY: _s(deployment_sk(record)),
        "kind": _s("deployment"),
        "deployment_id": _s(record.deployment_id),
        "target_arn": _s(record.target_arn),
        "stage": _s(str(record.stage)),
        "model_version": _s(record.model_version),
        "component_name": _s(record.component_name),
        "component_version": _s(record.component_version),
        "created_at": _s(record.created_at),
        "created_by": _s(record.created_by),
    }
    _optional(body, "inference_component_version", record.inference_component_version)
    _optional(body, "reason", record.reason)
    _optional(body, "rolled_back_from", record.rolled_back_from)
    return [
        {PARTITION_KEY: _s(model_pk(record.model_version)), **body},
        {PARTITION_KEY: _s(target_pk(record.target_arn)), **body},
    ]


def deployment_from_item(item: Mapping[str, Any]) -> DeploymentRecord:
    return DeploymentRecord(
        deployment_id=_required(item, "deployment_id"),
        target_arn=_required(item, "target_arn"),
        stage=Stage(_required(item, "stage")),
        model_version=_required(item, "model_version"),
        component_name=_required(item, "component_name"),
        component_version=_required(item, "component_version"),
        created_at=_required(item, "created_at"),
        created_by=_required(item, "created_by"),
        inference_component_version=_text(item, "inference_component_version"),
        reason=_text(item, "reason") or "",
        rolled_back_from=_text(item, "rolled_back_from"),
    )


def job_item(training_job: str, model_version: str) -> dict[str, Any]:
    return {
        PARTITION_KEY: _s(job_pk(training_job)),
        SORT_KEY: _s(JOB_SK),
        "kind": _s("training_job"),
        "training_job": _s(training_job),
        "model_version": _s(model_version),
    }


def component_item(model: ModelRecord) -> dict[str, Any]:
    if model.component_name is None or model.component_version is None:
        raise ValueError(f"model {model.model_version} has no component version to record")
    item: dict[str, Any] = {
        PARTITION_KEY: _s(component_pk(model.component_name)),
        SORT_KEY: _s(component_sk(model.component_version)),
        "kind": _s("component_version"),
        "component_name": _s(model.component_name),
        "component_version": _s(model.component_version),
        "model_version": _s(model.model_version),
        "sha256": _s(model.sha256),
    }
    _optional(item, "component_arn", model.component_arn)
    return item


def lock_item(lock: LockRecord) -> dict[str, Any]:
    return {
        PARTITION_KEY: _s(LOCK_PK),
        SORT_KEY: _s(LOCK_SK),
        "kind": _s("lock"),
        "owner": _s(lock.owner),
        "acquired_at": _s(lock.acquired_at),
        "expires_at": {"N": str(lock.expires_at)},
    }


def lock_from_item(item: Mapping[str, Any]) -> LockRecord:
    expires = item.get("expires_at")
    return LockRecord(
        owner=_text(item, "owner") or "",
        acquired_at=_text(item, "acquired_at") or "",
        expires_at=int(expires["N"]) if isinstance(expires, Mapping) and "N" in expires else 0,
    )


def newest_first(records: Sequence[DeploymentRecord]) -> list[DeploymentRecord]:
    return sorted(records, key=lambda r: (r.created_at, r.deployment_id), reverse=True)
