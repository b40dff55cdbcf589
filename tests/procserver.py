"""Child processes, for the tests that need a real one: ``playground-rt serve`` (and
``worker``) as an operator runs them, and a private ``redis-server``.

Everything else runs the server in the test's own process (``conftest.running``). Here:
settings from ``PLAYGROUND_*`` variables, a port picked here (``--port 0`` would not tell us
which), each process's output in a log file (read into failure messages), signals sent for
real. Every process is started by :func:`spawn` and always stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from .conftest import MODEL_HOME, make_settings

START_TIMEOUT_S = 60.0
REDIS_SERVER = "/usr/bin/redis-server"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def environment(**settings: object) -> dict[str, str]:
    """This environment with ``settings`` as ``PLAYGROUND_*`` variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLAYGROUND_")}
    values: dict[str, object] = {"pull_models": "false", "log_level": "info", **settings}
    for name, value in values.items():
        text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
        env[f"PLAYGROUND_{name.upper()}"] = text
    return env


def command(verb: str, *args: str) -> list[str]:
    """``playground-rt <verb> <args>`` with this interpreter."""
    return [sys.executable, "-m", "playground_rt.cli.main", verb, *args]


def serve_command(root: Path, port: int) -> list[str]:
    """``playground-rt serve`` on ``port`` with its data and outputs under ``root``.

    Paths go as flags: ``PLAYGROUND_DATA_ROOT`` & co. fail in ``config.from_env``.
    """
    return command(
        "serve",
        *("--port", str(port), "--data-root", str(root / "data")),
        *("--outputs-root", str(root / "outputs"), "--model-home", str(MODEL_HOME)),
    )


def spawn(argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start ``argv`` with its output (stdout and stderr) appended to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL, unless it already exited."""
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


# --- playground-rt serve --------------------------------------------------------------------


@dataclass
class ProcServer:
    proc: subprocess.Popen[bytes]
    url: str
    root: Path
    log: Path

    @property
    def ws_url(self) -> str:
        return self.url.replace("http", "ws", 1) + "/ws"

    @property
    def outputs(self) -> Path:
        return self.root / "outputs"

    @property
    def data(self) -> Path:
        return self.root / "data"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def terminate(self, sig: signal.Signals = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)


def wait_ready(server: ProcServer, path: str = "/readyz") -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise AssertionError(f"server exited with {server.proc.returncode}:\n{server.output()}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(server.url + path, timeout=5, trust_env=False).status_code == 200:
                return
        time.sleep(0.05)
    raise AssertionError(f"{server.url}{path} not ready after {START_TIMEOUT_S:g} s")


@contextlib.contextmanager
def serve_process(root: Path, ready: str = "/readyz", **settings: object) -> Iterator[ProcServer]:
    """Start the server with ``settings``; wait for ``ready``; always stop it on exit."""
    make_settings(root)  # plants the seed image under root/data
    port = free_port()
    log = root / "server.log"
    proc = spawn(serve_command(root, port), log, environment(**settings))
    server = ProcServer(proc, f"http://127.0.0.1:{port}", root, log)
    try:
        wait_ready(server, ready)
        yield server
    finally:
        stop(proc)


# --- redis-server ---------------------------------------------------------------------------


class Redis:
    """A private ``redis-server`` (no persistence) on a free port; restartable."""

    def __init__(self, tmp: Path) -> None:
        exe = shutil.which("redis-server") or REDIS_SERVER
        if not Path(exe).is_file():
            pytest.fail("redis-server not found: run `.ci/run` or `apt-get install redis-server`")
        self.exe, self.tmp = exe, tmp
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        args = [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--dir", str(self.tmp)]
        log = self.tmp / "redis.log"
        self.proc = spawn(args, log)
        async with asyncio.timeout(10):
            while not await self._ping():
                if self.proc.poll() is not None:
                    raise AssertionError(f"redis-server exited at start:\n{log.read_text()}")
                await asyncio.sleep(0.02)

    async def _ping(self) -> bool:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            return False
        writer.write(b"PING\r\n")
        answer = await reader.readline()
        writer.close()
        await writer.wait_closed()
        return answer == b"+PONG\r\n"

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
        self.proc = None
