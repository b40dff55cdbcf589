"""What a command catalog file holds, and how one option types and renders a value.

The TOML form is described in ``commands``; here it is decoded into Structs and checked
(:func:`read` raises :class:`CatalogError` naming the file and the key), a form value is
typed against its option (:func:`coerce`, ``errors.InvalidParams`` naming the value) and
turned into argv words (:func:`render`).
"""

from __future__ import annotations

import math
import re
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from playground_rt import errors

__all__ = [
    "CatalogError",
    "Command",
    "CommandSpec",
    "OptionSpec",
    "Root",
    "Value",
    "coerce",
    "read",
    "render",
]

OptionType = Literal["str", "int", "float", "bool", "path", "choice"]
Root = Literal["data", "outputs"]
Value = str | int | float | bool
Flag = Annotated[str, msgspec.Meta(pattern=r"^--?[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]

_INT = re.compile(r"[+-]?[0-9]+")
_BOOL_TEXT = {"true": True, "false": False}
_FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


class CatalogError(ValueError):
    """A catalog file that cannot be used; the message names the file and the key."""


class OptionSpec(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """One option of a catalog command."""

    name: Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
    flag: Flag
    type: OptionType = "str"
    help: str = ""
    default: str | int | float | bool | None = None
    choices: list[str] | None = None
    required: bool = False
    min: float | None = None
    max: float | None = None
    root: Root | None = None
    false_flag: Flag | None = None


class CommandSpec(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """One command of a catalog."""

    id: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    program: Annotated[str, msgspec.Meta(min_length=1)]
    subcommand: str | None = None
    summary: str = ""
    options: list[OptionSpec] = msgspec.field(default_factory=list)


class CatalogFile(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    commands: list[CommandSpec] = msgspec.field(default_factory=list)


@dataclass(frozen=True)
class Command:
    spec: CommandSpec
    prefix: tuple[str, ...]
    """``program`` split into words, then the subcommand."""
    options: dict[str, OptionSpec]
    defaults: dict[str, Value]
    """The options' defaults, coerced to their types."""


# --- one option --------------------------------------------------------------------------


def coerce(option: OptionSpec, raw: object, where: str) -> Value:
    """``raw`` (form JSON, often text) as the option's type; ``InvalidParams`` names ``where``."""
    value: Value | None
    if option.type in ("int", "float"):
        value = _number(raw, option.type)
        if value is not None and not _in_range(option, value):
            value = None
    elif option.type == "bool":
        value = raw if isinstance(raw, bool) else _BOOL_TEXT.get(str(raw).lower())
    elif not isinstance(raw, str):
        value = None
    elif "\x00" in raw:
        raise errors.InvalidParams(f"{where}: NUL bytes cannot be passed in a command")
    else:
        value = raw if option.type != "choice" or raw in (option.choices or ()) else None
    if value is None:
        raise errors.InvalidParams(f"{where}: expected {_expected(option)}, got {raw!r}")
    return value


def _number(raw: object, kind: str) -> int | float | None:
    value = raw
    if isinstance(raw, str):
        text = raw.strip()
        if _INT.fullmatch(text):
            value = int(text)
        elif kind == "float" and _FLOAT.fullmatch(text):
            value = float(text)
        else:
            return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if kind == "float":
        return float(value)
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    return value


def _in_range(option: OptionSpec, value: float) -> bool:
    return (option.min is None or value >= option.min) and (
        option.max is None or value <= option.max
    )


def _expected(option: OptionSpec) -> str:
    if option.type == "choice":
        return "one of " + ", ".join(repr(c) for c in option.choices or ())
    text = {"str": "a string", "path": "a path", "bool": "true or false"}.get(
        option.type, option.type
    )
    bounds = [
        f"{op} {_plain(v)}" for op, v in ((">=", option.min), ("<=", option.max)) if v is not None
    ]
    return " ".join([text, " and ".join(bounds)]) if bounds else text


def _plain(number: float) -> str:
    return str(int(number)) if number.is_integer() else repr(number)


def render(option: OptionSpec, value: Value, default_true: bool, warnings: list[str]) -> list[str]:
    """The argv words of a set value: a bare flag for a true bool, ``--flag=value`` for a
    value starting with ``-`` (with a warning unless it is a number), else flag and value."""
    if isinstance(value, bool):
        if value:
            return [option.flag]
        return [option.false_flag] if default_true and option.false_flag else []
    text = repr(value) if isinstance(value, float) else str(value)
    if not text.startswith("-"):
        return [option.flag, text]
    if not option.flag.startswith("--"):
        raise errors.InvalidParams(
            f"values.{option.name}: {text!r} starts with '-', which the short flag "
            f"{option.flag} cannot take safely"
        )
    if option.type not in ("int", "float"):
        warnings.append(
            f"values.{option.name}: {text!r} starts with '-'; passed as {option.flag}=... "
            "so it is not read as an option"
        )
    return [f"{option.flag}={text}"]


# --- loading -------------------------------------------------------------------------------


def read(path: Path) -> list[Command]:
    """The commands of the catalog file at ``path``, checked; ``CatalogError`` otherwise."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CatalogError(f"{path}: cannot read the catalog: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CatalogError(f"{path}: not valid TOML: {exc}") from None
    try:
        catalog = msgspec.convert(raw, CatalogFile)
    except msgspec.ValidationError as exc:
        message, _, at = str(exc).rpartition(" - at `$")
        key = at.rstrip("`").lstrip(".") if message else "(top level)"
        raise CatalogError(f"{path}: {key}: {message or exc}") from None
    return [_command(spec, f"{path}: commands[{i}]") for i, spec in enumerate(catalog.commands)]


def _command(spec: CommandSpec, where: str) -> Command:
    try:
        words = shlex.split(spec.program)
    except ValueError as exc:
        raise CatalogError(f"{where}.program: {exc}") from None
    if not words:
        raise CatalogError(f"{where}.program: empty")
    options: dict[str, OptionSpec] = {}
    flags: set[str] = set()
    defaults: dict[str, Value] = {}
    for index, option in enumerate(spec.options):
        at = f"{where}.options[{index}]"
        if option.name in options or option.flag in flags:
            raise CatalogError(f"{at}: option {option.name!r} or flag {option.flag} is repeated")
        default = _check_option(option, at)
        if default is not None:
            defaults[option.name] = default
        options[option.name] = option
        flags.add(option.flag)
    prefix = (*words, spec.subcommand) if spec.subcommand else tuple(words)
    return Command(spec, prefix, options, defaults)


def _check_option(option: OptionSpec, at: str) -> Value | None:
    """The option's coerced default; ``CatalogError`` for an inconsistent option."""
    numeric = option.type in ("int", "float")
    problems = (
        ("choices", (option.type == "choice") != bool(option.choices), "needed by choice only"),
        ("min", option.min is not None and not numeric, "only for int and float options"),
        ("max", option.max is not None and not numeric, "only for int and float options"),
        ("root", option.root is not None and option.type != "path", "only for path options"),
        ("false_flag", option.false_flag is not None and option.type != "bool", "bool only"),
        ("required", option.required and option.default is not None, "not with a default"),
    )
    for key, bad, why in problems:
        if bad:
            raise CatalogError(f"{at}.{key}: {why} (option {option.name!r})")
    if option.min is not None and option.max is not None and option.min > option.max:
        raise CatalogError(f"{at}.min: greater than max (option {option.name!r})")
    if option.default is None:
        return None
    try:
        default = coerce(option, option.default, f"{at}.default")
    except errors.InvalidParams as exc:
        raise CatalogError(exc.detail) from None
    if default is True and option.false_flag is None:
        raise CatalogError(f"{at}.false_flag: required for a bool whose default is true")
    return default
