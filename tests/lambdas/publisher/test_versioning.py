from __future__ import annotations

import random

import pytest

from lambdas.publisher.versioning import SemVer, next_version


def test_first_version_is_1_0_0():
    assert next_version([]) == "1.0.0"


@pytest.mark.parametrize(
    ("existing", "expected"),
    [
        (["1.0.0"], "1.0.1"),
        (["1.0.9", "1.0.2", "1.0.10"], "1.0.11"),
        (["1.0.9"], "1.0.10"),
        (["1.2.3", "2.0.0", "1.10.0"], "2.0.1"),
        # A pre-release ranks below its release, so 1.0.1 is still free: the next version is that release.
        (["1.0.0", "1.0.1-rc.1"], "1.0.1"),
        (["1.0.1-rc.1", "1.0.1"], "1.0.2"),
        # Build metadata does not order and is not carried over.
        (["1.0.3+build.7"], "1.0.4"),
    ],
)
def test_next_version_bumps_the_patch_of_the_highest(existing, expected):
    assert next_version(existing) == expected


def test_precedence_follows_semver_org_example():
    ordered = [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
        "1.0.1",
        "1.1.0",
        "2.0.0",
    ]
    shuffled = ordered[:]
    random.Random(7).shuffle(shuffled)
    assert [str(v) for v in sorted(SemVer.parse(text) for text in shuffled)] == ordered


def test_build_metadata_is_ignored_for_equality_but_kept_in_text():
    assert SemVer.parse("1.0.0+a") == SemVer.parse("1.0.0+b")
    assert str(SemVer.parse("1.0.0-rc.1+a.b")) == "1.0.0-rc.1+a.b"


@pytest.mark.parametrize("text", ["1.0", "01.0.0", "1.0.0-", "v1.0.0", "1.0.0-01", ""])
def test_invalid_versions_are_rejected(text):
    with pytest.raises(ValueError, match="is not a semantic version"):
        SemVer.parse(text)
