"""The package is the component artifact: it must run from an unzipped copy, alone."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import greengrass_components

PACKAGE = Path(greengrass_components.__file__).parent / "anomaly_detector"
ALLOWED_TOP_LEVEL = {
    "__future__", "argparse", "collections", "contextlib", "csv", "dataclasses", "datetime", "functools",
    "hashlib", "itertools",
    "json", "logging", "math", "os", "pathlib", "queue", "random", "re", "signal", "sqlite3", "ssl", "sys",
    "threading", "time",
    "struct", "types", "typing", "uuid", "numpy", "onnxruntime", "orjson", "awsiot", "paho",
}  # fmt: skip


def test_only_relative_imports_and_edge_dependencies() -> None:
    for path in sorted(PACKAGE.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in ALLOWED_TOP_LEVEL, f"{path.name} imports {name}"


def test_unzipped_artifact_runs_from_its_decompressed_path(tmp_path: Path) -> None:
    archive = tmp_path / "anomaly_detector.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(PACKAGE.glob("*.py")):
            zf.write(path, path.name)
    # Greengrass unarchives a ZIP into a folder named after the archive.
    decompressed = tmp_path / "decompressed"
    shutil.unpack_archive(archive, decompressed / "anomaly_detector")
    result = subprocess.run(
        [sys.executable, "-m", "anomaly_detector", "--help"],
        cwd=decompressed,
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "--kernel-root" in result.stdout
