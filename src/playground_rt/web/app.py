"""``create_app()``: the routes as data and the lifespan that owns every long-lived thing."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator
from importlib.metadata import version

import msgspec
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import BaseRoute, Mount, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from playground_rt import errors, schemas
from playground_rt.commands.builder import Catalog
from playground_rt.config import Settings
from playground_rt.hub.connection import Close
from playground_rt.hub.fanout import Hub
from playground_rt.hub.telemetry import Telemetry
from playground_rt.jobs.cluster.remote import RemoteJobs
from playground_rt.jobs.manager import JobManager
from playground_rt.jobs.retention import Retention
from playground_rt.pipeline import model_files
from playground_rt.pipeline.ops.background import CLIENT_MODELS
from playground_rt.pipeline.registry import (
    CACHE_FORMAT,
    CANONICAL_FORM,
    PIPELINES,
    PLACED_OPS,
    ROUTING_KEYS,
    Pipelines,
)
from playground_rt.pipeline.results import ResultStore
from playground_rt.pipeline.sessions import ModelRegistry
from playground_rt.web import openapi, rest, routes, withdrawals, ws
from playground_rt.web.datasets import Datasets
from playground_rt.web.hosts import HostPolicy
from playground_rt.web.resultfiles import ResultFiles
from playground_rt.web.state import AppState
from playground_rt.web.thumbnails import Thumbnails
from playground_rt.web.webassets import IsolationMiddleware, ModelFiles, RuntimeFiles

log = logging.getLogger("playground_rt")
VERSION = version("playground-rt")


def pipeline_list(pipelines: Pipelines) -> schemas.PipelineList:
    infos = [
        schemas.PipelineInfo(
            id=p.id,
            version=p.version,
            summary=p.summary,
            ops=[
                schemas.OpInfo(
                    name=name,
                    summary=p.table[name].summary,
                    client=p.table[name].client,
                    params_schema=msgspec.json.schema(p.table[name].params),
                    placed=not p.flat and name in PLACED_OPS,
                    client_models=list(CLIENT_MODELS) if name == "rembg" else [],
                )
                for name in p.ops
            ],
            params_schema=p.schema(),
            flat=p.flat,
            routing_keys=list(p.routing),
        )
        for p in pipelines.values()
    ]
    return schemas.PipelineList(infos, CANONICAL_FORM, page_constants(pipelines))


def page_constants(pipelines: Pipelines) -> schemas.PageConstants:
    """What the page would otherwise copy by hand, each read from where it is defined."""
    # A routing key named after a placed op ("rembg") places that op; the other one is the
    # switch every pipeline takes.
    switch = [key for key in ROUTING_KEYS if key not in PLACED_OPS]
    assert len(switch) == 1, f"one routing key must be the switch: {switch}"
    specs = {name: p.table[name] for p in pipelines.values() for name in p.ops}
    return schemas.PageConstants(
        cache_format=CACHE_FORMAT,
        route_switch=switch[0],
        odd_params={name: odd for name, spec in specs.items() if (odd := _odd_params(spec.params))},
        close_codes={code.name: code.value for code in Close},
    )


def _odd_params(params: type[msgspec.Struct]) -> list[str]:
    """The params of ``params`` that must be odd: marked ``extra={"odd": True}`` in their
    ``msgspec.Meta`` (JSON Schema cannot say "odd"; the Struct checks it itself)."""
    info = msgspec.inspect.type_info(params)
    assert isinstance(info, msgspec.inspect.StructType)
    return [
        field.encode_name
        for field in info.fields
        if isinstance(field.type, msgspec.inspect.Metadata)
        and (field.type.extra or {}).get("odd") is True
    ]


def build_state(settings: Settings, pipelines: Pipelines = PIPELINES) -> AppState:
    store = ResultStore(settings.results_root)
    retention = Retention(
        settings.results_root, settings.results_max_bytes, settings.results_max_age_s
    )
    models = ModelRegistry(
        settings.model_home,
        settings.outputs_root,
        settings.intra_op_threads,
        wide_threads=settings.wide_threads,
    )
    if settings.execute == "remote":
        remote = RemoteJobs(settings, store, models, retention)
        jobs: JobManager = remote
        telemetry = Telemetry(
            remote.executor.stats,
            cluster=lambda: remote.figures.workers,
            results=retention.figures,
        )
    else:
        jobs = JobManager(settings, store, models, retention, pipelines)
        telemetry = Telemetry(jobs.executor.stats, results=retention.figures)
    hub = Hub(
        settings,
        telemetry,
        feed=jobs.feed if isinstance(jobs, RemoteJobs) else None,
        withdraw=functools.partial(withdrawals.relayed, jobs),
    )
    return AppState(
        settings=settings,
        store=store,
        retention=retention,
        models=models,
        jobs=jobs,
        telemetry=telemetry,
        hub=hub,
        commands=Catalog.load(
            settings.commands_catalog,
            data_root=settings.data_root,
            outputs_root=settings.outputs_root,
        ),
        datasets=Datasets(settings.data_root),
        thumbnails=Thumbnails(
            settings.outputs_root / "thumbnails",
            settings.data_root,
            jobs.limits,
            settings.thumbnail_cache_bytes,
        ),
        model_files=ModelFiles(settings.model_home),
        runtime_files=RuntimeFiles(settings.resolved_static_dir()),
        pipeline_list=pipeline_list(pipelines),
        openapi=openapi.render(VERSION, pipelines),
    )


def _warm(state: AppState) -> None:
    """Pull (if allowed) and load the preload models; runs in a thread after start-up."""
    home = state.settings.model_home
    for model in state.settings.preload_models:
        if state.settings.pull_models:
            model_files.pull(model, home, log=log.info)
    state.models.warm(state.settings.preload_models)
    for info in state.models.info():
        for provider in info.providers:
            state.telemetry.session_info.labels(info.model, provider).set(1)


async def _warm_task(state: AppState) -> None:
    if state.models_ready:
        return
    try:
        await asyncio.to_thread(_warm, state)
    except Exception as exc:
        state.model_error = str(exc)
        log.exception("loading models failed; /readyz stays 503")
    else:
        state.models_ready = True
        log.info("models ready: %s", ", ".join(m.model for m in state.models.info()))


class TrustedHosts:
    """ASGI middleware: requests and handshakes for another ``Host`` never reach the app
    (``hosts``: the DNS-rebinding defence)."""

    def __init__(self, app: ASGIApp, policy: HostPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self.policy.any_host:
            await self.app(scope, receive, send)
            return
        host = Headers(scope=scope).get("host")
        if self.policy.allows_host(host):
            await self.app(scope, receive, send)
            return
        log.debug("refused Host %r", host)
        if scope["type"] == "websocket":  # before accept: uvicorn answers 403
            await send({"type": "websocket.close", "code": Close.ORIGIN_DENIED, "reason": ""})
            return
        shown = "no Host header" if host is None else f"Host {host[:100]!r}"
        refusal = errors.HostNotAllowed(
            f"{shown} is not one of this server's allowed_hosts (PLAYGROUND_ALLOWED_HOSTS)"
        )
        await rest.error_response(refusal)(scope, receive, send)


def _routes(state: AppState) -> list[BaseRoute]:
    """The routes as data; the static app last, as the catch-all."""
    settings = state.settings

    return [
        *routes.http_routes(),
        WebSocketRoute("/ws", ws.Endpoint(state.hub, state.jobs, settings)),
        Mount("/results", ResultFiles(settings.results_root, state.retention), name="results"),
        Mount(
            "/", StaticFiles(directory=settings.resolved_static_dir(), html=True, check_dir=False)
        ),
    ]


def create_app(settings: Settings, pipelines: Pipelines = PIPELINES) -> Starlette:
    """The app for ``settings``; ``pipelines``: the pipeline table it serves (a test's own,
    or ``PIPELINES``). Behind web nodes (``execute="remote"``) the workers' table is used."""
    state = build_state(settings, pipelines)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.playground = state
        settings.results_root.mkdir(parents=True, exist_ok=True)
        if swept := state.store.sweep():
            log.info("removed %d stale temp files under %s", swept, settings.results_root)
        await asyncio.to_thread(state.retention.load)  # a restart keeps the bounds
        keeper = asyncio.create_task(state.retention.keep(), name="results-retention")
        state.jobs.listeners.append(state.telemetry.job_event)
        state.jobs.submissions.append(state.telemetry.submitted)
        if isinstance(state.jobs, RemoteJobs):  # frames come back from the cluster's history
            state.jobs.sinks.append(state.hub.deliver)
            state.jobs.lost.append(state.hub.history_lost)
            state.models_ready = True  # a web node runs no model: the workers do
        else:
            state.jobs.listeners.append(state.hub.publish_job)
        state.jobs.start()
        await state.hub.start()
        warm = asyncio.create_task(_warm_task(state), name="warm-models")
        try:
            yield
        finally:
            warm.cancel()
            await state.drain()
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper

    routes = _routes(state)
    middleware = [
        Middleware(TrustedHosts, HostPolicy.from_settings(settings)),
        Middleware(IsolationMiddleware),
    ]
    if settings.allowed_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.allowed_origins,
                allow_methods=["GET", "POST", "DELETE"],
                allow_headers=["authorization", "content-type"],
            )
        )
    return Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        # Body size is enforced by rest.read_body (JSON 413, with or without Content-Length);
        # Starlette's max_body_size would answer in plain text instead.
        exception_handlers={
            errors.PlaygroundError: rest.playground_error,
            HTTPException: rest.http_error,
        },
    )
