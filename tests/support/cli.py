"""Running a package's command line the way a user does: ``python -m`` from the checkout."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def module_help(module: str) -> subprocess.CompletedProcess[str]:
    """``python -m MODULE --help`` in a fresh interpreter, run from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", module, "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
