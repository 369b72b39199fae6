"""The publishing core against in-memory ports: ordering, idempotency, waiting and deployment planning."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest

from lambdas.publisher.config import load_config
from lambdas.publisher.core import (
    COPIED_FROM_METADATA,
    MAX_SKIPPED_VERSIONS,
    ComponentDeployment,
    ComponentStatus,
    Deployment,
    WaitPolicy,
    named_request,
    publish_model,
    publisher_copy_source,
    same_components,
)
from lambdas.publisher.errors import (
    ArtifactConflictError,
    ComponentVersionConflictError,
    GreengrassError,
    ModelNotFoundError,
    ModelValidationError,
)
from lambdas.publisher.events import (
    ORIGIN_EVENTBRIDGE_S3,
    ORIGIN_S3_NOTIFICATION,
    ORIGIN_SAGEMAKER,
    ArtifactKind,
    PublishRequest,
    component_artifact_key,
    model_key,
)
from lambdas.publisher.recipe import recipe_json, render_model_recipe
from lambdas.publisher.validation import validate_model
from tests.lambdas.publisher.onnx_models import MODEL_VERSION, build_model
from tests.lambdas.publisher.stubs import ARN_PREFIX, MemoryComponents, MemoryDeployments, MemoryStore
from tests.lambdas.publisher.test_validation import tarball

BUCKET = "edgeml-models"
TARGET = "arn:aws:iot:us-east-1:123456789012:thinggroup/pumps"
CONFIG = load_config(
    {"MODEL_BUCKET": BUCKET, "INFERENCE_COMPONENT_VERSION": "1.2.0", "TARGET_THING_GROUP_ARN": TARGET}
)
KEY = model_key("pump", MODEL_VERSION)
ARTIFACT_KEY = component_artifact_key("com.edgeml.AnomalyModel", "1.0.0")


def request(key: str = KEY, *, kind: ArtifactKind = ArtifactKind.ONNX, expected: str | None = MODEL_VERSION):
    return PublishRequest(
        bucket=BUCKET, key=key, kind=kind, model_name="pump", expected_model_version=expected, origin="test"
    )


class World:
    def __init__(self, *, states: list[ComponentStatus] | None = None) -> None:
        self.store = MemoryStore()
        self.components = MemoryComponents()
        if states is not None:
            self.components.states = states
        self.deployments = MemoryDeployments()
        self.sleeps: list[float] = []

    def publish(self, req: PublishRequest | None = None, **kwargs):
        return publish_model(
            req or request(),
            config=CONFIG,
            store=self.store,
            components=self.components,
            deployments=self.deployments,
            sleep=self.sleeps.append,
            **kwargs,
        )


def test_publish_creates_version_and_deployment():
    world = World()
    world.store.objects[(BUCKET, KEY)] = build_model()
    result = world.publish()
    assert (result.component_version, result.component_created, result.deployment_created) == (
        "1.0.0",
        True,
        True,
    )
    assert result.component_arn == f"{ARN_PREFIX}com.edgeml.AnomalyModel:versions:1.0.0"
    assert result.model_uri == f"s3://{BUCKET}/{KEY}"
    assert ARTIFACT_KEY == "components/com.edgeml.AnomalyModel/1.0.0/model.onnx"
    assert result.artifact_uri == f"s3://{BUCKET}/{ARTIFACT_KEY}"
    (plan,) = world.deployments.created
    assert plan.target_arn == TARGET
    assert plan.name == "edgeml-pumps"
    assert plan.components["com.edgeml.AnomalyModel"] == ComponentDeployment(component_version="1.0.0")
    inference = plan.components["com.edgeml.AnomalyDetector"]
    assert inference.component_version == "1.2.0"
    assert json.loads(inference.configuration_merge or "") == {
        "model": {
            "component": "com.edgeml.AnomalyModel",
            "version": "1.0.0",
            "sha256": result.model_sha256,
            "modelVersion": MODEL_VERSION,
        }
    }
    assert plan.policy.failure_handling == "ROLLBACK"
    assert plan.policy.component_update_action == "NOTIFY_COMPONENTS"
    # The version-addressed key was already the source: only the component's artifact is written, and
    # the recipe downloads it from there, the one prefix devices can read.
    assert world.store.puts == [(BUCKET, ARTIFACT_KEY)]
    assert world.store.objects[(BUCKET, ARTIFACT_KEY)] == world.store.objects[(BUCKET, KEY)]
    recipe = json.loads(world.components.recipes[result.component_arn])
    assert [a["URI"] for a in recipe["Manifests"][0]["Artifacts"]] == [result.artifact_uri]


def test_refused_model_writes_nothing():
    world = World()
    world.store.objects[(BUCKET, KEY)] = build_model(drop_metadata=["threshold"])
    with pytest.raises(ModelValidationError, match="missing required keys: threshold"):
        world.publish()
    assert (world.components.recipes, world.deployments.created, world.store.puts) == ({}, [], [])


def test_model_version_must_match_its_key():
    world = World()
    key = model_key("pump", "other-version")
    world.store.objects[(BUCKET, key)] = build_model()
    with pytest.raises(
        ModelValidationError,
        match=f"declares model_version '{MODEL_VERSION}', but its key says 'other-version'",
    ):
        world.publish(request(key, expected="other-version"))
    assert world.components.recipes == {}


def test_missing_object_is_reported():
    world = World()
    with pytest.raises(ModelNotFoundError, match=f"model object s3://{BUCKET}/{KEY} does not exist"):
        world.publish()


def test_tarball_model_is_stored_version_addressed_once():
    world = World()
    data = build_model()
    source = "training/job-1/output/model.tar.gz"
    world.store.objects[(BUCKET, source)] = tarball({"model.onnx": data})
    first = world.publish(request(source, kind=ArtifactKind.TARBALL, expected=None))
    assert world.store.puts == [(BUCKET, KEY), (BUCKET, ARTIFACT_KEY)]
    assert world.store.objects[(BUCKET, KEY)] == data
    assert first.model_uri == f"s3://{BUCKET}/{KEY}"
    # The S3 event that our own write triggers publishes the same model: nothing new happens.
    second = world.publish(request(KEY))
    assert (second.component_version, second.component_created, second.deployment_created) == (
        "1.0.0",
        False,
        False,
    )
    assert second.deployment_id == first.deployment_id
    assert len(world.deployments.created) == 1
    assert world.store.puts == [(BUCKET, KEY), (BUCKET, ARTIFACT_KEY)]


def test_version_addressed_key_is_never_overwritten():
    world = World()
    world.store.objects[(BUCKET, KEY)] = build_model(metadata={"detector": "older"})
    source = "training/job-2/output/model.tar.gz"
    world.store.objects[(BUCKET, source)] = tarball({"model.onnx": build_model()})
    with pytest.raises(ArtifactConflictError, match=f"s3://{BUCKET}/{KEY} already holds a different model"):
        world.publish(request(source, kind=ArtifactKind.TARBALL, expected=None))
    assert world.store.objects[(BUCKET, KEY)] == build_model(metadata={"detector": "older"})
    assert world.components.recipes == {}


def test_republishing_the_same_model_writes_nothing_more():
    world = World()
    world.store.objects[(BUCKET, KEY)] = build_model()
    first = world.publish()
    again = world.publish()
    assert (again.component_arn, again.artifact_uri, again.deployment_id) == (
        first.component_arn,
        first.artifact_uri,
        first.deployment_id,
    )
    assert (again.component_created, again.deployment_created) == (False, False)
    assert world.store.puts == [(BUCKET, ARTIFACT_KEY)]
    assert len(world.components.recipes) == 1


def test_same_bytes_already_at_the_artifact_key_are_reused():
    # A publish that wrote the artifact and then failed before creating the version, retried.
    world = World()
    data = build_model()
    world.store.objects[(BUCKET, KEY)] = data
    world.store.objects[(BUCKET, ARTIFACT_KEY)] = data
    result = world.publish()
    assert (result.component_version, result.component_created) == ("1.0.0", True)
    assert result.artifact_uri == f"s3://{BUCKET}/{ARTIFACT_KEY}"
    assert world.store.puts == []


def test_other_bytes_at_the_next_versions_artifact_key_make_the_publish_skip_that_version():
    # An attempt that wrote components/.../1.0.0/model.onnx and failed for good before creating 1.0.0:
    # the number is taken, the key is never rewritten, and this model becomes 1.0.1.
    world = World()
    data = build_model()
    world.store.objects[(BUCKET, KEY)] = data
    orphan = build_model(metadata={"detector": "other"})
    world.store.objects[(BUCKET, ARTIFACT_KEY)] = orphan
    result = world.publish()
    artifact_1_0_1 = component_artifact_key("com.edgeml.AnomalyModel", "1.0.1")
    assert (result.component_version, result.component_created) == ("1.0.1", True)
    assert result.skipped_versions == ("1.0.0",)
    assert result.artifact_uri == f"s3://{BUCKET}/{artifact_1_0_1}"
    assert world.store.objects[(BUCKET, ARTIFACT_KEY)] == orphan
    assert world.store.objects[(BUCKET, artifact_1_0_1)] == data
    assert world.store.puts == [(BUCKET, artifact_1_0_1)]
    assert list(world.components.recipes) == [f"{ARN_PREFIX}com.edgeml.AnomalyModel:versions:1.0.1"]
    assert len(world.deployments.created) == 1


def test_an_orphaned_artifact_does_not_block_the_models_after_it():
    world = World()
    world.store.objects[(BUCKET, KEY)] = build_model()
    world.publish()  # 1.0.0
    world.store.objects[(BUCKET, component_artifact_key("com.edgeml.AnomalyModel", "1.0.1"))] = build_model(
        metadata={"detector": "orphan"}
    )
    for version in ("2.0.0", "3.0.0"):
        world.store.objects[(BUCKET, model_key("pump", version))] = build_model(
            metadata={"model_version": version}
        )
    second = world.publish(request(model_key("pump", "2.0.0"), expected="2.0.0"))
    third = world.publish(request(model_key("pump", "3.0.0"), expected="3.0.0"))
    assert (second.component_version, second.skipped_versions) == ("1.0.2", ("1.0.1",))
    assert (third.component_version, third.skipped_versions) == ("1.0.3", ())


def test_skipping_orphaned_artifact_keys_is_bounded():
    world = World()
    world.store.objects[(BUCKET, KEY)] = build_model()
    taken = [f"1.0.{patch}" for patch in range(MAX_SKIPPED_VERSIONS + 1)]
    for version in taken:
        key = component_artifact_key("com.edgeml.AnomalyModel", version)
        world.store.objects[(BUCKET, key)] = build_model(metadata={"detector": version})
    with pytest.raises(
        ArtifactConflictError,
        match=(
            f"the artifact keys of component versions {', '.join(taken)} of com.edgeml.AnomalyModel all "
            "hold other models, yet none of those versions exists: "
            f"s3://{BUCKET}/components/com.edgeml.AnomalyModel/1.0.{MAX_SKIPPED_VERSIONS}/model.onnx "
            "already holds a different model"
        ),
    ):
        world.publish()
    assert (world.components.recipes, world.deployments.created, world.store.puts) == ({}, [], [])
    # One fewer orphan: the last key tried is free, so the publish goes through.
    del world.store.objects[(BUCKET, component_artifact_key("com.edgeml.AnomalyModel", taken[-1]))]
    result = world.publish()
    assert (result.component_version, result.skipped_versions) == (taken[-1], tuple(taken[:-1]))


def test_the_models_copy_of_an_archive_records_where_it_came_from():
    world = World()
    source = "training/job-1/output/model.tar.gz"
    world.store.objects[(BUCKET, source)] = tarball({"model.onnx": build_model()})
    world.publish(request(source, kind=ArtifactKind.TARBALL, expected=None))
    assert world.store.object_metadata[(BUCKET, KEY)] == {COPIED_FROM_METADATA: f"s3://{BUCKET}/{source}"}
    # Only the models/ copy: the component artifact is not a model anyone announces.
    assert world.store.object_metadata[(BUCKET, ARTIFACT_KEY)] == {}


@pytest.mark.parametrize("origin", [ORIGIN_S3_NOTIFICATION, ORIGIN_EVENTBRIDGE_S3])
def test_the_s3_event_of_the_publishers_own_copy_is_recognised(origin: str):
    world = World()
    source = "training/job 1/output/model.tar.gz"
    world.store.objects[(BUCKET, source)] = tarball({"model.onnx": build_model()})
    world.publish(request(source, kind=ArtifactKind.TARBALL, expected=None))
    echo = replace(request(KEY), origin=origin)
    assert publisher_copy_source(echo, world.store) == f"s3://{BUCKET}/{source}"


def test_a_model_uploaded_by_anyone_else_is_not_taken_for_a_copy():
    world = World()
    world.store.objects[(BUCKET, KEY)] = build_model()
    assert publisher_copy_source(replace(request(KEY), origin=ORIGIN_EVENTBRIDGE_S3), world.store) is None


def test_a_training_job_event_is_never_taken_for_a_copy():
    # Even naming a marked object: only S3 events can be the echo of the publisher's own write.
    world = World()
    world.store.objects[(BUCKET, KEY)] = build_model()
    world.store.object_metadata[(BUCKET, KEY)] = {COPIED_FROM_METADATA: "s3://elsewhere/model.tar.gz"}
    training = replace(request(KEY), origin=ORIGIN_SAGEMAKER, training_job="job-1")
    assert publisher_copy_source(training, world.store) is None


def test_a_version_whose_artifact_is_outside_components_is_not_reused():
    # An older layout pointed the recipe at models/, which the devices' role can no longer read.
    world = World()
    data = build_model()
    world.store.objects[(BUCKET, KEY)] = data
    legacy = render_model_recipe(
        component_name="com.edgeml.AnomalyModel",
        component_version="1.0.0",
        model=validate_model(data, max_bytes=10**6),
        artifact_uri=f"s3://{BUCKET}/{KEY}",
    )
    world.components.recipes[f"{ARN_PREFIX}com.edgeml.AnomalyModel:versions:1.0.0"] = recipe_json(legacy)
    result = world.publish()
    assert (result.component_version, result.component_created) == ("1.0.1", True)
    assert result.artifact_uri == f"s3://{BUCKET}/components/com.edgeml.AnomalyModel/1.0.1/model.onnx"


def test_waits_until_deployable_with_the_injected_sleep():
    world = World(
        states=[ComponentStatus("REQUESTED"), ComponentStatus("INITIATED"), ComponentStatus("DEPLOYABLE")]
    )
    world.store.objects[(BUCKET, KEY)] = build_model()
    world.publish(wait=WaitPolicy(max_tries=5, delay_seconds=0.5))
    assert world.sleeps == [0.5, 0.5]
    assert len(world.deployments.created) == 1


def test_a_failed_component_version_is_not_deployed():
    failed = ComponentStatus("FAILED", "artifact inaccessible", {"model.onnx": "ACCESS_DENIED"})
    world = World(states=[ComponentStatus("INITIATED"), failed])
    world.store.objects[(BUCKET, KEY)] = build_model()
    with pytest.raises(
        GreengrassError,
        match=r"com.edgeml.AnomalyModel 1.0.0 is FAILED: artifact inaccessible \(model.onnx: ACCESS_DENIED\)",
    ):
        world.publish()
    assert world.deployments.created == []


def test_waiting_is_bounded():
    world = World(states=[ComponentStatus("REQUESTED")])
    world.store.objects[(BUCKET, KEY)] = build_model()
    with pytest.raises(GreengrassError, match="is still REQUESTED after 3 checks; not deploying it"):
        world.publish(wait=WaitPolicy(max_tries=3, delay_seconds=1.0))
    assert world.sleeps == [1.0, 1.0]
    assert world.deployments.created == []


def test_concurrent_publish_of_the_same_model_reuses_the_winner():
    world = World()
    data = build_model()
    world.store.objects[(BUCKET, KEY)] = data
    winner = render_model_recipe(
        component_name="com.edgeml.AnomalyModel",
        component_version="1.0.0",
        model=validate_model(data, max_bytes=10**6),
        artifact_uri=f"s3://{BUCKET}/{ARTIFACT_KEY}",
    )
    world.components.race = {f"{ARN_PREFIX}com.edgeml.AnomalyModel:versions:1.0.0": recipe_json(winner)}
    result = world.publish()
    assert (result.component_version, result.component_created) == ("1.0.0", False)
    assert len(world.deployments.created) == 1


def test_concurrent_publish_of_another_model_is_a_conflict():
    world = World()
    world.store.objects[(BUCKET, KEY)] = build_model()
    other = render_model_recipe(
        component_name="com.edgeml.AnomalyModel",
        component_version="1.0.0",
        model=validate_model(build_model(metadata={"detector": "other"}), max_bytes=10**6),
        artifact_uri="s3://elsewhere/model.onnx",
    )
    world.components.race = {f"{ARN_PREFIX}com.edgeml.AnomalyModel:versions:1.0.0": recipe_json(other)}
    with pytest.raises(ComponentVersionConflictError, match=r"version 1\.0\.0 already exists"):
        world.publish()
    assert world.deployments.created == []


def test_revision_keeps_other_components_and_inference_settings():
    world = World()
    world.store.objects[(BUCKET, KEY)] = build_model()
    world.deployments.latest = Deployment(
        deployment_id="baseline",
        target_arn=TARGET,
        name="fleet-baseline",
        components={
            "aws.greengrass.Nucleus": ComponentDeployment(
                component_version="2.14.0",
                configuration_merge='{"mqtt": {"spooler": {"storageType": "Disk"}}}',
            ),
            "com.edgeml.AnomalyDetector": ComponentDeployment(
                component_version="1.1.0",
                configuration_merge='{"stream": "pump-1", "model": {"version": "0.9.0"}}',
                configuration_reset=("/cooldownSeconds",),
                run_with={"posixUser": "ggc_user"},
            ),
        },
        tags={"team": "edge"},
    )
    world.publish()
    (plan,) = world.deployments.created
    assert plan.name == "fleet-baseline"
    assert plan.tags == {"team": "edge"}
    nucleus = plan.components["aws.greengrass.Nucleus"]
    assert nucleus == ComponentDeployment(
        component_version="2.14.0", configuration_merge='{"mqtt": {"spooler": {"storageType": "Disk"}}}'
    )
    inference = plan.components["com.edgeml.AnomalyDetector"]
    assert inference.component_version == "1.2.0"
    assert inference.configuration_reset == ("/cooldownSeconds",)
    assert inference.run_with == {"posixUser": "ggc_user"}
    merge = json.loads(inference.configuration_merge or "")
    assert merge["stream"] == "pump-1"
    assert merge["model"]["version"] == "1.0.0"


def test_malformed_existing_merge_is_reported():
    world = World()
    world.store.objects[(BUCKET, KEY)] = build_model()
    world.deployments.latest = Deployment(
        deployment_id="d",
        target_arn=TARGET,
        name=None,
        components={"com.edgeml.AnomalyDetector": ComponentDeployment("1.1.0", configuration_merge="[1]")},
    )
    with pytest.raises(GreengrassError, match=r"merge for com\.edgeml\.AnomalyDetector is not a JSON object"):
        world.publish()


def test_same_components_compares_merges_as_json():
    a = {"x": ComponentDeployment("1.0.0", configuration_merge='{"a": 1, "b": 2}')}
    b = {"x": ComponentDeployment("1.0.0", configuration_merge='{"b":2,"a":1}')}
    assert same_components(a, b)
    assert not same_components(a, {"x": ComponentDeployment("1.0.1", configuration_merge='{"a": 1, "b": 2}')})
    assert not same_components(a, {"x": ComponentDeployment("1.0.0", configuration_merge='{"a": 2, "b": 2}')})
    assert not same_components(a, {**a, "y": ComponentDeployment("1.0.0")})


def _job_request(*, declared: str | None) -> PublishRequest:
    return PublishRequest(
        bucket=BUCKET,
        key="training-output/job-1/output/model.onnx",
        kind=ArtifactKind.ONNX,
        model_name=declared or "job-1",
        expected_model_version=None,
        origin=ORIGIN_SAGEMAKER,
        training_job="job-1",
        named_by_model=True,
        declared_model_name=declared,
    )


@pytest.mark.parametrize(
    ("declared", "metadata", "name"),
    [
        (None, "anomaly-detector", "anomaly-detector"),  # launched without -p model_name
        ("pump", "pump", "pump"),  # agreeing
        ("pump", None, "pump"),  # a model without the optional key: the hyperparameter's
        (None, None, "job-1"),  # neither: the job's, as before
    ],
)
def test_a_training_jobs_model_is_named_by_its_metadata(
    declared: str | None, metadata: str | None, name: str
) -> None:
    model = validate_model(
        build_model(metadata={"model_name": metadata} if metadata else None), max_bytes=1 << 20
    )
    named = named_request(_job_request(declared=declared), model)
    assert (named.model_name, named.named_by_model) == (name, False)


def test_a_metadata_model_name_that_is_no_key_segment_is_refused() -> None:
    model = validate_model(build_model(metadata={"model_name": "pump/../x"}), max_bytes=1 << 20)
    with pytest.raises(
        ModelValidationError, match=re.escape("declares model_name 'pump/../x', which cannot")
    ):
        named_request(_job_request(declared=None), model)


def test_a_model_key_names_a_model_whose_metadata_agrees_or_is_silent() -> None:
    assert named_request(request(), validate_model(build_model(), max_bytes=1 << 20)) == request()
    agreeing = validate_model(build_model(metadata={"model_name": "pump"}), max_bytes=1 << 20)
    assert named_request(request(), agreeing) == request()


def test_a_model_key_that_contradicts_the_models_name_publishes_nothing() -> None:
    # The same refusal as for a training job's hyperparameter: one model, one name, however it arrives.
    model = validate_model(build_model(metadata={"model_name": "anomaly-detector"}), max_bytes=1 << 20)
    with pytest.raises(ModelValidationError) as caught:
        named_request(request(), model)
    assert str(caught.value) == (
        f"model at s3://{BUCKET}/{KEY} declares model_name 'anomaly-detector', but its key names it 'pump'; "
        f"nothing was published. Upload it under models/anomaly-detector/{MODEL_VERSION}/model.onnx"
    )

    world = World()
    world.store.objects[(BUCKET, KEY)] = build_model(metadata={"model_name": "anomaly-detector"})
    with pytest.raises(ModelValidationError, match="but its key names it 'pump'"):
        world.publish()
    assert world.store.puts == []
    assert world.components.recipes == {}
    assert world.deployments.created == []
