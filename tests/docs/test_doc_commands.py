"""Every command in the docs is run: here, by another test or CI, or (real AWS only) through a stand-in.

Commands are the lines of the fenced ``bash`` / ``sh`` / ``shell`` / ``console`` blocks of README.md and
docs/*.md. Each must be in ``REGISTRY`` as one of:

* ``Run``: executed here as written (placeholders like ``<ModelBucketName>`` filled with stand-in values),
  ``edgeml`` commands against a moto server and the Greengrass fake;
* ``RunBy``: run by another test or by CI (the file named must exist and contain the given text);
* ``RealAws``: needs a real AWS account and was not run against one; the stand-in named is run instead.

A command in the docs and not in the registry fails, and so does a registry entry no doc uses.
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import boto3
import onnx
import pytest
import yaml

from edgeml.cli import EXIT_FAILED, EXIT_OK, main
from greengrass_components.anomaly_detector.transport import DISK_SPOOL
from infra.device_policy import DevicePolicyScope, device_policy_name, render_device_policy
from lambdas.retrain.core import is_environment_job
from tests.edgeml.stand_ins import ServerPlane, server_plane
from tests.lambdas.lifecycle.helpers import ACCOUNT, BUCKET, MODEL_COMPONENT, REGION

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
_FENCE_OPEN = re.compile(r"^```(bash|sh|shell|console)\s*$")
_TRAILING_COMMENT = re.compile(r"\s+#\s.*$")
CANARY_GROUP = "edgeml-dev-canary"
FLEET_GROUP = "edgeml-dev-fleet"
TRAINING_ROLE = "edgeml-dev-training"
EARLIER_MODEL = "20260101T000000Z-00000000"


# --- extracting the commands -------------------------------------------------------------------------


def commands_in(text: str) -> list[str]:
    """Command lines of the shell blocks: comments dropped, ``\\`` continuations joined, ``$ `` stripped."""
    found: list[str] = []
    language: str | None = None
    pending = ""
    for raw in text.splitlines():
        if language is None:
            match = _FENCE_OPEN.match(raw.strip())
            language = match[1] if match else None
            continue
        if raw.strip().startswith("```"):
            language = None
            continue
        line = raw.strip()
        if language == "console":
            if not line.startswith("$ "):
                continue  # output
            line = line[2:]
        line = _TRAILING_COMMENT.sub("", line)
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        found.append(" ".join((pending + line).split()))
        pending = ""
    return found


def doc_commands() -> list[tuple[str, str]]:
    return [(doc.relative_to(REPO).as_posix(), cmd) for doc in DOCS for cmd in commands_in(doc.read_text())]


def test_extraction_handles_comments_continuations_and_console_output():
    text = "\n".join(
        [
            "```bash",
            "make a   # why",
            "# only a comment",
            "edgeml fleet \\",
            "  --json",
            "```",
            "```console",
            "$ edgeml --help",
            "usage: edgeml",
            "```",
            "```python",
            "not_a_command()",
            "```",
        ]
    )
    assert commands_in(text) == ["make a", "edgeml fleet --json", "edgeml --help"]


# --- the registry ------------------------------------------------------------------------------------


@dataclass
class Context:
    """What the commands run against: the stand-ins, a scratch folder, values that fill placeholders."""

    plane: ServerPlane
    workdir: Path
    values: dict[str, str] = field(default_factory=dict)
    synthesized: dict[str, Path] = field(default_factory=dict)

    def synth(self, env: str) -> Path:
        """`python app.py` for ``env`` into a scratch cdk.out (the offline half of `cdk deploy`)."""
        if env not in self.synthesized:
            out = self.workdir / f"cdk.out.{env}"
            done = subprocess.run(
                [sys.executable, "app.py"],
                cwd=REPO,
                env={**os.environ, "CDK_OUTDIR": str(out), "CDK_CONTEXT_JSON": json.dumps({"env": env})},
                capture_output=True,
                text=True,
                timeout=240,
                check=False,
            )
            assert done.returncode == 0, done.stderr[-2000:]
            self.synthesized[env] = out
        return self.synthesized[env]

    def template(self, env: str, stack: str) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads((self.synth(env) / f"{stack}.template.json").read_text())
        return loaded

    def client(self, service: str) -> Any:
        return boto3.client(service, endpoint_url=self.plane.moto_url, region_name=REGION)


@dataclass(frozen=True)
class Run:
    """Executed here as written; ``before`` prepares the state the docs assume (e.g. devices reporting)."""

    expect: int = EXIT_OK
    before: Callable[[Context], None] | None = None


@dataclass(frozen=True)
class RunBy:
    """Run by another test or by CI: ``path`` must exist and contain ``contains``."""

    path: str
    contains: str


@dataclass(frozen=True)
class RealAws:
    """Needs a real AWS account (not run against one here); ``stand_in`` says what runs instead."""

    stand_in: str
    run: Callable[[Context, list[str]], None]


def _resources(template: dict[str, Any], kind: str, prop: str) -> set[str]:
    return {r["Properties"][prop] for r in template["Resources"].values() if r["Type"] == kind}


def _synth_all(env: str) -> Callable[[Context, list[str]], None]:
    def run(ctx: Context, _argv: list[str]) -> None:
        prefix = f"Edgeml{env.capitalize()}"
        stacks = ("ModelStore", "Training", "Fleet", "Publisher", "Ingest", "Lifecycle", "Monitoring")
        for stack in stacks:
            assert (ctx.synth(env) / f"{prefix}{stack}.template.json").is_file()

    return run


def _bootstrap(ctx: Context, _argv: list[str]) -> None:
    # What bootstrap provides is what the synthesized assets expect: the default-qualifier asset buckets.
    manifest = json.loads((ctx.synth("dev") / "EdgemlDevPublisher.assets.json").read_text())
    destinations = [d for a in manifest.get("dockerImages", {}).values() for d in a["destinations"].values()]
    assert destinations
    assert all("cdk-hnb659fds-container-assets" in d["repositoryName"] for d in destinations)


def _describe_fleet_outputs(ctx: Context, argv: list[str]) -> None:
    assert argv[argv.index("--stack-name") + 1] == "EdgemlDevFleet"
    outputs = ctx.template("dev", "EdgemlDevFleet")["Outputs"]
    for name in ("CanaryThingGroupArn", "FleetThingGroupArn", "RoleAliasName"):
        assert name in outputs
    assert "DevicePolicyName" not in outputs  # each device has its own policy (`edgeml device policy`)


def _option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def _fleet_stack_deployed(ctx: Context) -> None:
    """What `cdk deploy` of the Fleet stack leaves for `edgeml device policy`: its role alias, in moto."""
    fleet = ctx.template("dev", "EdgemlDevFleet")
    (alias,) = _resources(fleet, "AWS::IoT::RoleAlias", "RoleAlias")
    role = f"arn:aws:iam::{ACCOUNT}:role/edgeml-dev-token-exchange"
    ctx.client("iot").create_role_alias(roleAlias=alias, roleArn=role, credentialDurationSeconds=3600)


def _install_core(ctx: Context, argv: list[str]) -> None:
    """The installer's resource names are the Fleet stack's, and the policy is the device's own, made by
    `edgeml device policy` just before (the installer would otherwise create a broad one of that name).
    As the installer does: thing, certificate with that policy attached, the thing in the fleet group."""
    fleet = ctx.template("dev", "EdgemlDevFleet")
    thing, policy = _option(argv, "--thing-name"), _option(argv, "--thing-policy-name")
    assert _option(argv, "--thing-group-name") in _resources(fleet, "AWS::IoT::ThingGroup", "ThingGroupName")
    alias = _option(argv, "--tes-role-alias-name")
    assert alias in _resources(fleet, "AWS::IoT::RoleAlias", "RoleAlias")
    assert policy == device_policy_name("edgeml-dev", thing)
    iot = ctx.client("iot")
    scope = DevicePolicyScope(
        partition="aws", region=REGION, account=ACCOUNT, name_prefix="edgeml-dev", role_alias=alias
    )
    assert json.loads(iot.get_policy(policyName=policy)["policyDocument"]) == render_device_policy(
        thing, scope
    )
    _register_core(ctx, thing, _option(argv, "--thing-group-name"))
    certificate = iot.create_keys_and_certificate(setAsActive=True)["certificateArn"]
    iot.attach_policy(policyName=policy, target=certificate)
    iot.attach_thing_principal(thingName=thing, principal=certificate)


def _register_core(ctx: Context, thing: str, group: str) -> None:
    iot = ctx.client("iot")
    iot.create_thing(thingName=thing)
    iot.add_thing_to_thing_group(thingGroupName=group, thingName=thing)
    ctx.plane.plane.fake.register_core_device(thing)


def _add_to_group(ctx: Context, argv: list[str]) -> None:
    thing, group = _option(argv, "--thing-name"), _option(argv, "--thing-group-name")
    if thing not in {t["thingName"] for t in ctx.client("iot").list_things()["things"]}:
        _register_core(ctx, thing, FLEET_GROUP)  # the installer's part (deploy.md §3)
    ctx.client("iot").add_thing_to_thing_group(thingGroupName=group, thingName=thing)
    members = ctx.client("iot").list_things_in_thing_group(thingGroupName=group)["things"]
    assert thing in members


def _remove_from_group(ctx: Context, argv: list[str]) -> None:
    """A canary device leaves the fleet group (deploy.md §3): the two groups share no device."""
    thing, group = _option(argv, "--thing-name"), _option(argv, "--thing-group-name")
    ctx.client("iot").remove_thing_from_thing_group(thingGroupName=group, thingName=thing)
    assert thing not in ctx.client("iot").list_things_in_thing_group(thingGroupName=group)["things"]
    assert thing in ctx.client("iot").list_things_in_thing_group(thingGroupName=CANARY_GROUP)["things"]


def _s3_cp(ctx: Context, argv: list[str]) -> None:
    bucket, _, key = argv[-1].removeprefix("s3://").partition("/")
    data = (REPO / "tests/training/data/machine_temperature_head2500.csv").read_bytes()
    ctx.client("s3").put_object(Bucket=bucket, Key=key, Body=data)


def _train_sagemaker(ctx: Context, argv: list[str]) -> None:
    """The same edgeml command against moto; moto has no iam:SimulatePrincipalPolicy, so no role check."""
    code = _edgeml(ctx, [*argv, "--skip-role-validation"])
    assert code == EXIT_OK
    jobs = ctx.client("sagemaker").list_training_jobs()["TrainingJobSummaries"]
    assert jobs


def _train_sagemaker_with_prefix(ctx: Context, argv: list[str]) -> None:
    """The runbook's hand-started job: named with the environment's prefix, as the retrain Lambda expects."""
    prefix = argv[argv.index("--job-name-prefix") + 1]
    _train_sagemaker(ctx, argv)
    jobs = ctx.client("sagemaker").list_training_jobs()["TrainingJobSummaries"]
    names = [job["TrainingJobName"] for job in jobs]
    assert any(name.startswith(f"{prefix}-") for name in names), names
    # ... and the retrain Lambda takes it as its environment's template (docs/deploy.md, docs/runbook.md).
    assert any(is_environment_job(prefix.removesuffix("-train"), name) for name in names), names


def _create_certificate(ctx: Context, argv: list[str]) -> None:
    assert "--set-as-active" in argv
    created = ctx.client("iot").create_keys_and_certificate(setAsActive=True)
    ctx.values["<certificateArn>"] = created["certificateArn"]


def _attach_policy(ctx: Context, argv: list[str]) -> None:
    """A new certificate gets the device's own policy, which `edgeml device policy` made (docs/deploy.md)."""
    iot = ctx.client("iot")
    policy, target = _option(argv, "--policy-name"), _option(argv, "--target")
    assert policy == device_policy_name("edgeml-dev", "gw-01")
    document = json.loads(iot.get_policy(policyName=policy)["policyDocument"])
    assert f"arn:aws:iot:{REGION}:{ACCOUNT}:client/gw-01" in document["Statement"][0]["Resource"]
    iot.attach_policy(policyName=policy, target=target)
    assert [p["policyName"] for p in iot.list_attached_policies(target=target)["policies"]] == [policy]


def _attach_thing_principal(ctx: Context, argv: list[str]) -> None:
    iot = ctx.client("iot")
    iot.attach_thing_principal(
        thingName=_option(argv, "--thing-name"), principal=_option(argv, "--principal")
    )
    assert (
        _option(argv, "--principal")
        in iot.list_thing_principals(thingName=_option(argv, "--thing-name"))["principals"]
    )


def _deactivate_certificate(ctx: Context, argv: list[str]) -> None:
    iot = ctx.client("iot")
    iot.update_certificate(certificateId=_option(argv, "--certificate-id"), newStatus="INACTIVE")
    described = iot.describe_certificate(certificateId=_option(argv, "--certificate-id"))
    assert described["certificateDescription"]["status"] == "INACTIVE"


def _canary_reports_healthy(ctx: Context) -> None:
    plane = ctx.plane.plane
    deployment = plane.latest_deployment(plane.lifecycle.canary.arn)
    things = ctx.client("iot").list_things_in_thing_group(thingGroupName=CANARY_GROUP)["things"]
    model_version = deployment["components"][MODEL_COMPONENT]["componentVersion"]
    plane.report(things, deployment["deploymentId"], model_version=model_version)


def _second_model_on_the_canary(ctx: Context) -> None:
    ctx.plane.plane.train_and_publish("job-2", "20991231T000000Z-00000002")


REAL_AWS_SYNTH = "python app.py (CDK_CONTEXT_JSON env) into a scratch cdk.out: every stack synthesizes"

REGISTRY: dict[str, Run | RunBy | RealAws] = {
    # README.md
    "make demo": RunBy("tests/e2e/test_demo.py", '"-m", "demo"'),
    "make test": RunBy(".ci/run", "make test"),
    # docs/operations.md
    "make synth": RunBy("tests/infra/test_nag_and_synth.py", "def test_python_app_py_synthesizes_offline"),
    'CDK_CONTEXT_JSON=\'{"env": "prod"}\' .venv/bin/python app.py': Run(),
    "npx cdk synth -c env=prod": RealAws("npx is not installed: " + REAL_AWS_SYNTH, _synth_all("prod")),
    "npx cdk bootstrap aws://<account>/<region>": RealAws(
        "synth; the assets expect the default bootstrap qualifier", _bootstrap
    ),
    "npx cdk deploy --all -c env=dev": RealAws(REAL_AWS_SYNTH, _synth_all("dev")),
    "npx cdk deploy --all -c env=prod": RealAws(REAL_AWS_SYNTH, _synth_all("prod")),
    "python -m lambdas.lifecycle --help": Run(),
    "python -m lambdas.lifecycle status": Run(),
    "python -m lambdas.lifecycle status --model-version <v>": Run(),
    "python -m lambdas.lifecycle promote --dry-run": Run(expect=EXIT_FAILED),  # the canary has not reported
    "python -m lambdas.lifecycle promote [--model-version <v>]": RunBy(
        "tests/lambdas/lifecycle/test_cli.py", '"promote", "--json", "--model-version"'
    ),
    (
        "python -m lambdas.lifecycle rollback --group fleet|canary|<name>|<arn> [--to-version <component v>] "
        '--reason "..."'
    ): RunBy("tests/lambdas/lifecycle/test_cli.py", '"rollback", "--group", "canary", "--reason"'),
    "python -m lambdas.lifecycle what-runs-where --group canary": Run(),
    "python -m lambdas.lifecycle what-runs-where --thing <thing>": Run(),
    (
        "python -m training.launch cloud --bucket <ModelBucketName> --dataset nab "
        "--role-arn <TrainingRoleArn> --job-name-prefix edgeml-dev-train"
    ): RunBy("tests/lambdas/retrain/test_launcher_parity.py", 'job_name_prefix=f"{PREFIX}-train"'),
    # docs/deploy.md
    'aws cloudformation describe-stacks --stack-name EdgemlDevFleet --query "Stacks[0].Outputs"': RealAws(
        "the synthesized EdgemlDevFleet template has the outputs the docs name", _describe_fleet_outputs
    ),
    "edgeml publish component --version 1.0.0 --bucket <ModelBucketName>": Run(),
    "edgeml device policy --thing-name gw-01 --name-prefix edgeml-dev": Run(before=_fleet_stack_deployed),
    (
        "sudo -E java -Droot=/greengrass/v2 -Dlog.store=FILE -jar ./GreengrassInstaller/lib/Greengrass.jar "
        "--aws-region <region> --thing-name gw-01 --thing-group-name edgeml-dev-fleet --thing-policy-name "
        "edgeml-dev-core-device-gw-01 --tes-role-alias-name edgeml-dev-token-exchange "
        "--component-default-user ggc_user:ggc_group --provision true --setup-system-service true"
    ): RealAws(
        "names checked against the Fleet template and the policy `edgeml device policy` made in moto; "
        "thing, certificate and group in moto, core device in the fake",
        _install_core,
    ),
    "aws iot add-thing-to-thing-group --thing-name gw-01 --thing-group-name edgeml-dev-canary": RealAws(
        "iot.add_thing_to_thing_group through boto3 against moto", _add_to_group
    ),
    "aws iot remove-thing-from-thing-group --thing-name gw-01 --thing-group-name edgeml-dev-fleet": RealAws(
        "iot.remove_thing_from_thing_group through boto3 against moto", _remove_from_group
    ),
    "aws s3 cp train.csv s3://<ModelBucketName>/datasets/pump/train.csv": RealAws(
        "s3.put_object through boto3 against moto", _s3_cp
    ),
    (
        "edgeml train sagemaker --bucket <ModelBucketName> --dataset pump --role-arn <TrainingRoleArn> "
        "--job-name-prefix edgeml-dev-train -p model_name=pump"
    ): RealAws("the same command against moto, with --skip-role-validation", _train_sagemaker_with_prefix),
    "edgeml fleet": Run(),
    # docs/runbook.md
    (
        "edgeml train local --data-dir tests/training/data --model-dir build/runbook/model -p model_name=pump"
    ): Run(),
    (
        "edgeml replay tests/training/data/machine_temperature_head2500.csv "
        "--model build/runbook/model/model.onnx"
    ): Run(),
    "edgeml deploy build/runbook/model/model.onnx": Run(),
    "edgeml fleet --group canary": Run(),
    "edgeml promote --dry-run": Run(before=_canary_reports_healthy),
    "edgeml promote": Run(),
    'edgeml rollback --group canary --reason "scores drift after rollout"': Run(
        before=_second_model_on_the_canary
    ),
    "edgeml fleet --model-version <model_version>": Run(),
    "aws iot add-thing-to-thing-group --thing-name gw-07 --thing-group-name edgeml-dev-canary": RealAws(
        "installer stand-in for gw-07, then iot.add_thing_to_thing_group against moto", _add_to_group
    ),
    "aws iot remove-thing-from-thing-group --thing-name gw-07 --thing-group-name edgeml-dev-fleet": RealAws(
        "iot.remove_thing_from_thing_group through boto3 against moto", _remove_from_group
    ),
    "edgeml fleet --thing gw-07": Run(),
    (
        "aws iot create-keys-and-certificate --set-as-active --certificate-pem-outfile gw-01.cert.pem "
        "--private-key-outfile gw-01.key.pem"
    ): RealAws("iot.create_keys_and_certificate against moto", _create_certificate),
    "aws iot attach-policy --policy-name edgeml-dev-core-device-gw-01 --target <certificateArn>": RealAws(
        "the device's own policy (made by `edgeml device policy`); iot.attach_policy against moto",
        _attach_policy,
    ),
    "aws iot attach-thing-principal --thing-name gw-01 --principal <certificateArn>": RealAws(
        "iot.attach_thing_principal against moto", _attach_thing_principal
    ),
    "aws iot update-certificate --certificate-id <oldCertificateId> --new-status INACTIVE": RealAws(
        "iot.update_certificate against moto on an earlier certificate", _deactivate_certificate
    ),
}


# --- the checks --------------------------------------------------------------------------------------


def test_every_doc_command_is_registered():
    missing = sorted({f"{doc}: {cmd}" for doc, cmd in doc_commands() if cmd not in REGISTRY})
    assert not missing, "commands in the docs that no test runs (add them to REGISTRY):\n" + "\n".join(
        missing
    )


def test_every_registry_entry_is_in_the_docs():
    documented = {cmd for _, cmd in doc_commands()}
    stale = sorted(set(REGISTRY) - documented)
    assert not stale, f"REGISTRY entries no doc uses any more: {stale}"


@pytest.mark.parametrize(
    ("command", "entry"),
    [(c, e) for c, e in REGISTRY.items() if isinstance(e, RunBy)],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_commands_run_elsewhere_are_really_run_there(command, entry):
    path = REPO / entry.path
    assert path.is_file(), f"{command}: {entry.path} does not exist"
    assert entry.contains in path.read_text(), f"{command}: {entry.path} no longer runs it"


@cache
def _documented_config_names() -> str:
    return (REPO / "docs" / "configuration.md").read_text()


def test_configuration_reference_names_every_setting():
    text = _documented_config_names()
    names: set[str] = set()
    for module in (
        "lambdas/publisher/config.py",
        "lambdas/lifecycle/config.py",
        "lambdas/ingest/config.py",
        "lambdas/retrain/config.py",
    ):
        names |= set(re.findall(r'^ENV_\w+ = "(\w+)"', (REPO / module).read_text(), flags=re.MULTILINE))
    for environment in json.loads((REPO / "cdk.json").read_text())["context"]["environments"].values():
        names |= set(environment)
    recipe = yaml.safe_load((REPO / "greengrass_components/anomaly_detector/recipe.yaml").read_text())
    names |= set(recipe["ComponentConfiguration"]["DefaultConfiguration"])
    assert len(names) > 50
    missing = sorted(name for name in names if f"`{name}`" not in text)
    assert not missing, f"docs/configuration.md does not describe {missing}"


def test_the_nucleus_configuration_in_deploy_md_interpolates_and_spools_to_disk():
    """deploy.md §3's components for the groups' deployments: valid JSON whose merge turns on
    interpolateComponentConfiguration (the recipe's accessControl uses {iot:thingName}) and the disk
    spooler the component checks for."""
    text = (REPO / "docs" / "deploy.md").read_text()
    blocks = re.findall(r"^```json\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)
    (components,) = [json.loads(b) for b in blocks if "aws.greengrass.Nucleus" in b]
    nucleus = components["aws.greengrass.Nucleus"]
    assert "2.6.0" in nucleus["componentVersion"]
    merge = json.loads(nucleus["configurationUpdate"]["merge"])
    assert merge["interpolateComponentConfiguration"] is True
    assert merge["mqtt"]["spooler"] == {
        "storageType": DISK_SPOOL,
        "pluginName": "aws.greengrass.DiskSpooler",
        "maxSizeInBytes": 67108864,
    }
    assert set(components) == {"aws.greengrass.DiskSpooler", "aws.greengrass.Nucleus"}
    recipe = yaml.safe_load((REPO / "greengrass_components/anomaly_detector/recipe.yaml").read_text())
    access = recipe["ComponentConfiguration"]["DefaultConfiguration"]["accessControl"]
    assert "{iot:thingName}" in json.dumps(access["aws.greengrass.ipc.mqttproxy"])


# --- running them ------------------------------------------------------------------------------------


def _substitute(ctx: Context, argv: list[str]) -> list[str]:
    out: list[str] = []
    for arg in argv:
        filled = _fill(ctx, arg)
        # The repository's own files by absolute path; everything else is written in the workdir.
        out.append(str(REPO / filled) if filled.startswith("tests/") else filled)
    return out


def _fill(ctx: Context, text: str) -> str:
    for placeholder, value in ctx.values.items():
        text = text.replace(placeholder, value)
    return text


def _edgeml(ctx: Context, argv: list[str]) -> int:
    if "<model_version>" in argv:
        model = ctx.workdir / "build/runbook/model/model.onnx"
        props = {p.key: p.value for p in onnx.load(str(model)).metadata_props}
        ctx.values["<model_version>"] = props["model_version"]
    args = _substitute(ctx, argv)
    assert args[0] == "edgeml"
    return main([*ctx.plane.endpoint_args(), *args[1:]], out=io.StringIO())


def _run_shell(command: str, ctx: Context) -> int:
    """A local command run as written by bash in the repository: a synth (into the workdir), or a module's
    CLI against the stand-ins (the endpoint variables an operator would export)."""
    # A synth of one environment leaves its cdk.out where the stand-ins for that environment look.
    synth_env = "prod" if "app.py" in command and '"prod"' in command else None
    env = {
        **os.environ,
        "CDK_OUTDIR": str(ctx.workdir / f"cdk.out.{synth_env or 'shell'}"),
        "AWS_ENDPOINT_URL": ctx.plane.moto_url,
        "AWS_ENDPOINT_URL_GREENGRASSV2": ctx.plane.greengrass_url,
    }
    line = _fill(ctx, command).replace(".venv/bin/python", sys.executable)
    line = re.sub(r"^python ", f"{sys.executable} ", line)
    done = subprocess.run(
        ["bash", "-c", line],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    if synth_env is not None and done.returncode == 0:
        ctx.synthesized[synth_env] = ctx.workdir / f"cdk.out.{synth_env}"
    return done.returncode


@pytest.fixture
def ctx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Context]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_GREENGRASSV2"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    with server_plane(canary_group=CANARY_GROUP, fleet_group=FLEET_GROUP) as plane:
        for name, value in plane.environment.items():
            monkeypatch.setenv(name, value)
        context = Context(plane=plane, workdir=tmp_path)
        iam = context.client("iam")
        role = iam.create_role(RoleName=TRAINING_ROLE, AssumeRolePolicyDocument=json.dumps({"Statement": []}))
        old = context.client("iot").create_keys_and_certificate(setAsActive=True)
        # A model already on the canary, for the commands that name one (docs/operations.md).
        plane.plane.train_and_publish("job-0", EARLIER_MODEL)
        context.values.update(
            {
                "<ModelBucketName>": BUCKET,
                "<TrainingRoleArn>": role["Role"]["Arn"],
                "<oldCertificateId>": old["certificateId"],
                "<v>": EARLIER_MODEL,
                "<thing>": "canary-01",
            }
        )
        yield context


def test_doc_commands_run_in_order_against_the_stand_ins(ctx: Context):
    """Each doc's commands in its own order (the runbook's steps build on each other); each once."""
    seen: set[str] = set()
    for doc, command in doc_commands():
        if command in seen:
            continue
        seen.add(command)
        entry = REGISTRY[command]
        if isinstance(entry, RunBy):
            continue
        argv = shlex.split(command)
        if isinstance(entry, RealAws):
            entry.run(ctx, _substitute(ctx, argv))
            continue
        if entry.before is not None:
            entry.before(ctx)
        code = _edgeml(ctx, argv) if argv[0] == "edgeml" else _run_shell(command, ctx)
        assert code == entry.expect, f"{doc}: `{command}` exited {code}, expected {entry.expect}"
