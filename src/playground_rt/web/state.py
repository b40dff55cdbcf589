"""What the lifespan owns, handed to endpoints as one typed object."""

from __future__ import annotations

from dataclasses import dataclass

import onnxruntime as ort

from playground_rt import schemas
from playground_rt.commands.builder import Catalog
from playground_rt.config import Settings
from playground_rt.hub.fanout import Hub
from playground_rt.hub.telemetry import Telemetry
from playground_rt.jobs.manager import JobManager
from playground_rt.jobs.retention import Retention
from playground_rt.pipeline.results import ResultStore
from playground_rt.pipeline.sessions import ModelRegistry
from playground_rt.web.datasets import Datasets
from playground_rt.web.thumbnails import Thumbnails
from playground_rt.web.webassets import ModelFiles, RuntimeFiles


@dataclass
class AppState:
    settings: Settings
    store: ResultStore
    retention: Retention
    models: ModelRegistry
    jobs: JobManager
    telemetry: Telemetry
    hub: Hub
    commands: Catalog
    datasets: Datasets
    thumbnails: Thumbnails
    model_files: ModelFiles
    runtime_files: RuntimeFiles
    pipeline_list: schemas.PipelineList
    openapi: bytes
    models_ready: bool = False
    model_error: str | None = None
    drained: bool = False

    async def drain(self) -> None:
        """Finish every job with a terminal frame, then close the sockets (4500). Runs before
        uvicorn closes connections (``serving.Server``) and again, as a no-op, at teardown."""
        if self.drained:
            return
        self.drained = True
        await self.jobs.stop(self.settings.shutdown_grace_s)
        await self.hub.stop()

    def readiness(self) -> schemas.Readiness:
        models = self.models.info()
        return schemas.Readiness(
            ready=self.models_ready and self.jobs.accepting,
            models=models,
            available_providers=list(ort.get_available_providers()),
            workers=self.jobs.executor.stats.workers,
            intra_op_threads=self.settings.intra_op_threads,
            queue_size=self.settings.queue_size,
        )
