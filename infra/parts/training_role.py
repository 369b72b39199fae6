"""The SageMaker training execution role: reads datasets and its code, writes job output, logs.

Not ``models/*``: a job writes only ``SM_MODEL_DIR``, which SageMaker uploads under ``training-output/``,
and the publisher takes the model from there (the training job's state-change event). A write under
``models/<name>/<version>/model.onnx`` would itself start a canary deployment (the publisher's S3 rule),
so code running in a job (its PyPI dependencies included) must not be able to make one.
"""

from __future__ import annotations

from aws_cdk import Aws
from aws_cdk import aws_iam as iam
from constructs import Construct

from infra import nag
from infra.parts.model_store import DATASETS_PREFIX, ModelStore

TRAINING_LOG_GROUP = "/aws/sagemaker/TrainingJobs"
# Where training/launch.py puts the source package (the SDK's code and sm_drivers channels) and where a
# job's output goes (training/launch_config.py's CODE_PREFIX and TRAINING_OUTPUT_PREFIX); a drift
# retraining (lambdas/retrain) reuses both.
CODE_PREFIX = "code/"
TRAINING_OUTPUT_PREFIX = "training-output/"


class TrainingRole(Construct):
    """Attribute: ``role`` (assumed by sagemaker.amazonaws.com)."""

    def __init__(self, scope: Construct, id_: str, *, model_store: ModelStore, name_prefix: str) -> None:
        super().__init__(scope, id_)
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
            description=f"{name_prefix}: SageMaker training jobs (datasets/* in, training-output/* out)",
        )
        datasets = model_store.object_arn(f"{DATASETS_PREFIX}*")
        code = model_store.object_arn(f"{CODE_PREFIX}*")
        output = model_store.object_arn(f"{TRAINING_OUTPUT_PREFIX}*")
        log_group = f"arn:{Aws.PARTITION}:logs:{Aws.REGION}:{Aws.ACCOUNT_ID}:log-group:{TRAINING_LOG_GROUP}"
        log_streams = f"{log_group}:log-stream:*"
        statements = [
            iam.PolicyStatement(sid="ReadDatasets", actions=["s3:GetObject"], resources=[datasets]),
            # An S3Prefix channel lists its prefix before it downloads; the listing stays inside datasets/.
            iam.PolicyStatement(
                sid="ListDatasets",
                actions=["s3:ListBucket"],
                resources=[model_store.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [f"{DATASETS_PREFIX}*"]}},
            ),
            iam.PolicyStatement(sid="ReadTrainingCode", actions=["s3:GetObject"], resources=[code]),
            iam.PolicyStatement(
                sid="ListTrainingCode",
                actions=["s3:ListBucket"],
                resources=[model_store.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [f"{CODE_PREFIX}*"]}},
            ),
            iam.PolicyStatement(sid="WriteTrainingOutput", actions=["s3:PutObject"], resources=[output]),
            # SSE-KMS: reading needs Decrypt, writing needs GenerateDataKey (and Decrypt for multipart parts).
            # A job whose OutputDataConfig.KmsKeyId names this key (the retrain function's, and the
            # launcher's when given the key) also needs Encrypt, per CreateTrainingJob's documentation;
            # DescribeKey reveals only the key's metadata and spares a job that checks its key a refusal.
            # This key only.
            iam.PolicyStatement(
                sid="UseModelStoreKey",
                actions=["kms:Decrypt", "kms:DescribeKey", "kms:Encrypt", "kms:GenerateDataKey"],
                resources=[model_store.key.key_arn],
            ),
            iam.PolicyStatement(
                sid="TrainingLogs",
                actions=["logs:CreateLogGroup", "logs:DescribeLogStreams"],
                resources=[log_group],
            ),
            iam.PolicyStatement(
                sid="TrainingLogStreams",
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[log_streams],
            ),
        ]
        policy = iam.Policy(self, "Policy", statements=statements)
        policy.attach_to_role(self.role)

        nag.acknowledge(
            policy,
            nag.wildcard_resource(self, datasets),
            "Training reads any dataset under datasets/; the prefix is the boundary (contracts §2).",
        )
        nag.acknowledge(
            policy,
            nag.wildcard_resource(self, code),
            "The SDK uploads each job's source under code/<base>/<job>/; the prefix is the boundary.",
        )
        nag.acknowledge(
            policy,
            nag.wildcard_resource(self, output),
            "SageMaker writes training-output/<job>/ per job; the prefix is the boundary.",
        )
        nag.acknowledge(
            policy,
            nag.wildcard_resource(self, log_streams),
            "SageMaker names one log stream per job and instance; scoped to the TrainingJobs group.",
        )
