"""The servers under test, as subprocesses this module starts and always stops.

``rembg s`` needs rembg's ``cli`` extras (FastAPI, gradio, ...), which the project's own
environment does not carry; :func:`ensure_rembg_venv` builds a separate one on first use,
with the same rembg and onnxruntime versions as the project's.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
REMBG_VENV = ROOT / ".bench-venv"
REMBG_VERSION = "2.0.86"
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class PlaygroundConfig:
    workers: int
    intra: int
    outputs_root: Path
    data_root: Path
    model_home: Path

    @property
    def label(self) -> str:
        return f"{self.workers}x{self.intra}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def ensure_rembg_venv(venv: Path = REMBG_VENV) -> Path:
    """The ``rembg`` executable of ``venv``, installing it (pip, network) when missing.

    A marker file records what was installed, so an interrupted install is redone and a
    changed pin (a new onnxruntime in the project) reinstalls.
    """
    ort = importlib.metadata.version("onnxruntime")
    wanted = [f"rembg[cli,cpu]=={REMBG_VERSION}", f"onnxruntime=={ort}"]
    marker = venv / "bench-requirements.txt"
    if marker.is_file() and marker.read_text().split() == wanted:
        return venv / "bin" / "rembg"
    print(f"preparing {venv} for `rembg s`: pip install {' '.join(wanted)} (once; minutes)")
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *wanted]
    subprocess.run(pip, check=True)
    marker.write_text("\n".join(wanted) + "\n")
    return venv / "bin" / "rembg"


@contextlib.contextmanager
def running(
    argv: Sequence[str], env: dict[str, str], log: Path, ready_url: str
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``argv``, wait until ``ready_url`` answers 200, and stop it on exit (always)."""
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_ready(proc, ready_url, log)
        yield proc
    finally:
        _stop(proc)


def _wait_ready(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}:\n{_tail(log)}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url, timeout=5).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {START_TIMEOUT_S:g} s:\n{_tail(log)}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def _clean_env(model_home: Path) -> dict[str, str]:
    """This environment without ``PLAYGROUND_*`` (a stray token or root would skew the run)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLAYGROUND_")}
    env["U2NET_HOME"] = str(model_home)
    env["BROWSER"] = "true"  # `rembg s` opens a browser at start-up; make that a no-op
    return env


@contextlib.contextmanager
def rembg_server(model_home: Path, logs: Path) -> Iterator[str]:
    """``rembg s`` (API only, ``--no-ui``) on a free port; yields its base URL."""
    port = free_port()
    argv = [str(ensure_rembg_venv()), "s", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--no-ui", "--log_level", "warning"]
    base = f"http://127.0.0.1:{port}"
    with running(argv, _clean_env(model_home), logs / "rembg-s.log", f"{base}/api"):
        yield base


@contextlib.contextmanager
def playground_server(config: PlaygroundConfig, logs: Path) -> Iterator[str]:
    """``playground-rt serve`` with ``config`` on a free port; yields its base URL."""
    port = free_port()
    argv = [sys.executable, "-m", "playground_rt.cli.main", "serve", "--port", str(port)]
    argv += ["--workers", str(config.workers), "--intra-op-threads", str(config.intra)]
    argv += ["--outputs-root", str(config.outputs_root), "--data-root", str(config.data_root)]
    argv += ["--model-home", str(config.model_home), "--no-pull", "--log-level", "warning"]
    base = f"http://127.0.0.1:{port}"
    log = logs / f"playground-{config.label}-{config.outputs_root.name}.log"
    with running(argv, _clean_env(config.model_home), log, f"{base}/readyz"):
        yield base
