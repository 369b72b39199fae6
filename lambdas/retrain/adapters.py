"""SageMaker behind ``TrainingJobs``: describe, list and create training jobs of one environment.

Throttling becomes ``RetrainRetryableError`` (the message is received again later); other client errors
pass through and fail the message, which after the queue's max receives lands in its dead-letter queue.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Final

from botocore.client import BaseClient
from botocore.exceptions import ClientError

from lambdas.common.aws import ServiceAdapter, error_code, error_message, is_throttling
from lambdas.retrain.core import JobSummary, TemplateJob, template_from_description
from lambdas.retrain.errors import RetrainRetryableError

# How many of the newest completed jobs to look through for one with the SDK's code channels.
TEMPLATE_CANDIDATES: Final = 10


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
            # SageMaker answers an unknown job with a ValidationException "Could not find training job".
            if error_code(exc) == "ValidationException" and "Could not find" in error_message(exc):
                return False
            raise
        return True

    def created_since(self, prefix: str, since: datetime) -> list[JobSummary]:
        jobs = [
            JobSummary(name=s["TrainingJobName"], created_at=s["CreationTime"], status=s["TrainingJobStatus"])
            for s in self._summaries(NameContains=prefix, CreationTimeAfter=since)
            if s["TrainingJobName"].startswith(f"{prefix}-") and s["CreationTime"] >= since
        ]
        return sorted(jobs, key=lambda job: job.created_at, reverse=True)

    def newest_completed(self, prefix: str) -> TemplateJob | None:
        summaries = [
            s
            for s in self._summaries(NameContains=prefix, StatusEquals="Completed")
            if s["TrainingJobName"].startswith(f"{prefix}-")
        ]
        summaries.sort(key=lambda s: s["CreationTime"], reverse=True)
        for summary in summaries[:TEMPLATE_CANDIDATES]:
            with _retryable("describing a template job"):
                description = self.client.describe_training_job(TrainingJobName=summary["TrainingJobName"])
            template = template_from_description(description)
            if template is not None:
                return template
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

    def _summaries(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        paginator = self.client.get_paginator("list_training_jobs")
        with _retryable("listing training jobs"):
            for page in paginator.paginate(SortBy="CreationTime", SortOrder="Descending", **kwargs):
                yield from page.get("TrainingJobSummaries", [])
