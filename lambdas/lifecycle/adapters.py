"""The AWS side of the lifecycle's ports: the DynamoDB lineage registry, Greengrass and IoT for what
devices run, the ingest table for heartbeats, and CloudWatch (EMF log lines) for the scheduled check.

Each adapter takes its boto3 client(s) in the constructor or creates them on first use, so nothing talks
to AWS at import time. Throttling surfaces as ``RetryableError`` (botocore has already backed off).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Final, NoReturn

import boto3
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider
from botocore.client import BaseClient
from botocore.exceptions import ClientError

from lambdas.common.aws import THROTTLING_CODES, ServiceAdapter, is_throttling, query_items
from lambdas.common.aws import error_code as _code
from lambdas.common.aws import error_message as _message
from lambdas.ingest.table import HEARTBEAT_SK_PREFIX, device_pk
from lambdas.ingest.table import PARTITION_KEY as EVENTS_PK
from lambdas.ingest.table import SORT_KEY as EVENTS_SK
from lambdas.lifecycle.errors import ConcurrentChangeError, RegistryError, RetryableError
from lambdas.lifecycle.health import (
    ANOMALIES_COUNTER,
    WINDOWS_COUNTER,
    DeviceReport,
    EffectiveDeployment,
    HeartbeatSample,
    InstalledComponent,
)
from lambdas.lifecycle.registry import (
    DEPLOY_SK_PREFIX,
    JOB_SK,
    LOCK_PK,
    LOCK_SK,
    MODEL_SK,
    PARTITION_KEY,
    SORT_KEY,
    DeploymentRecord,
    LockRecord,
    ModelRecord,
    ModelStatus,
    component_item,
    component_pk,
    component_sk,
    deployment_from_item,
    deployment_items,
    job_item,
    job_pk,
    lock_from_item,
    lock_item,
    model_from_item,
    model_item,
    model_pk,
    target_pk,
)
from lambdas.publisher.config import ThingGroupArn
from lambdas.publisher.errors import GreengrassError

NEEDS_ATTENTION_METRIC: Final = "LifecycleNeedsAttention"
# What ``_heartbeat`` reads, by expression placeholder ("timestamp" is a DynamoDB reserved word).
HEARTBEAT_PROJECTION: Final = {"#ts": "timestamp", "#model": "model_version", "#counters": "counters"}


@contextmanager
def _aws_call(doing: str, error: type[Exception]) -> Iterator[None]:
    try:
        yield
    except ClientError as exc:
        if is_throttling(exc):
            raise RetryableError(f"{doing}: {_code(exc)}: {_message(exc)}") from exc
        raise error(f"{doing}: {_code(exc)}: {_message(exc)}") from exc


class DynamoRegistry(ServiceAdapter):
    """The lineage registry in one DynamoDB table (``registry.LINEAGE_TABLE_SCHEMA``)."""

    service_name = "dynamodb"

    def __init__(self, table_name: str, client: BaseClient | None = None) -> None:
        super().__init__(client)
        self._table = table_name

    def _get(self, pk: str, sk: str) -> dict[str, Any] | None:
        with _aws_call(f"reading {pk} from {self._table}", RegistryError):
            response = self.client.get_item(
                TableName=self._table,
                Key={PARTITION_KEY: {"S": pk}, SORT_KEY: {"S": sk}},
                ConsistentRead=True,
            )
        item: dict[str, Any] | None = response.get("Item")
        return item

    def get_model(self, model_version: str) -> ModelRecord | None:
        item = self._get(model_pk(model_version), MODEL_SK)
        return model_from_item(item) if item is not None else None

    def model_for_job(self, training_job: str) -> str | None:
        item = self._get(job_pk(training_job), JOB_SK)
        return str(item["model_version"]["S"]) if item is not None else None

    def model_for_component(self, component_name: str, component_version: str) -> str | None:
        item = self._get(component_pk(component_name), component_sk(component_version))
        return str(item["model_version"]["S"]) if item is not None else None

    def _deployments(self, pk: str, limit: int | None) -> list[DeploymentRecord]:
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "#pk = :pk AND begins_with(#sk, :prefix)",
            "ExpressionAttributeNames": {"#pk": PARTITION_KEY, "#sk": SORT_KEY},
            "ExpressionAttributeValues": {":pk": {"S": pk}, ":prefix": {"S": DEPLOY_SK_PREFIX}},
            "ScanIndexForward": False,
            "ConsistentRead": True,
        }
        with _aws_call(f"querying {pk} in {self._table}", RegistryError):
            items = query_items(self.client, limit=limit, **kwargs)
        return [deployment_from_item(item) for item in items]

    def deployments_for_target(self, target_arn: str, *, limit: int = 50) -> list[DeploymentRecord]:
        return self._deployments(target_pk(target_arn), limit)

    def deployments_for_model(self, model_version: str) -> list[DeploymentRecord]:
        return self._deployments(model_pk(model_version), None)

    def record_rejection(self, model: ModelRecord) -> None:
        items = [model_item(model)]
        if model.training_job is not None:
            items.append(job_item(model.training_job, model.model_version))
        self._transact(
            [_put_if_absent(self._table, item) for item in items],
            doing=f"recording rejected model {model.model_version}",
            tolerate_conflict=True,
        )

    def claim_model(self, model: ModelRecord, *, claimant: str, now: int, expires_at: int) -> bool:
        item = {
            **model_item(model),
            "claimed_by": {"S": claimant},
            "claim_expires_at": {"N": str(expires_at)},
        }
        try:
            self.client.put_item(
                TableName=self._table,
                Item=item,
                ConditionExpression=(
                    "attribute_not_exists(#pk) OR "
                    "(#status = :publishing AND (#claimant = :claimant OR #expires < :now))"
                ),
                ExpressionAttributeNames={
                    "#pk": PARTITION_KEY,
                    "#status": "status",
                    "#claimant": "claimed_by",
                    "#expires": "claim_expires_at",
                },
                ExpressionAttributeValues={
                    ":publishing": {"S": str(ModelStatus.PUBLISHING)},
                    ":claimant": {"S": claimant},
                    ":now": {"N": str(now)},
                },
            )
        except ClientError as exc:
            if _code(exc) == "ConditionalCheckFailedException":
                return False
            _raise(exc, f"claiming model {model.model_version}")
        return True

    def record_publication(
        self, model: ModelRecord, deployment: DeploymentRecord | None, *, claimant: str | None = None
    ) -> bool:
        model_put: dict[str, Any] = {"TableName": self._table, "Item": model_item(model)}
        if claimant is not None:
            # Only over this publish's own claim: a concurrent delivery of the same event that already
            # recorded the model (or a claim taken over after expiry) wins, and this one writes nothing.
            model_put.update(
                ConditionExpression="#status = :publishing AND #claimant = :claimant",
                ExpressionAttributeNames={"#status": "status", "#claimant": "claimed_by"},
                ExpressionAttributeValues={
                    ":publishing": {"S": str(ModelStatus.PUBLISHING)},
                    ":claimant": {"S": claimant},
                },
            )
        items = [component_item(model)]
        if model.training_job is not None:
            items.append(job_item(model.training_job, model.model_version))
        if deployment is not None:
            items.extend(deployment_items(deployment))
        return self._transact(
            [{"Put": model_put}, *({"Put": {"TableName": self._table, "Item": item}} for item in items)],
            doing=f"recording published model {model.model_version}",
            tolerate_conflict=claimant is not None,
        )

    def record_deployment(
        self,
        deployment: DeploymentRecord,
        *,
        status_changes: Mapping[str, ModelStatus] | None = None,
        expected_statuses: Mapping[str, ModelStatus] | None = None,
    ) -> None:
        actions: list[dict[str, Any]] = [
            {"Put": {"TableName": self._table, "Item": item}} for item in deployment_items(deployment)
        ]
        expected = expected_statuses or {}
        for model_version, status in (status_changes or {}).items():
            values = {":status": {"S": str(status)}, ":updated": {"S": deployment.created_at}}
            condition = "attribute_exists(#pk)"
            if model_version in expected:
                condition = "#status = :expected"
                values[":expected"] = {"S": str(expected[model_version])}
            actions.append(
                {
                    "Update": {
                        "TableName": self._table,
                        "Key": {PARTITION_KEY: {"S": model_pk(model_version)}, SORT_KEY: {"S": MODEL_SK}},
                        "UpdateExpression": "SET #status = :status, #updated = :updated",
                        "ConditionExpression": condition,
                        "ExpressionAttributeNames": {
                            "#status": "status",
                            "#updated": "updated_at",
                            **({"#pk": PARTITION_KEY} if "#pk" in condition else {}),
                        },
                        "ExpressionAttributeValues": values,
                    }
                }
            )
        doing = f"recording deployment {deployment.deployment_id}"
        if not self._transact(actions, doing=doing, tolerate_conflict=True):
            changes = ", ".join(
                f"{v} {expected[v]} -> {s}" if v in expected else f"{v} -> {s}"
                for v, s in (status_changes or {}).items()
            )
            raise ConcurrentChangeError(
                f"{doing}: another writer changed a model's status since it was read ({changes}); "
                f"deployment {deployment.deployment_id} to {deployment.target_arn} is in Greengrass but "
                "not recorded: check the group with `status` and `what-runs-where`"
            )

    def acquire_lock(self, lock: LockRecord, *, now: int) -> LockRecord | None:
        try:
            self.client.put_item(
                TableName=self._table,
                Item=lock_item(lock),
                ConditionExpression="attribute_not_exists(#pk) OR #expires < :now OR #owner = :owner",
                ExpressionAttributeNames={"#pk": PARTITION_KEY, "#expires": "expires_at", "#owner": "owner"},
                ExpressionAttributeValues={":now": {"N": str(now)}, ":owner": {"S": lock.owner}},
            )
        except ClientError as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                _raise(exc, "taking the lifecycle lock")
            holder = self._get(LOCK_PK, LOCK_SK)
            # Released between the put and the read: report it held (the caller retries) rather than guess.
            return lock_from_item(holder) if holder is not None else lock
        return None

    def release_lock(self, owner: str) -> None:
        try:
            self.client.update_item(
                TableName=self._table,
                Key={PARTITION_KEY: {"S": LOCK_PK}, SORT_KEY: {"S": LOCK_SK}},
                UpdateExpression="SET #expires = :zero",
                ConditionExpression="#owner = :owner",
                ExpressionAttributeNames={"#expires": "expires_at", "#owner": "owner"},
                ExpressionAttributeValues={":zero": {"N": "0"}, ":owner": {"S": owner}},
            )
        except ClientError as exc:
            if _code(exc) != "ConditionalCheckFailedException":  # not ours any more: nothing to release
                _raise(exc, "releasing the lifecycle lock")

    def _transact(
        self, actions: list[dict[str, Any]], *, doing: str, tolerate_conflict: bool = False
    ) -> bool:
        """True when written; False when ``tolerate_conflict`` and only a condition failed."""
        try:
            self.client.transact_write_items(TransactItems=actions)
        except ClientError as exc:
            code = _code(exc)
            if code == "TransactionCanceledException" and tolerate_conflict and _only_condition_failures(exc):
                return False
            if code in THROTTLING_CODES or (
                code == "TransactionCanceledException" and not _only_condition_failures(exc)
            ):
                # Conflicts with a concurrent transaction and throttling clear on a retry.
                raise RetryableError(f"{doing}: {code}: {_message(exc)}") from exc
            raise RegistryError(f"{doing}: {code}: {_message(exc)}") from exc
        return True


def _raise(exc: ClientError, doing: str) -> NoReturn:
    if is_throttling(exc):
        raise RetryableError(f"{doing}: {_code(exc)}: {_message(exc)}") from exc
    raise RegistryError(f"{doing}: {_code(exc)}: {_message(exc)}") from exc


def _put_if_absent(table: str, item: dict[str, Any]) -> dict[str, Any]:
    return {
        "Put": {
            "TableName": table,
            "Item": item,
            "ConditionExpression": "attribute_not_exists(#pk)",
            "ExpressionAttributeNames": {"#pk": PARTITION_KEY},
        }
    }


def _only_condition_failures(exc: ClientError) -> bool:
    reasons = exc.response.get("CancellationReasons") or []
    codes = {str(r.get("Code", "None")) for r in reasons}
    return bool(codes) and codes <= {"ConditionalCheckFailed", "None"}


class GreengrassFleet:
    """Group membership from IoT (the authority on it); per-device status from Greengrass.

    ``ListCoreDevices(thingGroupArn=...)`` lists only devices that have *succeeded* with a deployment to
    the group, which would hide exactly the failing canary devices; IoT's membership does not.
    """

    def __init__(self, greengrass: BaseClient | None = None, iot: BaseClient | None = None) -> None:
        self._gg = greengrass
        self._iot = iot

    @property
    def greengrass(self) -> Any:
        if self._gg is None:
            self._gg = boto3.client("greengrassv2")
        return self._gg

    @property
    def iot(self) -> Any:
        if self._iot is None:
            self._iot = boto3.client("iot")
        return self._iot

    def things_in_group(self, group: ThingGroupArn) -> list[str]:
        things: list[str] = []
        with _aws_call(f"listing the things in {group.name}", GreengrassError):
            paginator = self.iot.get_paginator("list_things_in_thing_group")
            for page in paginator.paginate(thingGroupName=group.name, recursive=True):
                things.extend(page.get("things", []))
        return sorted(set(things))

    def device(self, thing_name: str) -> DeviceReport:
        try:
            effective = self._effective(thing_name)
            installed = self._installed(thing_name)
        except ClientError as exc:
            if _code(exc) == "ResourceNotFoundException":
                return DeviceReport(thing_name=thing_name, registered=False)
            if is_throttling(exc):
                raise RetryableError(
                    f"reading the status of {thing_name}: {_code(exc)}: {_message(exc)}"
                ) from exc
            raise GreengrassError(f"cannot read the status of {thing_name}: {_message(exc)}") from exc
        return DeviceReport(thing_name=thing_name, registered=True, effective=effective, installed=installed)

    def _effective(self, thing_name: str) -> tuple[EffectiveDeployment, ...]:
        items: list[EffectiveDeployment] = []
        paginator = self.greengrass.get_paginator("list_effective_deployments")
        for page in paginator.paginate(coreDeviceThingName=thing_name):
            items.extend(
                EffectiveDeployment(
                    deployment_id=item["deploymentId"],
                    target_arn=item["targetArn"],
                    status=item["coreDeviceExecutionStatus"],
                    reason=item.get("reason", ""),
                )
                for item in page.get("effectiveDeployments", [])
            )
        return tuple(items)

    def _installed(self, thing_name: str) -> tuple[InstalledComponent, ...]:
        items: list[InstalledComponent] = []
        paginator = self.greengrass.get_paginator("list_installed_components")
        for page in paginator.paginate(coreDeviceThingName=thing_name, topologyFilter="ALL"):
            items.extend(
                InstalledComponent(
                    name=item["componentName"],
                    version=item["componentVersion"],
                    lifecycle_state=item["lifecycleState"],
                    details=item.get("lifecycleStateDetails", ""),
                )
                for item in page.get("installedComponents", [])
            )
        return tuple(items)


class EventsTableHeartbeats(ServiceAdapter):
    """A device's recent heartbeats from the ingest table (``lambdas.ingest.table`` layout)."""

    service_name = "dynamodb"

    def __init__(self, table_name: str, client: BaseClient | None = None, *, limit: int = 200) -> None:
        super().__init__(client)
        self._table = table_name
        self._limit = limit

    def recent(self, thing_name: str) -> list[HeartbeatSample]:
        """The newest ``limit`` heartbeats, oldest first.

        A page ends at 1 MB whatever its ``Limit``, and the oldest of them are the pre-deployment baseline,
        so every page is followed up to the limit. Only the attributes ``_heartbeat`` reads come back (not
        the raw ``body``, the bulk of an item).
        """
        with _aws_call(f"reading heartbeats of {thing_name}", RegistryError):
            items = query_items(
                self.client,
                limit=self._limit,
                TableName=self._table,
                KeyConditionExpression="#pk = :pk AND begins_with(#sk, :hb)",
                ProjectionExpression=", ".join(HEARTBEAT_PROJECTION),
                ExpressionAttributeNames={
                    "#pk": EVENTS_PK,
                    "#sk": EVENTS_SK,
                    **HEARTBEAT_PROJECTION,
                },
                ExpressionAttributeValues={
                    ":pk": {"S": device_pk(thing_name)},
                    ":hb": {"S": HEARTBEAT_SK_PREFIX},
                },
                ScanIndexForward=False,
            )
        samples = [_heartbeat(item) for item in items]
        return sorted(samples, key=lambda s: s.timestamp)


def _heartbeat(item: Mapping[str, Any]) -> HeartbeatSample:
    counters = item.get("counters", {}).get("M", {})

    def counter(name: str) -> float:
        value = counters.get(name)
        return float(value["N"]) if isinstance(value, Mapping) and "N" in value else 0.0

    model = item.get("model_version")
    return HeartbeatSample(
        timestamp=str(item["timestamp"]["S"]),
        model_version=str(model["S"]) if isinstance(model, Mapping) else None,
        windows_scored=counter(WINDOWS_COUNTER),
        anomalous_windows=counter(ANOMALIES_COUNTER) if ANOMALIES_COUNTER in counters else None,
    )


class EmfAttentionMetrics:
    """Whether a scheduled check needs a person, as one CloudWatch Embedded Metric Format line on stdout
    (the function's log), written the way the ingest function writes its metrics.

    Every run writes 1 or 0, so the alarm returns to OK on the first run after someone acted. No
    dimensions: there is one check per environment, and the namespace already names the environment.
    The action and the reason ride along as properties, searchable in Logs Insights.
    """

    def __init__(self, namespace: str, write: Callable[[str], object] = print) -> None:
        self._namespace = namespace
        self._write = write

    def emit(self, *, action: str, attention: str | None) -> None:
        # A fresh provider per line: powertools' Metrics class shares its metric set process-wide.
        provider = AmazonCloudWatchEMFProvider(namespace=self._namespace)
        provider.add_metric(
            name=NEEDS_ATTENTION_METRIC, unit=MetricUnit.Count, value=1 if attention is not None else 0
        )
        provider.add_metadata(key="action", value=action)
        if attention is not None:
            provider.add_metadata(key="attention", value=attention)
        self._write(json.dumps(provider.serialize_metric_set(), separators=(",", ":")))
