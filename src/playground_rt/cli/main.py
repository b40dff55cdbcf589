"""``playground-rt serve | worker | run | models | bench``."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import msgspec

from playground_rt import config
from playground_rt.commands.catalog import CatalogError
from playground_rt.pipeline import model_files

SERVE_FLAGS: tuple[tuple[str, type, str], ...] = (
    ("host", str, "interface to bind"),
    ("port", int, "port to bind (0 = any free one)"),
    ("data_root", Path, "where image_path resolves"),
    ("outputs_root", Path, "where results and checkpoints live"),
    ("model_home", Path, "where rembg model files live (U2NET_HOME)"),
    ("workers", int, "executor threads (0 = cores // intra-op threads)"),
    ("intra_op_threads", int, "onnxruntime threads per run"),
    ("queue_size", int, "queued jobs before 429"),
    ("max_body_bytes", int, "request body limit"),
    ("max_image_bytes", int, "image byte limit"),
    ("max_pixels", int, "decoded pixel limit"),
    ("results_max_bytes", int, "bytes results may hold (0 = min(2 GiB, half the free disk))"),
    ("results_max_age_s", float, "seconds an unused result is kept (0 = no limit)"),
    ("http_header_timeout_s", float, "seconds a request head may take to arrive"),
    ("http_body_timeout_s", float, "seconds a request body may take after its head"),
    ("broker", str, "redis://host:port/db to fan the hub out through Redis"),
    ("execute", str, "where server jobs run: local (this process) or remote (workers)"),
    ("token", str, "require this bearer token on the API and sockets"),
    ("commands_catalog", Path, "a TOML file of extra CLI commands"),
    ("ws_impl", str, "uvicorn WebSocket implementation"),
    ("log_level", str, "debug, info, warning or error"),
)


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = sub.add_parser("serve", help="run the server (uvicorn)")
    for name, kind, text in SERVE_FLAGS:
        serve.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, help=text)
    serve.add_argument(
        "--allowed-origins",
        dest="allowed_origins",
        help="comma-separated origins allowed to connect",
    )
    serve.add_argument(
        "--allowed-host",
        dest="allowed_hosts",
        action="append",
        help="a Host name the server answers (repeat, or comma-separate; '*' = any); "
        "default: localhost, 127.0.0.1, ::1 and the bound host",
    )
    serve.add_argument(
        "--no-pull",
        dest="pull_models",
        action="store_false",
        default=None,
        help="don't fetch missing models at start-up",
    )


WORKER_FLAGS: tuple[tuple[str, type, str], ...] = (
    ("broker", str, "redis://host:port/db the web nodes use (required)"),
    ("outputs_root", Path, "the outputs folder the web nodes serve results from (shared)"),
    ("model_home", Path, "where rembg model files live (U2NET_HOME)"),
    ("workers", int, "threads taking jobs (0 = cores // intra-op threads)"),
    ("intra_op_threads", int, "onnxruntime threads per run"),
    ("job_timeout_s", float, "time budget of one job"),
    ("claim_idle_s", float, "a job whose worker renewed nothing for this long is taken over"),
    ("max_deliveries", int, "hand-outs of one job before it goes to the dead-letter stream"),
    ("max_image_bytes", int, "image byte limit"),
    ("max_pixels", int, "decoded pixel limit"),
    ("shutdown_grace_s", float, "on SIGTERM, how long running jobs may finish"),
    ("log_level", str, "debug, info, warning or error"),
)


def _add_worker(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    worker = sub.add_parser("worker", help="run server jobs taken from Redis (no HTTP)")
    for name, kind, text in WORKER_FLAGS:
        worker.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, help=text)
    worker.add_argument("--name", help="this worker's name in the group (default host-pid)")
    worker.add_argument(
        "--preload-models", dest="preload_models", help="comma-separated models to load"
    )
    worker.add_argument(
        "--require-gpu",
        dest="require_gpu",
        action="store_true",
        default=None,
        help="refuse to start unless the models run on onnxruntime's CUDA provider",
    )
    worker.add_argument(
        "--no-pull",
        dest="pull_models",
        action="store_false",
        default=None,
        help="don't fetch missing models at start-up",
    )


def _add_models(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    models = sub.add_parser("models", help="fetch or list ONNX models")
    verbs = models.add_subparsers(dest="verb", required=True)
    pull = verbs.add_parser(
        "pull", help="put a model where rembg finds it (offline-capable for u2netp)"
    )
    pull.add_argument("--model", default="u2netp")
    pull.add_argument("--model-home", type=Path, default=None)
    listing = verbs.add_parser("list", help="the rembg models and whether their files are present")
    listing.add_argument("--model-home", type=Path, default=None)


def _add_bench(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench = sub.add_parser("bench", help="run the benchmarks in bench/ (see README)")
    # The benchmarks' names have one home, bench/main.py (MODULES), which checks them.
    bench.add_argument(
        "which",
        nargs="?",
        default="all",
        help="pipeline, hub, browser, sweep, cluster, retention, budgets, compose or all (default)",
    )
    bench.add_argument("--quick", action="store_true", help="fewer iterations, for a smoke run")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="playground-rt", description=__doc__)
    sub = root.add_subparsers(dest="command", required=True)
    _add_serve(sub)
    _add_worker(sub)
    from playground_rt.cli import run as runner

    runner.add_arguments(sub.add_parser("run", help="run a pipeline on an image or a folder"))
    _add_models(sub)
    _add_bench(sub)
    return root


def serve_settings(args: argparse.Namespace) -> config.Settings:
    """Settings from ``serve``'s flags over the environment (comma-separated lists)."""
    overrides = {name: getattr(args, name) for name, _, _ in SERVE_FLAGS}
    overrides["pull_models"] = args.pull_models
    if args.allowed_origins is not None:
        overrides["allowed_origins"] = _words(args.allowed_origins)
    if args.allowed_hosts is not None:
        overrides["allowed_hosts"] = [h for given in args.allowed_hosts for h in _words(given)]
    return config.from_env(os.environ, **overrides)


def worker_settings(args: argparse.Namespace) -> config.Settings:
    """Settings from ``worker``'s flags over the environment."""
    overrides = {name: getattr(args, name) for name, _, _ in WORKER_FLAGS}
    overrides["pull_models"] = args.pull_models
    overrides["require_gpu"] = args.require_gpu
    if args.preload_models is not None:
        overrides["preload_models"] = _words(args.preload_models)
    return config.from_env(os.environ, **overrides)


def _words(text: str) -> list[str]:
    return [word.strip() for word in text.split(",") if word.strip()]


def serve(args: argparse.Namespace) -> int:
    from playground_rt.web import serving
    from playground_rt.web.app import create_app

    settings = serve_settings(args)
    if settings.execute == "remote" and not settings.broker:
        print("playground-rt serve: execute=remote needs PLAYGROUND_BROKER", file=sys.stderr)  # noqa: T201
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s"
    )
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl+C, as uvicorn.run does
        serving.Server(serving.config(settings, create_app(settings))).run()
    return 0


def worker(args: argparse.Namespace) -> int:
    from playground_rt.jobs.cluster import worker as cluster_worker

    settings = worker_settings(args)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s"
    )
    if not settings.broker:
        print("playground-rt worker: set PLAYGROUND_BROKER or --broker", file=sys.stderr)  # noqa: T201
        return 2
    return cluster_worker.main(settings, args.name)


def models(args: argparse.Namespace) -> int:
    settings = config.from_env(os.environ, model_home=args.model_home)
    if args.verb == "pull":
        path = model_files.pull(args.model, settings.model_home, log=print)
        print(f"{args.model}: {path}")  # noqa: T201
        return 0
    for name, present, path in model_files.list_models(settings.model_home):
        print(f"{'✓' if present else '·'} {name:28} {path}")  # noqa: T201
    return 0


def bench(args: argparse.Namespace) -> int:
    import importlib

    root = Path(__file__).resolve().parents[3]
    if not (root / "bench").is_dir():
        print("bench/ ships with the source checkout only", file=sys.stderr)  # noqa: T201
        return 2
    sys.path.insert(0, str(root))
    bench_main = importlib.import_module("bench.main")
    status: int = bench_main.main([args.which, *(["--quick"] if args.quick else [])])
    return status


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "serve":
            return serve(args)
        if args.command == "worker":
            return worker(args)
        if args.command == "run":
            from playground_rt.cli import run as runner

            return runner.run(args)
        if args.command == "models":
            return models(args)
        return bench(args)
    except msgspec.ValidationError as exc:
        print(f"playground-rt: bad setting: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    except CatalogError as exc:
        print(f"playground-rt: bad command catalog: {exc}", file=sys.stderr)  # noqa: T201
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
