"""Semantic versions (semver.org 2.0.0), which Greengrass requires for component versions."""

from __future__ import annotations

import re
from functools import total_ordering

_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)


def is_semver(text: str) -> bool:
    return _SEMVER.match(text) is not None


@total_ordering
class SemVer:
    """Orders by precedence: build metadata ignored, a pre-release sorts below its release."""

    def __init__(self, text: str) -> None:
        match = _SEMVER.match(text)
        if match is None:
            raise ValueError(f"not a semantic version: {text!r}")
        self.text = text
        self.core = (int(match.group(1)), int(match.group(2)), int(match.group(3)))
        self.prerelease: tuple[str, ...] = tuple(match.group(4).split(".")) if match.group(4) else ()

    def _key(self) -> tuple[tuple[int, int, int], int, tuple[tuple[int, int, str], ...]]:
        # Numeric identifiers sort below alphanumeric ones, and numerically among themselves.
        pre = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in self.prerelease)
        return self.core, 0 if self.prerelease else 1, pre

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SemVer) and self._key() == other._key()

    def __lt__(self, other: SemVer) -> bool:
        return self._key() < other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"SemVer({self.text!r})"
