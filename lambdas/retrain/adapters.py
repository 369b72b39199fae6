"""SageMaker behind ``TrainingJobs``: describe, list and create training jobs of one environment.

The template job's tags are read with ``ListTags`` and the new job is created with them, which IAM
authorizes as ``sagemaker:AddTags`` on the new job (``infra/parts/retrain.py``).

Throttling becomes ``RetrainRetryableError`` (the message is received again later); other client errors
pass through and fail the message, which after the queue's max receives lands in its dead-letter queue.
Which jobs belong to the environment is the core's rule (``is_environment_job``), not a name prefix.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from itertools import islice
from typing import Any, Final

from botocore.client import BaseClient
from botocore.exceptions import ClientError

from lambdas.common.aws import ServiceAdapter, error_code, error_message, is_throttling
from lambdas.retrain.core import (
    JobSummary,
    TemplateJob,
    is_environment_job,
    template_from_description,
    with_tags,
)
from lambdas.retrain.errors import RetrainRetryableError

# How many of the newest completed jobs to look through for one with the SDK's code channels.
TEMPLATE_CANDIDATES: Final = 10
LIST_PAGE_SIZE: Final = 100
# CreateTrainingJob takes at most 50 tags, so one page of ListTags holds every tag worth copying.
TAGS_PAGE_SIZE: Final = 100
# DescribeTrainingJob's answers for a job that does not exist. The botocore model lists ResourceNotFound
# as its only error; SageMaker has also answered ValidationException "Requested resource not found.",
# and moto answers ValidationException "Could not find training job '...'". Anything else (access denied,
# a malformed name) must fail the message, not read as "absent" and start a job.
_NOT_FOUND_CODE: Final = "ResourceNotFound"
_NOT_FOUND_PHRASES: Final = ("not found", "could not find")


def is_not_found(exc: ClientError) -> bool:
    """Whether a DescribeTrainingJob error says that the job does not exist."""
    if error_code(exc) == _NOT_FOUND_CODE:
        return True
    message = error_message(exc).lower()
    return error_code(exc) == "ValidationException" and any(p in message for p in _NOT_FOUND_PHRASES)


@contextmanager
def _retryable(operation: str) -> Iterator[None]:
    try:
        yield
    except ClientError as exc:
        if is_throttling(exc):
            raise RetrainRetryableError(
                f"{operation} was throttled ({error_code(exc)}); retry later"
            ) from exc
        raise


class SageMakerTrainingJobs(ServiceAdapter):
    service_name = "sagemaker"

    def __init__(self, client: BaseClient | None = None) -> None:
        super().__init__(client)

    def exists(self, name: str) -> bool:
        try:
            with _retryable("describing the training job"):
                self.client.describe_training_job(TrainingJobName=name)
        except ClientError as exc:
            if is_not_found(exc):
                return False
            raise
        return True

    def created_since(self, prefix: str, since: datetime) -> list[JobSummary]:
        jobs = [
            JobSummary(name=s["TrainingJobName"], created_at=s["CreationTime"], status=s["TrainingJobStatus"])
            for s in self._summaries(NameContains=prefix, CreationTimeAfter=since)
            if is_environment_job(prefix, s["TrainingJobName"]) and s["CreationTime"] >= since
        ]
        return sorted(jobs, key=lambda job: job.created_at, reverse=True)

    def newest_completed(self, prefix: str) -> TemplateJob | None:
        # The listing is newest first, so the first candidates found are the ones wanted: stop there
        # instead of reading every page (jobs cannot be deleted, so the history only grows).
        candidates = (
            s
            for s in self._summaries(NameContains=prefix, StatusEquals="Completed")
            if is_environment_job(prefix, s["TrainingJobName"])
        )
        for summary in islice(candidates, TEMPLATE_CANDIDATES):
            with _retryable("describing a template job"):
                description = self.client.describe_training_job(TrainingJobName=summary["TrainingJobName"])
            template = template_from_description(description)
            if template is not None:
                return with_tags(template, self._tags(description["TrainingJobArn"]))
        return None

    def create(self, request: Mapping[str, Any]) -> bool:
        try:
            with _retryable("creating the training job"):
                self.client.create_training_job(**request)
        except ClientError as exc:
            if error_code(exc) == "ResourceInUse":
                return False  # created by an earlier receive of the same alarm event
            raise
        return True

    def _tags(self, job_arn: str) -> list[dict[str, str]]:
        paginator = self.client.get_paginator("list_tags")
        with _retryable("listing a template job's tags"):
            return [
                tag
                for page in paginator.paginate(
                    ResourceArn=job_arn, PaginationConfig={"PageSize": TAGS_PAGE_SIZE}
                )
                for tag in page.get("Tags", [])
            ]

    def _summaries(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        paginator = self.client.get_paginator("list_training_jobs")
        with _retryable("listing training jobs"):
            # StatusEquals filters each page after it is read, so pages of the default 10 can come back
            # empty with a NextToken; 100 is the API's largest page.
            pages = paginator.paginate(
                SortBy="CreationTime",
                SortOrder="Descending",
                PaginationConfig={"PageSize": LIST_PAGE_SIZE},
                **kwargs,
            )
            for page in pages:
                yield from page.get("TrainingJobSummaries", [])
