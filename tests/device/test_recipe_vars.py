from __future__ import annotations

from pathlib import Path

import pytest

from device import InterpolationError, UnsupportedRecipeError
from device.recipe_vars import RecipeContext, interpolate, interpolate_configuration, resolve_pointer

CTX = RecipeContext(
    component="com.example.C",
    thing_name="gw-07",
    kernel_root=Path("/gg"),
    artifacts_path=Path("/gg/packages/artifacts/com.example.C/1.0.0"),
    decompressed_path=Path("/gg/packages/artifacts-unarchived/com.example.C/1.0.0"),
    work_path=Path("/gg/work/com.example.C"),
    configuration={
        "topic": "sensors/#",
        "batchSize": 32,
        "ratio": 0.5,
        "enabled": True,
        "nested": {"a/b": "slash", "t~x": "tilde"},
        "model": {"version": "1.0.0"},
    },
)


def test_system_variables() -> None:
    text = "{artifacts:path} {artifacts:decompressedPath} {work:path} {kernel:rootPath} {iot:thingName}"
    assert interpolate(text, CTX) == (
        "/gg/packages/artifacts/com.example.C/1.0.0 /gg/packages/artifacts-unarchived/com.example.C/1.0.0 "
        "/gg/work/com.example.C /gg gw-07"
    )


def test_configuration_values_render_as_the_nucleus_prints_them() -> None:
    text = (
        "'{configuration:/topic}' {configuration:/batchSize} {configuration:/ratio} {configuration:/enabled}"
    )
    assert interpolate(text, CTX) == "'sensors/#' 32.0 0.5 true"
    assert interpolate("{configuration:/nested/a~1b} {configuration:/nested/t~0x}", CTX) == "slash tilde"


def test_text_that_is_not_a_variable_is_left_alone() -> None:
    text = 'echo ${HOME} {} {"a": 1} {foo:bar}'
    assert interpolate(text, CTX) == text


def test_missing_configuration_is_refused_not_passed_through() -> None:
    with pytest.raises(InterpolationError, match=r"configuration has no value at '/missing'"):
        interpolate("--x '{configuration:/missing}'", CTX)


def test_unknown_key_in_a_known_namespace_is_refused() -> None:
    with pytest.raises(InterpolationError, match=r"com.example.C: unknown recipe variable \{work:home\}"):
        interpolate("{work:home}", CTX)


def test_maps_cannot_be_interpolated() -> None:
    with pytest.raises(UnsupportedRecipeError, match=r"\{configuration:/model\} is a dict"):
        interpolate("{configuration:/model}", CTX)


def test_cross_component_variables_are_refused() -> None:
    with pytest.raises(
        UnsupportedRecipeError, match=r"cross-component variable \{com.example.M:artifacts:path\}"
    ):
        interpolate("cp {com.example.M:artifacts:path}/model.onnx .", CTX)


def test_pointer_must_be_absolute() -> None:
    with pytest.raises(InterpolationError, match="must start with '/'"):
        resolve_pointer({"a": 1}, "a")


def test_interpolate_configuration_resolves_nested_strings_only() -> None:
    config = {"topics": ["edge/{iot:thingName}/x"], "n": 3, "acl": {"r": "edge/{iot:thingName}/health"}}
    assert interpolate_configuration(config, CTX) == {
        "topics": ["edge/gw-07/x"],
        "n": 3,
        "acl": {"r": "edge/gw-07/health"},
    }
    with pytest.raises(UnsupportedRecipeError, match="refers to configuration"):
        interpolate_configuration({"a": "{configuration:/topic}"}, CTX)
