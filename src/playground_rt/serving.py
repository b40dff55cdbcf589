"""Running the app under uvicorn, with a shutdown that tells every client how its job ended.

uvicorn's own shutdown closes WebSockets (1012) and waits for connections *before* the
lifespan teardown runs, so terminal frames sent from the teardown never arrive. This server
drains first: it stops listening, finishes every job with a terminal frame and closes the
sockets itself (4500, "reconnect and resume"); then uvicorn's shutdown runs as usual.
"""

from __future__ import annotations

import socket

import uvicorn
from starlette.applications import Starlette

from .config import Settings
from .state import AppState


class Server(uvicorn.Server):
    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        app = self.config.app
        state: AppState | None = (
            getattr(app.state, "playground", None) if isinstance(app, Starlette) else None
        )
        if state is not None and not self.force_exit:
            await state.drain()
        await super().shutdown(sockets)


def config(settings: Settings, app: Starlette, *, log_level: str | None = None) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        ws=settings.ws_impl,
        # Above the hub's own limit, so an oversize frame gets the hub's 4009 and a reason.
        ws_max_size=4 * settings.ws_max_frame_bytes,
        ws_ping_interval=settings.ws_ping_interval_s,
        # Browsers always offer permessage-deflate; it would compress every frame again per
        # socket and defeat the hub's encode-once fan-out.
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s) + 5,
        log_level=log_level or settings.log_level,
        proxy_headers=False,
        lifespan="on",
    )
