"""``playground-rt serve`` in a subprocess, as an operator runs it: settings from
``PLAYGROUND_*`` variables, a port picked here (``--port 0`` would not tell us which), its
log in a file, signals sent for real."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from .conftest import MODEL_HOME, make_settings

START_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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

    def rss_kib(self) -> int:
        return rss_kib(self.proc.pid)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def environment(**settings: object) -> dict[str, str]:
    """This environment with ``settings`` as ``PLAYGROUND_*`` variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLAYGROUND_")}
    values: dict[str, object] = {"pull_models": "false", "log_level": "info", **settings}
    for name, value in values.items():
        text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
        env[f"PLAYGROUND_{name.upper()}"] = text
    return env


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
    argv = [sys.executable, "-m", "playground_rt.cli.main", "serve", "--port", str(port)]
    # Paths go as flags: PLAYGROUND_DATA_ROOT & co. fail in config.from_env (str -> Path).
    argv += ["--data-root", str(root / "data"), "--outputs-root", str(root / "outputs")]
    argv += ["--model-home", str(MODEL_HOME)]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, env=environment(**settings), stdout=out, stderr=subprocess.STDOUT
        )
    server = ProcServer(proc, f"http://127.0.0.1:{port}", root, log)
    try:
        wait_ready(server, ready)
        yield server
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
