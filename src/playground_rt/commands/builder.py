"""The command catalog, and the builder behind ``POST /api/commands/build``.

A catalog is a TOML file of ``[[commands]]`` tables: ``id`` (what the page asks for, e.g.
``"train"``), ``program`` (shell words: ``"python train.py"``), an optional ``subcommand``, a
``summary`` and ``[[commands.options]]``, each with ``name`` (the key in ``values``),
``flag``, ``type`` (``str``, ``int``, ``float``, ``bool``, ``path`` or ``choice``),
``default``, ``choices``, ``required``, ``help``, ``min``/``max`` for numbers, ``root``
(``"data"`` or ``"outputs"``) for a path relative to that settings root, and ``false_flag``
for a bool whose default is true. The built-in catalog (``catalog/playground.toml``) loads
first, then the user's (``Settings.commands_catalog``); a bad file raises
:class:`CatalogError` naming the file and the key, at start-up.

Building is pure and cheap (the only disk access is one ``stat`` per rooted path, inside
its root), so the page calls it on every keystroke:

* each value is validated against its option; ``errors.InvalidParams`` names it
  (``values.epochs: expected int >= 1, got 'abc'``); ``""`` or ``null`` means unset;
* a rooted path is written as the server resolves it (``datasets/x.jpg`` and
  ``data/datasets/x.jpg`` both become ``data/datasets/x.jpg`` with the default data root),
  with a warning when it is missing or lies outside its root;
* options equal to their default are left out; the others follow the catalog's order, so
  the string changes only when a value does;
* a true bool is a bare flag; a value starting with ``-`` is passed as ``--flag=value``,
  so it cannot be read as another option;
* ``command`` is ``shlex.join(argv)``: every value stays one literal shell word, and
  ``shlex.split(command) == argv``.

Reproducing a preview (``preview`` in the request; ``playground-rt run`` only). The preview
is validated as the server validates it (``$.params...`` paths, roots), and the command is::

    playground-rt run --pipeline ID --image PATH [--params JSON] [--checkpoint PATH]

``--params`` carries the plan's *canonical params* (``registry.CANONICAL_FORM``: enabled ops
with every default filled in, routing keys left out, keys sorted, no spaces), so the command
keeps reproducing the preview if a default changes later, and it is the very text the cache
key hashes: the run computes the server's job id and writes the server's bytes. It is left
out when the params are the pipeline's defaults. A float with more than six decimals (which
the canonical text rounds) makes it carry the exact values instead, with a warning. The
checkpoint is written only for pipelines that run a model. An uploaded image has no path:
``IMAGE.png`` stands in for it, with a warning.
"""

from __future__ import annotations

import functools
import os
import shlex
from pathlib import Path
from typing import Any

from playground_rt import errors, schemas
from playground_rt.commands import catalog as commandspec
from playground_rt.commands.catalog import CatalogError, Command, CommandSpec, Root, Value
from playground_rt.paths import relative_parts
from playground_rt.pipeline import registry
from playground_rt.pipeline.sessions import check_checkpoint_name

__all__ = ["BUILTIN_CATALOG", "RUN_COMMAND", "UPLOADED_IMAGE", "Catalog", "CatalogError"]

BUILTIN_CATALOG = Path(__file__).with_name("playground.toml")
RUN_COMMAND = "playground-rt run"
UPLOADED_IMAGE = "IMAGE.png"
_PREVIEW_OPTIONS = ("pipeline", "image", "params", "checkpoint")


class Catalog:
    """The commands the page can build, by id; immutable once loaded."""

    def __init__(self, commands: list[Command], roots: dict[Root, Path]) -> None:
        self.commands = {c.spec.id: c for c in commands}
        self.roots = roots
        self._described = schemas.CommandList([_info(c.spec) for c in commands])

    @classmethod
    def load(
        cls,
        path: Path | None,
        *,
        data_root: Path = Path("data"),
        outputs_root: Path = Path("outputs"),
    ) -> Catalog:
        """The built-in catalog, then the user's TOML at ``path``; ``CatalogError`` if bad.

        ``data_root`` and ``outputs_root`` are the settings' roots that ``root`` options
        (and a preview's paths) are relative to.
        """
        sources = [BUILTIN_CATALOG] if path is None else [BUILTIN_CATALOG, path]
        commands: list[Command] = []
        seen: dict[str, Path] = {}
        for source in sources:
            for command in commandspec.read(source):
                if (first := seen.get(command.spec.id)) is not None:
                    raise CatalogError(
                        f"{source}: command {command.spec.id!r} is already defined in {first}"
                    )
                seen[command.spec.id] = source
                commands.append(command)
        return cls(commands, {"data": data_root, "outputs": outputs_root})

    def describe(self) -> schemas.CommandList:
        return self._described

    def build(self, request: schemas.CommandBuildRequest) -> schemas.CommandBuildResponse:
        """The argv and shell string for ``request`` (see the module docstring).

        Raises ``errors.NotFound`` for an unknown command, ``errors.InvalidParams`` naming
        the value (or the preview's field) that is wrong, ``errors.PathOutsideRoot`` for a
        preview path the server would refuse.
        """
        command = self.commands.get(request.command)
        if command is None:
            known = ", ".join(repr(c) for c in self.commands)
            raise errors.NotFound(f"unknown command {request.command!r}; known: {known}")
        warnings: list[str] = []
        if request.preview is not None:
            typed = self._preview_values(command, request.preview, request.values, warnings)
        else:
            typed = self._validated(command, request.values, warnings)
            if command.spec.id == RUN_COMMAND:
                _normalise_run(typed, warnings)
        argv = [*command.prefix]
        for option in command.spec.options:
            if option.name in typed:
                default_true = command.defaults.get(option.name) is True
                argv += commandspec.render(option, typed[option.name], default_true, warnings)
        return schemas.CommandBuildResponse(command=shlex.join(argv), argv=argv, warnings=warnings)

    # --- values ----------------------------------------------------------------------------

    def _validated(
        self,
        command: Command,
        values: dict[str, Any],
        warnings: list[str],
        preset: dict[str, Value] | None = None,
    ) -> dict[str, Value]:
        """The set values, typed, defaults dropped; ``preset`` ones are taken as they are."""
        for name in values:
            if name not in command.options:
                known = ", ".join(command.options)
                raise errors.InvalidParams(
                    f"values.{name}: not an option of {command.spec.id!r}; known: {known}"
                )
        typed: dict[str, Value] = {}
        for option in command.spec.options:
            if preset is not None and option.name in preset:
                typed[option.name] = preset[option.name]
                continue
            raw = values.get(option.name)
            if raw is None or raw == "":
                if option.required:
                    raise errors.InvalidParams(f"values.{option.name}: required")
                continue
            value = commandspec.coerce(option, raw, f"values.{option.name}")
            if value == command.defaults.get(option.name):
                continue
            if option.root is not None and isinstance(value, str):
                value = self._rooted(option.root, value, f"values.{option.name}", warnings)
            typed[option.name] = value
        return typed

    def _rooted(self, root: Root, given: str, where: str, warnings: list[str]) -> str:
        """``given`` as the server resolves it under ``root``; warns if missing or outside."""
        under = self._under(root, given)
        if under is None:
            warnings.append(
                f"{where}: {given!r} is outside the {root} root; the server cannot read it"
            )
            return given
        if not os.path.exists(under):  # Path.exists raises on ENAMETOOLONG (3.11)
            warnings.append(f"{where}: {str(under)!r} does not exist under the {root} root")
        return str(under)

    def _under(self, root: Root, given: str) -> Path | None:
        """Lexically, where the server looks for ``given`` (``paths.confine``'s rules)."""
        parts = relative_parts(self.roots[root], given)
        return None if parts is None else self.roots[root].joinpath(*parts)

    # --- previews --------------------------------------------------------------------------

    def _preview_values(
        self,
        command: Command,
        preview: schemas.PipelineRequest,
        values: dict[str, Any],
        warnings: list[str],
    ) -> dict[str, Value]:
        if command.spec.id != RUN_COMMAND:
            raise errors.InvalidParams(
                f"preview: only {RUN_COMMAND!r} reproduces a preview, not {command.spec.id!r}"
            )
        for name in _PREVIEW_OPTIONS:
            if values.get(name) not in (None, ""):
                raise errors.InvalidParams(f"values.{name}: set by the preview; leave it out")
        pipeline = registry.get_pipeline(preview.pipeline_id)
        plan = pipeline.plan(preview.params)
        preset: dict[str, Value] = {
            "pipeline": pipeline.id,
            "image": self._preview_image(preview, warnings),
        }
        if (params := params_text(plan, warnings)) is not None:
            preset["params"] = params
        checkpoint = self._preview_checkpoint(preview.checkpoint_path, plan, warnings)
        if checkpoint is not None:
            preset["checkpoint"] = checkpoint
        return self._validated(command, values, warnings, preset)

    def _preview_image(self, preview: schemas.PipelineRequest, warnings: list[str]) -> str:
        if preview.image_base64 is not None:
            warnings.append(
                f"the preview's image was uploaded; save it and pass its path "
                f"({UPLOADED_IMAGE} stands in for it)"
            )
            return UPLOADED_IMAGE
        if preview.image_path is None:
            raise errors.InvalidParams("preview: one of image_base64 and image_path is required")
        return self._preview_path("data", preview.image_path, "preview.image_path", warnings)

    def _preview_checkpoint(
        self, given: str | None, plan: registry.Plan, warnings: list[str]
    ) -> str | None:
        if given is None:
            return None
        if not plan.uses_checkpoint:
            warnings.append(
                f"preview.checkpoint_path is not used by pipeline {plan.pipeline.id!r}; left out"
            )
            return None
        check_checkpoint_name(given, "preview.checkpoint_path")
        return self._preview_path("outputs", given, "preview.checkpoint_path", warnings)

    def _preview_path(self, root: Root, given: str, where: str, warnings: list[str]) -> str:
        if self._under(root, given) is None:
            raise errors.PathOutsideRoot(
                f"{where} must be relative to the {root} root and free of '..', got {given!r}"
            )
        return self._rooted(root, given, where, warnings)


# --- the run command's params ---------------------------------------------------------------


def params_text(plan: registry.Plan, warnings: list[str]) -> str | None:
    """The ``--params`` text reproducing ``plan``; ``None`` when it is the defaults' plan."""
    if plan.steps == _default_plan(plan.pipeline.id).steps:
        return None
    return plan.canonical


@functools.cache
def _default_plan(pipeline_id: str) -> registry.Plan:
    return registry.get_pipeline(pipeline_id).plan({})


def _normalise_run(typed: dict[str, Value], warnings: list[str]) -> None:
    """Check ``params`` against the pipeline and rewrite it as ``params_text`` does."""
    raw = typed.pop("params", None)
    if raw is None:
        return
    assert isinstance(raw, str)
    params = registry.params_from_json(raw, "values.params")
    pipeline_id = typed.get("pipeline")
    assert isinstance(pipeline_id, str)  # required: _validated checked it
    try:
        plan = registry.get_pipeline(pipeline_id).plan(params)
    except errors.InvalidParams as exc:
        raise errors.InvalidParams(f"values.params: {exc.detail}") from None
    text = params_text(plan, warnings)
    if text is not None:
        typed["params"] = text


def _info(spec: CommandSpec) -> schemas.CommandInfo:
    return schemas.CommandInfo(
        id=spec.id,
        program=spec.program,
        subcommand=spec.subcommand,
        summary=spec.summary,
        options=[
            schemas.CommandOptionInfo(
                name=o.name,
                flag=o.flag,
                type=o.type,
                help=o.help,
                default=o.default,
                choices=o.choices,
                required=o.required,
                min=o.min,
                max=o.max,
                root=o.root,
                false_flag=o.false_flag,
            )
            for o in spec.options
        ],
    )
