"""PLACEHOLDER until the hub lands: the interface app.py relies on."""

from __future__ import annotations

from starlette.websockets import WebSocket

from .config import Settings
from .jobs import JobEvent, JobManager
from .telemetry import Telemetry


class Hub:
    def __init__(self, settings: Settings, jobs: JobManager, telemetry: Telemetry) -> None:
        self.settings = settings

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def publish_job(self, event: JobEvent) -> None:
        return None

    async def endpoint(self, websocket: WebSocket) -> None:
        await websocket.close(code=1011)
