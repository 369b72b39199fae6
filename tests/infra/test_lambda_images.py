"""Each Lambda image COPYs every module of ours its handlers import, directly or through others.

An image that misses one fails only at deploy time, on the first invocation (ImportModuleError); here it
fails on every test run. The images and their handlers: the ingest image runs ``lambdas.ingest.handler``,
the retrain image ``lambdas.retrain.handler``; the publisher image runs ``lambdas.publisher.handler``
and, with its command overridden by ``infra/parts/lifecycle.py``, ``lambdas.lifecycle.handler``.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
from pathlib import Path, PurePosixPath

import aws_cdk as cdk
import pytest
from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_logs as logs

from infra.parts.common import AsyncInvoke, container_function, function_identity
from infra.parts.lifecycle import LIFECYCLE_HANDLER
from infra.parts.publisher import (
    EDGE_BUILD_CONTEXT,
    EDGE_DIRECTORY_NAME,
    EDGE_FILES,
    PUBLISHER_DOCKERFILE,
    publisher_image,
)
from infra.parts.retrain import RETRAIN_DOCKERFILE

REPO = Path(__file__).resolve().parents[2]
LAMBDAS = REPO / "lambdas"
# Where each build context is, relative to the repository: the default one (the code directory) and the
# publisher image's named one (`COPY --from=edge`, infra/parts/publisher.py).
CONTEXTS = {None: "lambdas", EDGE_BUILD_CONTEXT: EDGE_DIRECTORY_NAME}
PACKAGES = ("lambdas", EDGE_DIRECTORY_NAME)
COPY = re.compile(r"^COPY\s+(?P<arguments>.+)$", re.MULTILINE)
CMD = re.compile(r'^CMD \["(?P<handler>[\w.]+)"\]$', re.MULTILINE)


def copied_files(dockerfile: str) -> set[str]:
    """Paths (relative to the repository) of the files the Dockerfile's COPYs bring in."""
    files: set[str] = set()
    for match in COPY.finditer(dockerfile):
        *sources, _destination = match["arguments"].split()
        context = None
        if sources and sources[0].startswith("--from="):
            context = sources.pop(0).removeprefix("--from=")
        base = REPO / CONTEXTS[context]
        for source in sources:
            path = base / source
            if source.endswith("/"):
                files.update(f.relative_to(REPO).as_posix() for f in path.rglob("*.py"))
            else:
                files.add(path.relative_to(REPO).as_posix())
    return files


def module_file(module: str) -> str | None:
    """``lambdas.a.b`` as the file that defines it, relative to the repository; None for other packages."""
    parts = module.split(".")
    if parts[0] not in PACKAGES:
        return None
    relative = PurePosixPath(*parts)
    if (REPO / relative / "__init__.py").is_file():
        return str(relative / "__init__.py")
    if (REPO / relative.with_suffix(".py")).is_file():
        return str(relative.with_suffix(".py"))
    raise AssertionError(f"{module} is imported but is not a file of this repository")


def imported_modules(file: str) -> set[str]:
    """The modules of our packages ``file`` imports (anywhere in it), with every package above them.

    Relative imports (the inference component uses only those) are resolved against ``file``'s package.
    """
    tree = ast.parse((REPO / file).read_text(encoding="utf-8"))
    package = PurePosixPath(file).parent.parts
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package[: len(package) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            elif node.module is not None:
                base = node.module
            else:
                continue
            modules.add(base)
            # `from lambdas.common import aws` imports a submodule, not a name.
            modules.update(
                f"{base}.{alias.name}"
                for alias in node.names
                if (REPO / base.replace(".", "/") / f"{alias.name}.py").is_file()
            )
    with_parents: set[str] = set()
    for module in modules:
        parts = module.split(".")
        with_parents.update(".".join(parts[: i + 1]) for i in range(len(parts)))
    return {m for m in with_parents if m.split(".")[0] in PACKAGES}


def required_files(handler: str) -> set[str]:
    """Every file under ``lambdas/`` that importing the handler's module loads."""
    module = handler.rsplit(".", 1)[0]
    pending = {module, *(".".join(module.split(".")[: i + 1]) for i in range(module.count(".")))}
    files: set[str] = set()
    while pending:
        file = module_file(pending.pop())
        if file is None or file in files:
            continue
        files.add(file)
        pending |= imported_modules(file)
    return files


def _dockerfile(relative: str) -> str:
    return (LAMBDAS / relative).read_text(encoding="utf-8")


def _cmd(dockerfile: str) -> str:
    match = CMD.search(dockerfile)
    assert match is not None, "the Dockerfile has no CMD"
    return match["handler"]


IMAGES = {
    "ingest/Dockerfile": [_cmd(_dockerfile("ingest/Dockerfile"))],
    RETRAIN_DOCKERFILE: [_cmd(_dockerfile(RETRAIN_DOCKERFILE))],
    PUBLISHER_DOCKERFILE: [_cmd(_dockerfile(PUBLISHER_DOCKERFILE)), LIFECYCLE_HANDLER],
}


@pytest.mark.parametrize(("dockerfile", "handlers"), list(IMAGES.items()))
def test_image_copies_every_module_its_handlers_import(dockerfile: str, handlers: list[str]) -> None:
    copied = copied_files(_dockerfile(dockerfile))
    for handler in handlers:
        missing = required_files(handler) - copied
        assert not missing, f"{dockerfile} lacks {sorted(missing)}, which {handler} imports"


def test_every_function_dockerfile_is_checked() -> None:
    assert {str(p.relative_to(LAMBDAS)) for p in LAMBDAS.glob("*/Dockerfile")} == set(IMAGES)
    assert IMAGES["ingest/Dockerfile"] == ["lambdas.ingest.handler.handler"]
    assert IMAGES["retrain/Dockerfile"] == ["lambdas.retrain.handler.handler"]
    assert IMAGES[PUBLISHER_DOCKERFILE] == [
        "lambdas.publisher.handler.handler",
        "lambdas.lifecycle.handler.handler",
    ]


def test_the_shared_helpers_are_imported_through_the_images() -> None:
    """The walk follows imports across packages: both images reach lambdas/common."""
    assert "lambdas/common/aws.py" in required_files("lambdas.ingest.handler.handler")
    assert "lambdas/common/aws.py" in required_files(LIFECYCLE_HANDLER)
    assert {"lambdas/ingest/__init__.py", "lambdas/ingest/table.py"} <= required_files(LIFECYCLE_HANDLER)
    # Drift reads the registry's key layout: the ingest image needs that one lifecycle module.
    assert "lambdas/lifecycle/registry.py" in required_files("lambdas.ingest.handler.handler")
    assert "lambdas/common/aws.py" in required_files("lambdas.retrain.handler.handler")


def test_the_publisher_image_takes_the_component_parser_and_hashes_what_it_takes() -> None:
    """Validation imports the component's post-processing parser; the walk follows its relative imports."""
    needed = {
        f for f in required_files("lambdas.publisher.handler.handler") if f.startswith(EDGE_DIRECTORY_NAME)
    }
    assert needed == {f"{EDGE_DIRECTORY_NAME}/{name}" for name in EDGE_FILES}
    assert needed <= copied_files(_dockerfile(PUBLISHER_DOCKERFILE))


def test_a_missing_copy_is_reported() -> None:
    """The check itself: drop the COPY of lambdas/common and the ingest image is found lacking it."""
    without_common = "\n".join(
        line for line in _dockerfile("ingest/Dockerfile").splitlines() if not line.startswith("COPY common/")
    )
    missing = required_files("lambdas.ingest.handler.handler") - copied_files(without_common)
    assert missing == {"lambdas/common/__init__.py", "lambdas/common/aws.py"}


def test_copy_lines_are_read_with_multiple_sources() -> None:
    files = copied_files("COPY ingest/__init__.py ingest/table.py ${LAMBDA_TASK_ROOT}/lambdas/ingest/\n")
    assert files == {"lambdas/ingest/__init__.py", "lambdas/ingest/table.py"}
    edge = copied_files("COPY --from=edge anomaly_detector/errors.py ${LAMBDA_TASK_ROOT}/x/\n")
    assert edge == {f"{EDGE_DIRECTORY_NAME}/anomaly_detector/errors.py"}


def test_a_change_in_a_copied_component_file_changes_the_image_hash(tmp_path: Path) -> None:
    """CDK hashes only lambdas/ into the asset: the extra hash is what rebuilds the image on a parser fix."""
    (tmp_path / "lambdas").mkdir()
    for name in EDGE_FILES:
        path = tmp_path / EDGE_DIRECTORY_NAME / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# {name}\n")
    before = publisher_image(str(tmp_path / "lambdas"))
    (tmp_path / EDGE_DIRECTORY_NAME / "anomaly_detector" / "postprocess.py").write_text("# fixed\n")
    after = publisher_image(str(tmp_path / "lambdas"))
    assert before.build_contexts == {EDGE_BUILD_CONTEXT: str(tmp_path / EDGE_DIRECTORY_NAME)}
    assert after.extra_hash != before.extra_hash


def _publisher_image_hash(root: Path) -> str:
    app = cdk.App(outdir=str(root / "cdk.out"))
    stack = cdk.Stack(app, "ImageHash")
    identity = function_identity(
        stack,
        description="hash",
        log_retention=logs.RetentionDays.ONE_DAY,
        removal_policy=RemovalPolicy.DESTROY,
    )
    container_function(
        stack,
        identity=identity,
        code_directory=str(root / "lambdas"),
        dockerfile=PUBLISHER_DOCKERFILE,
        environment={},
        memory_size=128,
        timeout=Duration.seconds(3),
        reserved_concurrency=1,
        invoke=AsyncInvoke(retry_attempts=0, max_event_age=Duration.minutes(1)),
        image=publisher_image(str(root / "lambdas")),
    )
    assets = json.loads((Path(app.synth().directory) / "ImageHash.assets.json").read_text())
    (image,) = assets["dockerImages"]
    return str(image)


def test_the_publisher_image_hash_does_not_depend_on_where_the_repository_is(tmp_path: Path) -> None:
    """The edge context is an absolute path; hashing it would rebuild the image from every other checkout."""
    hashes = []
    for name in ("here", "elsewhere"):
        root = tmp_path / name
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        shutil.copytree(LAMBDAS, root / "lambdas", ignore=ignore)
        shutil.copytree(REPO / EDGE_DIRECTORY_NAME, root / EDGE_DIRECTORY_NAME, ignore=ignore)
        hashes.append(_publisher_image_hash(root))
    assert hashes[0] == hashes[1]
