"""Recipe variable interpolation, as the nucleus does it before running a lifecycle script.

Supported: ``{artifacts:path}``, ``{artifacts:decompressedPath}``, ``{work:path}``, ``{kernel:rootPath}``,
``{iot:thingName}`` and ``{configuration:/json/pointer}``. The patterns are the nucleus's own: text in
braces that does not look like ``{namespace:key}`` (a shell ``${VAR}``, a JSON literal) is left alone, as
the nucleus leaves it. A known namespace with an unknown key, a pointer to a missing value, and
references to *other* components' variables are refused instead of being passed through half-resolved.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import InterpolationError, UnsupportedRecipeError

# KernelConfigResolver's two patterns: same-component {ns:key} and cross-component {component:ns:key}.
_SAME = re.compile(r"\{(\w+):([.\w/~-]+)\}")
_CROSS = re.compile(r"\{([.\w-]+):(\w+):([.\w/~-]+)\}")
_NAMESPACES = frozenset({"artifacts", "configuration", "work", "kernel", "iot"})


@dataclass(frozen=True)
class RecipeContext:
    """Everything a variable can resolve to, for one component on one device."""

    component: str
    thing_name: str
    kernel_root: Path
    artifacts_path: Path
    decompressed_path: Path
    work_path: Path
    configuration: Mapping[str, object]


def resolve_pointer(configuration: Mapping[str, object], pointer: str) -> object:
    """RFC 6901 JSON pointer lookup (``/a/b``; ``~1`` is ``/`` and ``~0`` is ``~``)."""
    if not pointer.startswith("/"):
        raise InterpolationError(f"configuration pointer must start with '/': {pointer!r}")
    value: object = configuration
    for raw in pointer[1:].split("/"):
        key = raw.replace("~1", "/").replace("~0", "~")
        if not isinstance(value, Mapping) or key not in value:
            raise InterpolationError(f"configuration has no value at {pointer!r}")
        value = value[key]
    return value


def render_value(value: object, pointer: str) -> str:
    """How the nucleus prints a configuration value into a script: numbers as floats ("32.0")."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(float(value))
    if isinstance(value, str):
        return value
    # The nucleus prints maps and lists Java-style; no script of ours should depend on that rendering.
    raise UnsupportedRecipeError(
        f"{{configuration:{pointer}}} is a {type(value).__name__}; only strings, numbers and booleans "
        "can be interpolated by this runner"
    )


def _system_value(ctx: RecipeContext, namespace: str, key: str) -> str | None:
    table: dict[tuple[str, str], Path | str] = {
        ("artifacts", "path"): ctx.artifacts_path,
        ("artifacts", "decompressedPath"): ctx.decompressed_path,
        ("work", "path"): ctx.work_path,
        ("kernel", "rootPath"): ctx.kernel_root,
        ("iot", "thingName"): ctx.thing_name,
    }
    found = table.get((namespace, key))
    return None if found is None else str(found)


def _refuse_cross_component(text: str, ctx: RecipeContext) -> None:
    for match in _CROSS.finditer(text):
        if match.group(2) in _NAMESPACES:
            raise UnsupportedRecipeError(
                f"{ctx.component}: cross-component variable {match.group(0)} is not supported by the "
                "local device runner"
            )


def interpolate(text: str, ctx: RecipeContext) -> str:
    """Replace every recipe variable in ``text`` (a lifecycle script, a Skipif or Setenv value)."""
    _refuse_cross_component(text, ctx)

    def replace(match: re.Match[str]) -> str:
        namespace, key = match.group(1), match.group(2)
        if namespace not in _NAMESPACES:
            return match.group(0)
        if namespace == "configuration":
            return render_value(resolve_pointer(ctx.configuration, key), key)
        value = _system_value(ctx, namespace, key)
        if value is None:
            raise InterpolationError(f"{ctx.component}: unknown recipe variable {match.group(0)}")
        return value

    return _SAME.sub(replace, text)


def interpolate_configuration(value: object, ctx: RecipeContext) -> object:
    """``interpolateComponentConfiguration: true``: system variables inside configuration values.

    ``{configuration:...}`` inside configuration is refused: it would make the value depend on itself.
    """
    if isinstance(value, Mapping):
        return {str(k): interpolate_configuration(v, ctx) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate_configuration(v, ctx) for v in value]
    if isinstance(value, str):
        if any(m.group(1) == "configuration" for m in _SAME.finditer(value)):
            raise UnsupportedRecipeError(
                f"{ctx.component}: configuration value {value!r} refers to configuration; not supported"
            )
        return interpolate(value, ctx)
    return value
