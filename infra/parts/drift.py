"""The drift alarm and what it sets off: a notification and a retraining request.

Signal: each heartbeat's anomalous-window fraction (``anomalous_windows / windows_scored``, turned into a
CloudWatch metric by an IoT rule, ``infra/parts/ingest.py``). Training sets the threshold at a margin over
the 99.5th percentile of its own scores (``training/calibrate.py``), so on data like the training data
well under 1 % of windows are anomalous. A fleet average that stays several times above that means the
inputs, or the scores the model gives them, no longer look like the training data: drift, or a real
incident; either way a person should look, and the model is a candidate for retraining.

Response: the alarm notifies the platform topic, and an EventBridge rule on its transition to ALARM puts
the alarm event on a "retrain request" queue (read by an operator today; no automatic consumer yet). A queue,
not a direct SageMaker call: a drift episode must produce one deliberate retraining, not one per flap.
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.parts.common import encrypted_queue

# Heartbeats arrive every few minutes per device; 15-minute averages over the fleet smooth single devices.
DRIFT_PERIOD = Duration.minutes(15)
# One hour above the threshold: a short burst of real anomalies is an incident, not drift.
DRIFT_EVALUATION_PERIODS = 4
# A retraining request is acted on within days or not at all.
RETRAIN_QUEUE_RETENTION = Duration.days(14)
# A consumer that fails three times on the same request leaves it for a person.
RETRAIN_MAX_RECEIVES = 3


class DriftAlarm(Construct):
    """Attributes: ``alarm``, ``rule``, ``retrain_queue``, ``retrain_dead_letter_queue``."""

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        metric_namespace: str,
        metric_name: str,
        threshold: float,
        notify: sns.ITopic,
    ) -> None:
        super().__init__(scope, id_)
        metric = cloudwatch.Metric(
            namespace=metric_namespace,
            metric_name=metric_name,
            statistic="Average",
            period=DRIFT_PERIOD,
        )
        self.alarm = cloudwatch.Alarm(
            self,
            "Alarm",
            alarm_description=(
                "Fleet anomalous-window fraction has stayed above the expected rate: input or score "
                "distribution has moved away from training. A retraining request was queued."
            ),
            metric=metric,
            threshold=threshold,
            evaluation_periods=DRIFT_EVALUATION_PERIODS,
            datapoints_to_alarm=DRIFT_EVALUATION_PERIODS,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            # No heartbeats is not evidence of drift (the fleet-offline case has its own signals).
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        action = cw_actions.SnsAction(notify)
        self.alarm.add_alarm_action(action)
        self.alarm.add_ok_action(action)

        self.retrain_dead_letter_queue = encrypted_queue(
            self, "RetrainDeadLetterQueue", retention_period=RETRAIN_QUEUE_RETENTION
        )
        self.retrain_queue = encrypted_queue(
            self,
            "RetrainQueue",
            retention_period=RETRAIN_QUEUE_RETENTION,
            dead_letter_queue=sqs.DeadLetterQueue(
                queue=self.retrain_dead_letter_queue, max_receive_count=RETRAIN_MAX_RECEIVES
            ),
        )
        self.rule = events.Rule(
            self,
            "RetrainOnDrift",
            description="The drift alarm entered ALARM: queue a retraining request",
            event_pattern=events.EventPattern(
                source=["aws.cloudwatch"],
                detail_type=["CloudWatch Alarm State Change"],
                resources=[self.alarm.alarm_arn],
                detail={"state": {"value": ["ALARM"]}},
            ),
        )
        self.rule.add_target(
            targets.SqsQueue(
                self.retrain_queue,
                # Requests EventBridge cannot deliver land beside the ones nobody could process.
                dead_letter_queue=self.retrain_dead_letter_queue,
                retry_attempts=4,
                max_event_age=Duration.hours(2),
            )
        )
