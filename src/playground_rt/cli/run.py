"""``playground-rt run``: a pipeline over an image or a folder, in process, as the server runs it.

A run takes the path of a server job step for step: the file's bytes are hashed (sha256)
and decoded with ``images.decode`` under the settings' limits, the plan's ops run in order
(``registry.apply``), ``images.encode_png`` encodes, and ``ResultStore.write`` places the
file at ``{out}/playground/{pipeline_id}/{job_id}.png``, ``job_id`` being
``pipeline_id + "-" + registry.digest(plan, image sha256, checkpoint sha256)``. So it writes
the bytes the server writes for the same request, under the same cache key, and a result
either of them wrote before is reused (``cached``) instead of computed again.

Paths on the command line are the user's own (any local file, relative to the current
directory): the server's roots confine requests, not this tool. The commands the page builds
name files relative to the server's working directory (``data/...``), so they run from there.

``--params`` is the pipeline's ``params`` object as JSON, as in a request; the page writes the
canonical params (see ``commands``). ``--checkpoint`` is used only by pipelines that run a
model, as on the server. Settings come from ``PLAYGROUND_*`` variables (``config.from_env``);
the flags override them.

Output: the result paths on stdout, one a line, in input order (failures left out); progress
and, for a folder, a summary (done, cached, failed with reasons) on stderr. Exit status: 0
when nothing failed, 1 when an image failed, 2 for unusable arguments.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import msgspec
from rich.console import Console, Group
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from playground_rt import config, errors
from playground_rt.pipeline import images, registry
from playground_rt.pipeline.ops.base import OpContext, SessionProvider
from playground_rt.pipeline.results import ResultStore
from playground_rt.pipeline.sessions import ModelRegistry
from playground_rt.web.datasets import SUFFIXES

__all__ = ["Recipe", "Result", "add_arguments", "main", "process", "run"]

log = logging.getLogger("playground_rt.cli.run")

Outcome = Literal["done", "cached", "failed"]
DESCRIPTION = "Run a pipeline in process on an image or a folder, writing the server's bytes."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``playground-rt run`` (the ``run`` subparser of ``cli``)."""
    parser.add_argument("--pipeline", required=True, choices=sorted(registry.PIPELINES))
    parser.add_argument(
        "--image", required=True, type=Path, help="an image, or a folder of images (recursive)"
    )
    parser.add_argument("--params", default="{}", help="the pipeline's params as JSON")
    parser.add_argument("--checkpoint", type=Path, help="a custom .onnx for the rembg op")
    parser.add_argument(
        "--out", type=Path, help="outputs root (default: PLAYGROUND_OUTPUTS_ROOT or outputs)"
    )
    parser.add_argument("--workers", type=int, help="threads for a folder (default: as serve)")
    parser.add_argument("--model-home", type=Path, help="rembg's .onnx files (default ~/.u2net)")


@dataclass(frozen=True)
class Recipe:
    """What every image of a run shares; :func:`process` is safe to call from many threads."""

    plan: registry.Plan
    checkpoint: Path | None
    checkpoint_sha256: str
    limits: images.Limits
    store: ResultStore
    models: SessionProvider
    threads: int = 1
    """Threads for one image's model run, per-pixel passes and deflate: the workers' cores
    (``Settings.job_threads``) when the run takes one image at a time, as the server gives a
    job alone in its pool; else one. The bytes do not depend on it."""


@dataclass(frozen=True)
class Result:
    source: Path
    outcome: Outcome
    path: Path | None = None
    detail: str | None = None


def process(recipe: Recipe, source: Path) -> Result:
    """One image: ``cached`` if its result exists, else computed and written (``done``);
    ``failed`` with the reason the server would give. Never raises."""
    try:
        return _process(recipe, source)
    except errors.PlaygroundError as exc:
        return Result(source, "failed", detail=exc.detail)
    except Exception as exc:  # the task boundary: one bad image never stops the others
        log.exception("%s failed", source)
        return Result(source, "failed", detail=f"{type(exc).__name__}: {exc}")


def _process(recipe: Recipe, source: Path) -> Result:
    data = _read(source, recipe.limits)
    plan, pid = recipe.plan, recipe.plan.pipeline.id
    image_key = hashlib.sha256(data).hexdigest()
    digest = registry.digest(plan, image_key, recipe.checkpoint_sha256)
    job_id = registry.job_id(pid, digest)
    if (found := recipe.store.lookup(pid, job_id)) is not None:
        return Result(source, "cached", found)
    image = images.decode(data, recipe.limits)
    ctx = OpContext(
        models=recipe.models,
        checkpoint=recipe.checkpoint,
        image_key=image_key,
        threads=recipe.threads,
    )
    output = registry.apply(plan.steps, image, ctx)
    data = images.encode_png(output, recipe.threads)
    return Result(source, "done", recipe.store.write(pid, job_id, data))


def _read(source: Path, limits: images.Limits) -> bytes:
    try:
        size = source.stat().st_size
        if size > limits.max_image_bytes:
            raise errors.TooLarge(f"{size} bytes; max_image_bytes={limits.max_image_bytes}")
        return source.read_bytes()
    except OSError as exc:
        raise errors.NotFound(f"cannot read it: {exc.strerror}") from None


# --- setting up ------------------------------------------------------------------------------


def prepare(args: argparse.Namespace, settings: config.Settings, alone: bool = False) -> Recipe:
    """Validate the arguments and load the model (``PlaygroundError`` when unusable);
    ``alone``: images run one at a time, each on every core."""
    plan = registry.get_pipeline(args.pipeline).plan(
        registry.params_from_json(args.params, "--params")
    )
    checkpoint: Path | None = args.checkpoint if plan.uses_checkpoint else None
    custom_root = checkpoint.resolve().parent if checkpoint else settings.outputs_root
    threads = settings.job_threads(alone)
    models = ModelRegistry(
        settings.model_home,
        custom_root,
        settings.intra_op_threads,
        wide_threads=threads if threads > 1 else 0,
    )
    digest = ""
    if checkpoint is not None:
        models.custom(checkpoint)  # refuses PyTorch files, missing or unloadable ones
        digest = registry.file_sha256(checkpoint)
        checkpoint = checkpoint.resolve()
    elif plan.uses_model:
        for step in plan.steps:
            if isinstance(model := getattr(step.params, "model", None), str):
                models.session(model, wide=threads > 1)  # a missing model fails here
    limits = images.Limits(settings.max_image_bytes, settings.max_pixels)
    store = ResultStore(settings.results_root)
    return Recipe(plan, checkpoint, digest, limits, store, models, threads)


def inputs(target: Path, results_root: Path) -> list[Path]:
    """``target`` itself, or the images under the folder ``target`` (sorted), leaving out
    the results folder so that a second run does not take its own outputs as inputs."""
    if not target.is_dir():
        return [target]
    skip = results_root.resolve()
    return sorted(
        path
        for path in target.rglob("*")
        if path.suffix.lower() in SUFFIXES
        and path.is_file()
        and not path.resolve().is_relative_to(skip)
    )


# --- running ---------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    """``playground-rt run``: the exit status (see the module docstring)."""
    err = Console(stderr=True, highlight=False)
    try:
        settings = config.from_env(
            os.environ, outputs_root=args.out, model_home=args.model_home, workers=args.workers
        )
        if not args.image.exists():
            raise errors.NotFound(f"--image {args.image}: no such file or folder")
        sources = inputs(args.image, settings.results_root)
        if not sources:
            raise errors.NotFound(f"no images ({', '.join(sorted(SUFFIXES))}) under {args.image}")
        pool = min(settings.worker_count, len(sources))
        recipe = prepare(args, settings, alone=pool == 1)
    except (errors.PlaygroundError, msgspec.ValidationError) as exc:
        err.print(Text(f"error: {getattr(exc, 'detail', exc)}", style="red"))
        return 2
    if args.checkpoint is not None and recipe.checkpoint is None:
        err.print(f"note: --checkpoint is not used by pipeline {args.pipeline!r}; ignored")
    results = _run_all(recipe, sources, pool, err, args.image.is_dir())
    for result in results:
        if result.path is not None:
            sys.stdout.write(f"{result.path}\n")
    sys.stdout.flush()
    if args.image.is_dir():
        err.print(summary(results))
    elif results[0].outcome == "failed":
        err.print(Text(f"failed: {results[0].source}: {results[0].detail}", style="red"))
    return 1 if any(r.outcome == "failed" for r in results) else 0


def _run_all(
    recipe: Recipe, sources: list[Path], workers: int, err: Console, show_progress: bool
) -> list[Result]:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    progress = Progress(*columns, console=err, disable=not show_progress)
    with progress, ThreadPoolExecutor(workers) as pool:
        task = progress.add_task(recipe.plan.pipeline.id, total=len(sources))
        futures = {
            pool.submit(process, recipe, source): index for index, source in enumerate(sources)
        }
        results: list[Result | None] = [None] * len(sources)
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            progress.advance(task)
    return [r for r in results if r is not None]


def summary(results: list[Result]) -> Group:
    """The end-of-run tables: how many images were done, cached and failed; why each failed."""
    counts = Table(title="playground-rt run")
    counts.add_column("result")
    counts.add_column("images", justify="right")
    for outcome in ("done", "cached", "failed"):
        counts.add_row(outcome, str(sum(r.outcome == outcome for r in results)))
    failed = [r for r in results if r.outcome == "failed"]
    if not failed:
        return Group(counts)
    reasons = Table(title="failed")
    reasons.add_column("image", overflow="fold")
    reasons.add_column("reason", overflow="fold")
    for result in failed:
        reasons.add_row(str(result.source), result.detail or "")
    return Group(counts, reasons)


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``python -m playground_rt.cli.run`` (the same as ``playground-rt run``)."""
    parser = argparse.ArgumentParser(prog="playground-rt run", description=DESCRIPTION)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
