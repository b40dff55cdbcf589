"""The HTTP edge, over a real uvicorn and raw sockets: which ``Host`` and ``Origin`` are
answered (DNS rebinding), deadlines on a request's head and body (slowloris), and no token
in the logs."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from playground_rt import config
from playground_rt.cli import main as cli
from playground_rt.config import Settings
from playground_rt.web import serving
from playground_rt.web.hosts import HostPolicy, host_name

from .conftest import SEED_IMAGE, Server, make_settings, running
from .hubfixtures import client
from .rawclients import host_port, raw_http

IMAGE = "/api/datasets/file?path=" + SEED_IMAGE


async def raw_request(url: str, head: str) -> tuple[int, bytes]:
    return await raw_http(url, head.encode() + b"\r\n\r\n")


async def handshake(url: str, host: str | None, origin: str | None = None) -> int:
    """The status a WebSocket handshake with these headers gets."""
    reader, writer = await asyncio.open_connection(*host_port(url))
    key = base64.b64encode(os.urandom(16)).decode()
    lines = ["GET /ws HTTP/1.1", "Upgrade: websocket", "Connection: Upgrade"]
    lines += [f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
    lines += [f"Host: {host}"] if host is not None else []
    lines += [f"Origin: {origin}"] if origin is not None else []
    try:
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        async with asyncio.timeout(10):
            return int((await reader.readline()).split()[1])
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


@pytest.fixture(scope="module")
async def edge(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    settings = make_settings(
        tmp_path_factory.mktemp("edge"),
        preload_models=[],
        http_header_timeout_s=0.5,
        http_body_timeout_s=1.0,
    )
    async with running(settings) as srv:
        yield srv


# --- Host: DNS rebinding ------------------------------------------------------------------

REFUSED_HOSTS = [
    pytest.param("attacker.example:{port}", id="rebinding-repro"),
    pytest.param("attacker.example", id="no-port"),
    pytest.param("localhost.attacker.example:{port}", id="prefix"),
    pytest.param("127.0.0.1.nip.io:{port}", id="ip-prefix"),
    pytest.param("127.0.0.1:{port}x", id="bad-port"),
    pytest.param("::1", id="v6-without-brackets"),
    pytest.param("[::1", id="v6-unclosed"),
    pytest.param("", id="empty"),
]


@pytest.mark.parametrize("host", REFUSED_HOSTS)
async def test_a_foreign_host_is_refused(edge: Server, host: str) -> None:
    """FINDINGS D10: ``Host: attacker.example`` read the data root (200 + the image)."""
    host = host.format(port=host_port(edge.url)[1])
    status, body = await raw_request(edge.url, f"GET {IMAGE} HTTP/1.1\r\nHost: {host}")
    assert status == 421, body
    answer = json.loads(body)
    assert answer["code"] == "host_not_allowed" and "allowed_hosts" in answer["detail"]


async def test_no_host_header_is_refused(edge: Server) -> None:
    status, body = await raw_request(edge.url, f"GET {IMAGE} HTTP/1.0")
    assert status == 421 and b"no Host header" in body, body


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1:{port}", "127.0.0.1", "localhost:{port}", "LocalHost.:{port}", "[::1]:{port}"],
)
async def test_local_hosts_are_answered(edge: Server, host: str) -> None:
    host = host.format(port=host_port(edge.url)[1])
    status, body = await raw_request(edge.url, f"GET {IMAGE} HTTP/1.1\r\nHost: {host}")
    assert status == 200 and body.startswith(b"\xff\xd8"), body[:200]


async def test_a_foreign_host_cannot_open_a_socket(edge: Server) -> None:
    """FINDINGS D10: the Origin check compared Origin with Host, so both lying passed (101)."""
    port = host_port(edge.url)[1]
    evil = f"attacker.example:{port}"
    assert await handshake(edge.url, evil, f"http://{evil}") == 403
    assert await handshake(edge.url, evil) == 403
    local = f"127.0.0.1:{port}"
    for origin in (f"http://{evil}", f"http://localhost:{port}", "null", f"ftp://{local}"):
        assert await handshake(edge.url, local, origin) == 403, origin
    same: tuple[str | None, ...] = (f"http://{local}", None)  # same origin; not a browser
    for allowed in same:
        assert await handshake(edge.url, local, allowed) == 101, allowed


@pytest.mark.parametrize(
    ("allowed", "host", "status"),
    [
        pytest.param(["*"], "attacker.example", 200, id="star"),
        pytest.param(["*.example.org"], "app.example.org:80", 200, id="subdomain"),
        pytest.param(["*.example.org"], "example.org", 421, id="not-the-parent"),
        pytest.param(["*.example.org"], "evil-example.org", 421, id="not-a-suffix"),
        pytest.param(["Box.LAN."], "box.lan:8000", 200, id="case-and-dot"),
        pytest.param(["box.lan"], "localhost", 421, id="replaces-the-defaults"),
        pytest.param(["box.lan"], "127.0.0.1", 200, id="bound-host-stays"),
    ],
)
async def test_allowed_hosts(tmp_path: Path, allowed: list[str], host: str, status: int) -> None:
    settings = make_settings(tmp_path, preload_models=[], allowed_hosts=allowed)
    async with running(settings) as srv:
        answer, body = await raw_request(srv.url, f"GET /healthz HTTP/1.1\r\nHost: {host}")
    assert answer == status, body


def test_trusted_hosts_and_where_they_are_set(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().trusted_hosts == ["localhost", "127.0.0.1", "::1"]
    assert Settings(host="192.168.1.5").trusted_hosts[-1] == "192.168.1.5"
    assert Settings(host="0.0.0.0").trusted_hosts == ["localhost", "127.0.0.1", "::1"]
    env = {"PLAYGROUND_ALLOWED_HOSTS": "a.example, b.example"}
    assert config.from_env(env).allowed_hosts == ["a.example", "b.example"]
    monkeypatch.setenv("PLAYGROUND_ALLOWED_HOSTS", "from-env.example")
    args = cli.parser().parse_args(["serve", "--allowed-host", "x.lan,y.lan", "--allowed-host=z"])
    assert cli.serve_settings(args).allowed_hosts == ["x.lan", "y.lan", "z"]
    assert cli.serve_settings(cli.parser().parse_args(["serve"])).allowed_hosts == [
        "from-env.example"
    ]


def test_host_names() -> None:
    assert host_name("Example.ORG.:8080") == "example.org"
    assert host_name("[::1]:8000") == host_name("[::1]") == "::1"
    assert host_name("x:") is None and host_name("[::1]x") is None and host_name(":80") is None
    policy = HostPolicy(["[::1]", "localhost:9999"], ["https://app.example/"])
    assert policy.allows_host("[::1]:1") and policy.allows_host("localhost:1")
    assert policy.allows_origin("https://APP.example", "anything:1")
    assert not policy.allows_origin("http://[::1]:1", "[::1]:2")


# --- CSRF: only JSON bodies (the bad-input corpus covers every endpoint) -------------------


async def test_a_cross_site_simple_post_is_refused(edge: Server) -> None:
    """FINDINGS D15's repro: ``text/plain`` ran a job; now 415 before anything runs."""
    body = {"pipeline_id": "preprocessing", "image_path": SEED_IMAGE, "params": {"flip": True}}
    response = await edge.http.post(
        "/api/pipelines/fallback",
        content=json.dumps(body),
        headers={"content-type": "text/plain", "origin": "http://attacker.example"},
    )
    assert response.status_code == 415, response.text
    assert response.json()["code"] == "unsupported_media_type"
    assert not list(edge.settings.results_root.rglob("*.png"))


# --- slowloris ----------------------------------------------------------------------------


async def drip(url: str, first: bytes, then: bytes, every: float = 0.1) -> tuple[float, bytes]:
    """Send ``first``, then ``then`` every ``every`` s until the server closes; how long
    that took and what it answered."""
    reader, writer = await asyncio.open_connection(*host_port(url))
    started, answer = time.monotonic(), b""
    try:
        writer.write(first)
        async with asyncio.timeout(10):
            while True:
                try:
                    chunk = await asyncio.wait_for(reader.read(65536), every)
                except TimeoutError:
                    writer.write(then)
                    continue
                if not chunk:
                    return time.monotonic() - started, answer
                answer += chunk
    except ConnectionError:
        return time.monotonic() - started, answer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


HEAD = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
POST = (
    b"POST /api/metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b"Content-Length: 100000\r\n\r\n{"
)
GET_WITH_BODY = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n"


async def test_slow_requests_are_cut_off_and_others_served(edge: Server) -> None:
    """FINDINGS D19: connections dripping a header line or a body byte stayed open forever.

    Head deadline 0.5 s, body deadline 1 s (``edge``); the drips would go on for 10 s.
    """

    async def meanwhile() -> float:
        started = time.monotonic()
        async with client(edge.ws_url) as ws:  # a socket outlives both deadlines
            for _ in range(8):
                assert (await edge.http.get("/healthz")).status_code == 200
                await ws.barrier()
                await asyncio.sleep(0.25)
        return time.monotonic() - started

    head, silent, body, unread, served = await asyncio.gather(
        drip(edge.url, HEAD, b"X-a: b\r\n"),
        drip(edge.url, b"", b""),
        drip(edge.url, POST, b" "),
        drip(edge.url, GET_WITH_BODY, b" "),
        meanwhile(),
    )
    assert 0.4 < head[0] < 3 and head[1].startswith(b"HTTP/1.1 408 "), head
    assert 0.4 < silent[0] < 3 and silent[1] == b"", silent
    assert 0.9 < body[0] < 4 and body[1].startswith(b"HTTP/1.1 408 "), body
    assert b"http_body_timeout_s" in body[1] and b'"code":"request_timeout"' in body[1]
    assert 0.9 < unread[0] < 4 and unread[1].startswith(b"HTTP/1.1 200 "), unread
    assert served > 2


async def test_keep_alive_requests_each_get_a_full_head_deadline(edge: Server) -> None:
    reader, writer = await asyncio.open_connection(*host_port(edge.url))
    try:
        for _ in range(3):
            writer.write(HEAD + b"\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200 "), head
            await reader.readexactly(int(head.split(b"content-length: ")[1].split(b"\r")[0]))
            await asyncio.sleep(0.3)  # under each deadline, over their sum
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


# --- no token in the logs -----------------------------------------------------------------


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextlib.contextmanager
def uvicorn_lines() -> Iterator[Lines]:
    """What uvicorn's loggers write meanwhile (they do not propagate to the root); from
    inside ``running``, whose start-up configures uvicorn's loggers anew."""
    lines = Lines()
    loggers = [logging.getLogger(name) for name in ("uvicorn.access", "uvicorn.error")]
    for logger in loggers:
        logger.addHandler(lines)
    try:
        yield lines
    finally:
        for logger in loggers:
            logger.removeHandler(lines)


async def test_a_query_token_never_reaches_the_log(tmp_path: Path) -> None:
    """FINDINGS D20: ``?token=`` was written to the access log, REST and WebSocket."""
    secret = "s3cret-token-value"
    settings = make_settings(tmp_path, preload_models=[], token=secret)
    async with running(settings, log_level="info") as srv:
        with uvicorn_lines() as lines:  # after uvicorn's own logging set-up
            for query in (f"token={secret}", f"offset=0&%74oken={secret}&limit=1"):
                assert (await srv.http.get("/api/datasets?" + query)).status_code == 200
            async with client(srv.ws_url + f"?token={secret}") as c:
                await c.barrier()
    text = "\n".join(lines.lines)
    assert "/api/datasets?token=***" in text and "%74oken=***" in text, text
    assert "/ws?token=***" in text, text
    assert secret not in text, text


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("/x?token=a&b=1",), ("/x?token=***&b=1",)),
        (("1.2.3.4", "GET", "/x?b=1&token=a+b%20c"), ("1.2.3.4", "GET", "/x?b=1&token=***")),
        (("/x?tokens=a&token",), ("/x?tokens=a&token",)),
        (("/x?TOKEN=a", 200), ("/x?TOKEN=***", 200)),
    ],
)
def test_redact_token(args: tuple[Any, ...], expected: tuple[Any, ...]) -> None:
    record = logging.LogRecord("uvicorn.access", logging.INFO, "", 0, "%s", args, None)
    assert serving.RedactToken().filter(record) and record.args == expected
