"""The drift alarms and what they set off: a notification and a retraining request.

Signals, all in the environment's metric namespace, averaged over the fleet:

- ``HeartbeatScorePsi`` and ``HeartbeatInputShift``: each heartbeat measured against the training of the
  model that produced it (``lambdas/ingest/drift.py``): the population-stability index between the
  period's score histogram and the training score distribution, and the largest per-channel shift of the
  input mean in training robust-scale units. Emitted by the ingest function as Embedded Metric Format lines.
  These two alarms queue a retraining request: the data no longer looks like what the model learned.
- ``HeartbeatAnomalyRate``: each heartbeat's anomalous-window fraction (an IoT rule, ``ingest.py``).
  Training leaves well under 1 % of its own windows over the threshold, so a fleet average several
  times above that is drift or a real incident; this alarm notifies only, since an incident is no reason
  to retrain.

Response: every alarm notifies the platform topic; an EventBridge rule on the two drift alarms' transition
to ALARM puts the alarm event on the "retrain request" queue, which ``infra/parts/retrain.py``'s function
consumes. A queue, not a direct SageMaker call from EventBridge: the consumer names the job after the
alarm's state-change time (one job per episode) and keeps a cooldown, so a flapping alarm cannot start a
job per flap.
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
from lambdas.ingest.adapters import INPUT_SHIFT_METRIC, SCORE_PSI_METRIC

# Heartbeats arrive every few minutes per device; 15-minute averages over the fleet smooth single devices.
DRIFT_PERIOD = Duration.minutes(15)
# One hour above the threshold: a short burst of real anomalies is an incident, not drift.
DRIFT_EVALUATION_PERIODS = 4
# A retraining request is acted on within days or not at all.
RETRAIN_QUEUE_RETENTION = Duration.days(14)
# Receives of one request before it is left for a person; more than three, since a receive can also be
# used up without the function's code running (a throttled invoke, see infra/parts/retrain.py).
RETRAIN_MAX_RECEIVES = 5
# Lambda's advice for an SQS source: six times the function's timeout (infra/parts/retrain.py).
RETRAIN_VISIBILITY_TIMEOUT = Duration.minutes(6)


class DriftAlarm(Construct):
    """Attributes: ``alarm`` (anomaly rate), ``score_alarm``, ``input_alarm``, ``rule``, ``retrain_queue``,
    ``retrain_dead_letter_queue``."""

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        metric_namespace: str,
        metric_name: str,
        threshold: float,
        score_psi_threshold: float,
        input_shift_threshold: float,
        notify: sns.ITopic,
    ) -> None:
        super().__init__(scope, id_)
        action = cw_actions.SnsAction(notify)
        self.alarm = self._alarm(
            "Alarm",
            namespace=metric_namespace,
            metric_name=metric_name,
            threshold=threshold,
            description=(
                "Fleet anomalous-window fraction has stayed above the expected rate: drift or an incident. "
                "Look at the anomalies and the score/input drift alarms."
            ),
            action=action,
        )
        self.score_alarm = self._alarm(
            "ScoreAlarm",
            namespace=metric_namespace,
            metric_name=SCORE_PSI_METRIC,
            threshold=score_psi_threshold,
            description=(
                "Fleet score distribution has moved away from training (population-stability index). "
                "A retraining request was queued."
            ),
            action=action,
        )
        self.input_alarm = self._alarm(
            "InputAlarm",
            namespace=metric_namespace,
            metric_name=INPUT_SHIFT_METRIC,
            threshold=input_shift_threshold,
            description=(
                "Fleet input level has moved away from training (robust-scale units). "
                "A retraining request was queued."
            ),
            action=action,
        )

        self.retrain_dead_letter_queue = encrypted_queue(
            self, "RetrainDeadLetterQueue", retention_period=RETRAIN_QUEUE_RETENTION
        )
        self.retrain_queue = encrypted_queue(
            self,
            "RetrainQueue",
            retention_period=RETRAIN_QUEUE_RETENTION,
            visibility_timeout=RETRAIN_VISIBILITY_TIMEOUT,
            dead_letter_queue=sqs.DeadLetterQueue(
                queue=self.retrain_dead_letter_queue, max_receive_count=RETRAIN_MAX_RECEIVES
            ),
        )
        self.rule = events.Rule(
            self,
            "RetrainOnDrift",
            description="A drift alarm entered ALARM: queue a retraining request",
            event_pattern=events.EventPattern(
                source=["aws.cloudwatch"],
                detail_type=["CloudWatch Alarm State Change"],
                resources=[self.score_alarm.alarm_arn, self.input_alarm.alarm_arn],
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

    def _alarm(
        self,
        id_: str,
        *,
        namespace: str,
        metric_name: str,
        threshold: float,
        description: str,
        action: cw_actions.SnsAction,
    ) -> cloudwatch.Alarm:
        alarm = cloudwatch.Alarm(
            self,
            id_,
            alarm_description=description,
            # No dimensions: the IoT metric action sets none, and the EMF lines are written without any.
            metric=cloudwatch.Metric(
                namespace=namespace, metric_name=metric_name, statistic="Average", period=DRIFT_PERIOD
            ),
            threshold=threshold,
            evaluation_periods=DRIFT_EVALUATION_PERIODS,
            datapoints_to_alarm=DRIFT_EVALUATION_PERIODS,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            # No heartbeats is not evidence of drift (the fleet-offline case has its own signals).
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        alarm.add_alarm_action(action)
        alarm.add_ok_action(action)
        return alarm
