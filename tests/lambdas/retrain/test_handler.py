"""The handler against moto's SageMaker: one job per alarm episode, cooldown, clear failures."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from lambdas.retrain.adapters import LIST_PAGE_SIZE, TAGS_PAGE_SIZE, SageMakerTrainingJobs
from lambdas.retrain.core import TemplateJob
from lambdas.retrain.handler import Dependencies, handle
from tests.lambdas.retrain.helpers import BUCKET, CONFIG, PREFIX, alarm_event, launcher_request, sqs_event

TEMPLATE = f"{PREFIX}-train-20261101000000"
EPISODE = f"{PREFIX}-drift-20261124-204005"


NOW = datetime(2026, 11, 24, 20, 45, tzinfo=UTC)


@pytest.fixture
def sagemaker(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    # moto stamps CreationTime with its own clock; pin it so job ages are what the test says.
    moto_now = [(NOW - timedelta(days=2)).replace(tzinfo=None)]
    monkeypatch.setattr("moto.sagemaker.models.utcnow", lambda: moto_now[0])
    with mock_aws():
        client = boto3.client("sagemaker", region_name="us-east-1")
        # A launcher-shaped request (helpers.launcher_request), two days old: the template.
        client.create_training_job(**launcher_request(TEMPLATE))
        moto_now[0] = NOW.replace(tzinfo=None)
        yield client


def deps(client: Any, *, now: datetime = NOW) -> Dependencies:
    return Dependencies(config=CONFIG, jobs=SageMakerTrainingJobs(client), clock=lambda: now)


def failures(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [vars(r) for r in caplog.records if r.getMessage() == "retraining request failed"]


def job_names(client: Any) -> list[str]:
    return sorted(s["TrainingJobName"] for s in client.list_training_jobs()["TrainingJobSummaries"])


def test_alarm_starts_one_training_job(sagemaker: Any) -> None:
    assert handle(sqs_event(alarm_event()), deps(sagemaker)) == {"batchItemFailures": []}

    assert job_names(sagemaker) == sorted([TEMPLATE, EPISODE])
    job = sagemaker.describe_training_job(TrainingJobName=EPISODE)
    assert job["RoleArn"] == CONFIG.training_role_arn
    assert job["HyperParameters"] == {"model_name": "pump"}
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in job["InputDataConfig"]}
    assert channels == {
        "train": "s3://edgeml-test-models/datasets/nab/",
        "code": f"s3://edgeml-test-models/code/{PREFIX}-train/{TEMPLATE}/input/code",
        "sm_drivers": f"s3://edgeml-test-models/code/{PREFIX}-train/{TEMPLATE}/input/sm_drivers",
    }
    assert job["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600}


def test_the_started_job_keeps_the_templates_volume_key_and_tags(monkeypatch: pytest.MonkeyPatch) -> None:
    key = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    monkeypatch.setattr(
        "moto.sagemaker.models.utcnow", lambda: (NOW - timedelta(days=2)).replace(tzinfo=None)
    )
    with mock_aws():
        client = boto3.client("sagemaker", region_name="us-east-1")
        template = launcher_request(TEMPLATE)
        template["ResourceConfig"]["VolumeKmsKeyId"] = key
        template["Tags"] = [{"Key": "cost-center", "Value": "ml"}]
        client.create_training_job(**template)
        arn = client.describe_training_job(TrainingJobName=TEMPLATE)["TrainingJobArn"]
        client.add_tags(ResourceArn=arn, Tags=[{"Key": "aws:cloudformation:stack-name", "Value": "x"}])

        assert handle(sqs_event(alarm_event()), deps(client)) == {"batchItemFailures": []}

        job = client.describe_training_job(TrainingJobName=EPISODE)
        assert job["ResourceConfig"]["VolumeKmsKeyId"] == key
        assert client.list_tags(ResourceArn=job["TrainingJobArn"])["Tags"] == [
            {"Key": "cost-center", "Value": "ml"}
        ]


def test_duplicate_alarm_event_starts_one_job(sagemaker: Any, caplog: pytest.LogCaptureFixture) -> None:
    dependencies = deps(sagemaker)
    handle(sqs_event(alarm_event()), dependencies)
    caplog.clear()
    # Redelivered, and the other drift alarm in the same second: both name the same job.
    other_alarm = alarm_event(alarmName="edgeml-test-drift-input")
    assert handle(sqs_event(alarm_event(), other_alarm), dependencies) == {"batchItemFailures": []}
    assert job_names(sagemaker) == sorted([TEMPLATE, EPISODE])
    handled = [vars(r) for r in caplog.records if r.getMessage() == "retraining request handled"]
    assert [(h["outcome"], h["job_name"]) for h in handled] == [("duplicate", EPISODE)] * 2


def test_no_new_job_within_the_cooldown(sagemaker: Any, caplog: pytest.LogCaptureFixture) -> None:
    handle(sqs_event(alarm_event()), deps(sagemaker))
    later_episode = alarm_event(state={"value": "ALARM", "timestamp": "2026-11-24T22:00:00.000+0000"})

    # 23 hours on, the job started above is still within the 24-hour cooldown ...
    assert handle(sqs_event(later_episode), deps(sagemaker, now=NOW + timedelta(hours=23))) == {
        "batchItemFailures": []
    }
    assert job_names(sagemaker) == sorted([TEMPLATE, EPISODE])
    # ... and 25 hours on it is not.
    handle(sqs_event(later_episode), deps(sagemaker, now=NOW + timedelta(hours=25)))
    assert job_names(sagemaker) == sorted([TEMPLATE, EPISODE, f"{PREFIX}-drift-20261124-220000"])
    handled = [vars(r) for r in caplog.records if r.getMessage() == "retraining request handled"]
    assert [(h["outcome"], h["blocking_job"]) for h in handled] == [
        ("started", None),
        ("cooldown", EPISODE),
        ("started", None),
    ]


def test_the_template_itself_counts_for_the_cooldown(sagemaker: Any) -> None:
    # A launcher run an hour ago is a fresh model already: no automatic retraining on top of it.
    young = NOW - timedelta(days=2) + timedelta(hours=1)
    assert handle(sqs_event(alarm_event()), deps(sagemaker, now=young)) == {"batchItemFailures": []}
    assert job_names(sagemaker) == [TEMPLATE]


def test_bad_message_fails_only_itself(sagemaker: Any, caplog: pytest.LogCaptureFixture) -> None:
    event = sqs_event("not json", alarm_event(), ids=["bad", "good"])

    assert handle(event, deps(sagemaker)) == {"batchItemFailures": [{"itemIdentifier": "bad"}]}

    assert job_names(sagemaker) == sorted([TEMPLATE, EPISODE])
    [failure] = failures(caplog)
    assert failure["error_type"] == "BadRequestError"
    assert failure["error"].startswith("message body is not JSON")
    assert failure["message_id"] == "bad"


def test_without_a_completed_job_the_request_fails_with_the_fix(caplog: pytest.LogCaptureFixture) -> None:
    with mock_aws():
        client = boto3.client("sagemaker", region_name="us-east-1")
        assert handle(sqs_event(alarm_event()), deps(client)) == {
            "batchItemFailures": [{"itemIdentifier": "msg-0"}]
        }
        assert job_names(client) == []
    [failure] = failures(caplog)
    assert failure["error_type"] == "NoTemplateJobError"
    named = "no completed training job named edgeml-test-train-<timestamp> or edgeml-test-drift-*"
    assert named in failure["error"]
    assert "--job-name-prefix edgeml-test-train" in failure["error"]


def test_jobs_of_other_environments_are_ignored() -> None:
    # A name as the SDK makes it (<prefix>-train-%Y%m%d%H%M%S): the environment's jobs have that shape.
    with mock_aws():
        client = boto3.client("sagemaker", region_name="us-east-1")
        client.create_training_job(**launcher_request("edgeml-test2-train-20261101000000"))
        jobs = SageMakerTrainingJobs(client)
        assert jobs.newest_completed(PREFIX) is None
        assert jobs.created_since(PREFIX, datetime.now(UTC) - timedelta(hours=1)) == []
        found = jobs.newest_completed("edgeml-test2")
        assert isinstance(found, TemplateJob)
        assert found.name == "edgeml-test2-train-20261101000000"


def test_jobs_of_an_environment_whose_prefix_extends_ours_are_ignored(sagemaker: Any) -> None:
    """Environments edgeml-test and edgeml-test-staging: the second's jobs start with 'edgeml-test-'.

    They count neither for the cooldown nor as the template, whose code is in the other bucket.
    """
    other = launcher_request("edgeml-test-staging-train-20261124204000")
    for channel in other["InputDataConfig"]:
        source = channel["DataSource"]["S3DataSource"]
        source["S3Uri"] = source["S3Uri"].replace(BUCKET, "edgeml-test-staging-models")
    sagemaker.create_training_job(**other)  # ten minutes ago: within our cooldown if it were ours
    sagemaker.create_training_job(**launcher_request("edgeml-test-staging-drift-20261124-204000"))
    jobs = SageMakerTrainingJobs(sagemaker)

    assert [job.name for job in jobs.created_since(PREFIX, NOW - timedelta(hours=1))] == []
    template = jobs.newest_completed(PREFIX)
    assert template is not None
    assert template.name == TEMPLATE
    assert handle(sqs_event(alarm_event()), deps(sagemaker)) == {"batchItemFailures": []}
    channels = {
        c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"]
        for c in sagemaker.describe_training_job(TrainingJobName=EPISODE)["InputDataConfig"]
    }
    assert all(uri.startswith(f"s3://{BUCKET}/") for uri in channels.values()), channels


def test_a_template_with_code_in_another_bucket_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    with mock_aws():
        client = boto3.client("sagemaker", region_name="us-east-1")
        foreign = launcher_request(TEMPLATE)
        code = foreign["InputDataConfig"][1]["DataSource"]["S3DataSource"]
        code["S3Uri"] = code["S3Uri"].replace(BUCKET, "someone-elses-bucket")
        client.create_training_job(**foreign)

        result = handle(sqs_event(alarm_event()), deps(client, now=datetime.now(UTC) + timedelta(days=2)))

        assert result == {"batchItemFailures": [{"itemIdentifier": "msg-0"}]}
        assert job_names(client) == [TEMPLATE]
    [failure] = failures(caplog)
    assert failure["error_type"] == "ForeignTemplateError"
    assert f"template job {TEMPLATE} has its code channel at s3://someone-elses-bucket/" in failure["error"]
    assert f"outside this environment's s3://{BUCKET}/code/" in failure["error"]


def _description(name: str) -> dict[str, Any]:
    """DescribeTrainingJob's answer for a completed launcher job (what the Stubber hands back)."""
    request = launcher_request(name)
    return {
        **{k: request[k] for k in ("TrainingJobName", "HyperParameters", "AlgorithmSpecification")},
        **{k: request[k] for k in ("RoleArn", "InputDataConfig", "OutputDataConfig", "ResourceConfig")},
        "StoppingCondition": request["StoppingCondition"],
        "TrainingJobArn": f"arn:aws:sagemaker:us-east-1:123456789012:training-job/{name}",
        "ModelArtifacts": {"S3ModelArtifacts": f"s3://{BUCKET}/training-output/{name}/output/model.tar.gz"},
        "TrainingJobStatus": "Completed",
        "SecondaryStatus": "Completed",
        "CreationTime": NOW - timedelta(days=2),
    }


def _summary(name: str) -> dict[str, Any]:
    """ListTrainingJobs' entry for the completed launcher job of ``_description``."""
    return {
        k: _description(name)[k]
        for k in ("TrainingJobName", "TrainingJobArn", "CreationTime", "TrainingJobStatus")
    }


@pytest.mark.parametrize(
    ("code", "message"),
    [
        # The botocore model's only DescribeTrainingJob error, with SageMaker's usual text.
        ("ResourceNotFound", "Requested resource not found."),
        ("ValidationException", "Requested resource not found."),
        # moto's wording (moto/sagemaker/models.py).
        ("ValidationException", f"Could not find training job '{EPISODE}'."),
    ],
)
def test_every_not_found_wording_lets_the_episode_start_its_job(code: str, message: str) -> None:
    client = boto3.client("sagemaker", region_name="us-east-1")
    summary = _summary(TEMPLATE)
    with Stubber(client) as stub:
        stub.add_client_error(
            "describe_training_job",
            service_error_code=code,
            service_message=message,
            http_status_code=400,
            expected_params={"TrainingJobName": EPISODE},
        )
        stub.add_response("list_training_jobs", {"TrainingJobSummaries": []})  # nothing in the cooldown
        stub.add_response("list_training_jobs", {"TrainingJobSummaries": [summary]})
        stub.add_response(
            "describe_training_job", _description(TEMPLATE), expected_params={"TrainingJobName": TEMPLATE}
        )
        stub.add_response("list_tags", {"Tags": []})
        stub.add_response(
            "create_training_job", {"TrainingJobArn": f"arn:aws:sagemaker:us-east-1:1:training-job/{EPISODE}"}
        )

        assert handle(sqs_event(alarm_event()), deps(client)) == {"batchItemFailures": []}

        stub.assert_no_pending_responses()


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("AccessDeniedException", "User is not authorized to perform: sagemaker:DescribeTrainingJob"),
        ("ValidationException", "1 validation error detected: Value at 'trainingJobName' failed"),
    ],
)
def test_other_describe_errors_fail_the_message_and_start_nothing(code: str, message: str) -> None:
    client = boto3.client("sagemaker", region_name="us-east-1")
    with Stubber(client) as stub:
        stub.add_client_error(
            "describe_training_job", service_error_code=code, service_message=message, http_status_code=400
        )
        # Nothing else is stubbed: a ListTrainingJobs or CreateTrainingJob would raise StubResponseError.
        assert handle(sqs_event(alarm_event()), deps(client)) == {
            "batchItemFailures": [{"itemIdentifier": "msg-0"}]
        }
        stub.assert_no_pending_responses()


def test_a_name_sagemaker_already_holds_is_a_duplicate() -> None:
    # moto accepts duplicate names; SageMaker answers ResourceInUse, which the adapter reads as "exists".
    client = boto3.client("sagemaker", region_name="us-east-1")
    with Stubber(client) as stub:
        stub.add_client_error("create_training_job", service_error_code="ResourceInUse", http_status_code=400)
        assert SageMakerTrainingJobs(client).create(launcher_request(EPISODE)) is False
        stub.add_client_error("create_training_job", service_error_code="ThrottlingException")
        with pytest.raises(Exception, match="creating the training job was throttled") as caught:
            SageMakerTrainingJobs(client).create(launcher_request(EPISODE))
        assert type(caught.value).__name__ == "RetrainRetryableError"


def test_throttling_fails_the_message_for_a_retry() -> None:
    client = boto3.client("sagemaker", region_name="us-east-1")
    with Stubber(client) as stub:
        stub.add_client_error("describe_training_job", service_error_code="ThrottlingException")
        result = handle(sqs_event(alarm_event()), deps(client))
    assert result == {"batchItemFailures": [{"itemIdentifier": "msg-0"}]}


def test_an_event_that_is_no_sqs_batch_is_refused(sagemaker: Any) -> None:
    with pytest.raises(Exception, match="the event is not an SQS batch") as caught:
        handle({"detail": {}}, deps(sagemaker))
    assert type(caught.value).__name__ == "RetrainError"


def test_a_message_from_the_queue_starts_the_job_and_a_failed_one_stays(sagemaker: Any) -> None:
    """The queue as Lambda's SQS poller sees it: received messages in, reported failures left in place."""
    sqs = boto3.client("sqs", region_name="us-east-1")
    queue_url = sqs.create_queue(QueueName="edgeml-test-retrain", Attributes={"VisibilityTimeout": "0"})[
        "QueueUrl"
    ]
    sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(alarm_event()))
    sqs.send_message(QueueUrl=queue_url, MessageBody='{"detail-type": "Scheduled Event"}')
    received = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)["Messages"]
    by_id = {m["MessageId"]: m for m in received}
    event = {"Records": [{"messageId": m["MessageId"], "body": m["Body"]} for m in received]}

    result = handle(event, deps(sagemaker))

    failed = {f["itemIdentifier"] for f in result["batchItemFailures"]}  # type: ignore[attr-defined]
    # The poller deletes what succeeded; the failure is received again (and, after three, dead-lettered).
    for message_id, message in by_id.items():
        if message_id not in failed:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    [left] = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)["Messages"]
    assert json.loads(left["Body"]) == {"detail-type": "Scheduled Event"}
    assert job_names(sagemaker) == sorted([TEMPLATE, EPISODE])


def test_the_template_search_reads_big_pages_and_stops_at_the_newest_completed_job() -> None:
    # Real SageMaker filters StatusEquals after reading a page, and jobs are never deleted: reading every
    # page of 10 would grow with the account's whole history.
    client = boto3.client("sagemaker", region_name="us-east-1")
    summary = _summary(TEMPLATE)
    with Stubber(client) as stub:
        stub.add_response(
            "list_training_jobs",
            {"TrainingJobSummaries": [summary], "NextToken": "more-pages-that-must-not-be-read"},
            expected_params={
                "NameContains": PREFIX,
                "StatusEquals": "Completed",
                "SortBy": "CreationTime",
                "SortOrder": "Descending",
                "MaxResults": LIST_PAGE_SIZE,
            },
        )
        stub.add_response(
            "describe_training_job", _description(TEMPLATE), expected_params={"TrainingJobName": TEMPLATE}
        )
        stub.add_response(
            "list_tags",
            {"Tags": [{"Key": "cost-center", "Value": "ml"}]},
            expected_params={"ResourceArn": summary["TrainingJobArn"], "MaxResults": TAGS_PAGE_SIZE},
        )

        template = SageMakerTrainingJobs(client).newest_completed(PREFIX)

        stub.assert_no_pending_responses()
    assert template is not None
    assert template.tags == {"cost-center": "ml"}
