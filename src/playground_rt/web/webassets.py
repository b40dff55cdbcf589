"""What the page needs to run a model itself, and the isolation that gives it threads.

* ``GET /models/{model}.onnx``: a model the page may run (``ops.background.CLIENT_MODELS``)
  from the model home, as rembg finds it. ``ETag`` is the file's md5 (quoted), the
  ``Cache-Control`` is ``public, max-age=31536000, immutable``, and ``If-None-Match`` gets a
  304. The page keeps the file in Cache Storage (``static/js/model-worker.js``), so a reload
  never fetches it again; the md5 in the ETag is what it checks a cached copy against.
* ``GET /vendor/onnxruntime-web/{file}``: the ``.mjs`` and ``.wasm`` files of
  ``node_modules/onnxruntime-web/dist`` beside ``static/`` (``npm ci`` from the checkout's
  ``package-lock.json``, run by ``scripts/_npm``); ``.wasm`` as ``application/wasm``. When the
  runtime is not installed the answer is a 404 with a detail, and the page removes
  backgrounds on the server instead (a device downgrade it shows).
* :class:`IsolationMiddleware`: ``Cross-Origin-Opener-Policy: same-origin`` and
  ``Cross-Origin-Embedder-Policy: require-corp`` on every HTTP response, so the page is
  ``crossOriginIsolated``: SharedArrayBuffer, hence onnxruntime-web's WASM threads. Every
  resource the page loads is same-origin, which ``require-corp`` always allows.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from playground_rt import errors
from playground_rt.pipeline.ops.background import CLIENT_MODELS
from playground_rt.pipeline.sessions import file_md5, model_file

MODEL_CACHE_CONTROL = "public, max-age=31536000, immutable"
RUNTIME_CACHE_CONTROL = "public, max-age=3600"
RUNTIME_PACKAGE = "onnxruntime-web"
RUNTIME_FILE = re.compile(r"^ort[a-z0-9.-]*\.(mjs|wasm)$")
MEDIA_TYPES = {".mjs": "text/javascript", ".wasm": "application/wasm"}
ISOLATION_HEADERS = (
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-embedder-policy", b"require-corp"),
)


def runtime_dir(static_dir: Path) -> Path:
    """Where onnxruntime-web's browser files are: ``node_modules`` beside ``static/``."""
    return static_dir.parent / "node_modules" / RUNTIME_PACKAGE / "dist"


class ModelFiles:
    """``GET /models/{model}.onnx``; md5s are computed once per (file, mtime, size)."""

    def __init__(self, model_home: Path) -> None:
        self.model_home = model_home
        self._md5: dict[tuple[Path, int, int], str] = {}

    async def endpoint(self, request: Request) -> Response:
        name = request.path_params["model"]
        if name not in CLIENT_MODELS:
            raise errors.NotFound(
                f"model {name!r} is not served to browsers; served: {', '.join(CLIENT_MODELS)}"
            )
        path = model_file(self.model_home, name)
        if path is None:
            raise errors.NotFound(
                f"model {name!r} is not in the model home; run `playground-rt models pull`"
            )
        etag = f'"{await self._digest(path)}"'
        headers = {"etag": etag, "cache-control": MODEL_CACHE_CONTROL}
        return _conditional(request, path, "application/octet-stream", headers)

    async def _digest(self, path: Path) -> str:
        stat = path.stat()
        key = (path, stat.st_mtime_ns, stat.st_size)
        if key not in self._md5:
            self._md5[key] = await asyncio.to_thread(file_md5, path)
        return self._md5[key]


class RuntimeFiles:
    """``GET /vendor/onnxruntime-web/{file}`` from :func:`runtime_dir`."""

    def __init__(self, static_dir: Path) -> None:
        self.root = runtime_dir(static_dir)

    async def endpoint(self, request: Request) -> Response:
        name = request.path_params["file"]
        if not RUNTIME_FILE.match(name):
            raise errors.NotFound(f"{name!r} is not a file of the {RUNTIME_PACKAGE} runtime")
        path = self.root / name
        if not path.is_file():
            raise errors.NotFound(
                f"{RUNTIME_PACKAGE} is not installed ({path} is missing): run `npm ci` in the "
                "checkout (scripts/serve does it); backgrounds are removed on the server"
            )
        stat = path.stat()
        etag = f'"{stat.st_size:x}-{stat.st_mtime_ns:x}"'
        headers = {"etag": etag, "cache-control": RUNTIME_CACHE_CONTROL}
        return _conditional(request, path, MEDIA_TYPES[path.suffix], headers)


def _conditional(
    request: Request, path: Path, media_type: str, headers: dict[str, str]
) -> Response:
    given = request.headers.get("if-none-match", "")
    if headers["etag"] in (tag.strip() for tag in given.split(",")):
        return Response(status_code=304, headers=headers)
    return FileResponse(path, media_type=media_type, headers=headers)


class IsolationMiddleware:
    """Adds the cross-origin isolation headers (COOP/COEP) to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def isolated(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *ISOLATION_HEADERS]
            await send(message)

        await self.app(scope, receive, isolated)
