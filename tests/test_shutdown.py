"""Faults that need the server in its own process: SIGTERM in the middle of work, a crash's
temp files at the next start, and Pillow's bomb warning outside pytest's warning filter.

The server is ``playground-rt serve`` as an operator starts it (``procserver``); the
clients are real sockets and HTTP requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import struct
import time
import zlib
from pathlib import Path

import httpx
import pytest
from PIL import Image

from playground_rt import schemas

from .conftest import b64, encode, sample_image
from .hubfixtures import client
from .procserver import ProcServer, serve_process

EXIT_BOUND_S = 15.0
TERMINAL = (schemas.Completed, schemas.Failed, schemas.Cancelled)
SLOW_PARAMS = {"strength": 1.0, "alpha_matting": True}  # about 1.5 s a job on 2 cores
BIG = (1600, 1200)


def slow_job(
    server: ProcServer, seed: int, task_id: str, size: tuple[int, int] = (1024, 768)
) -> dict[str, object]:
    """A rembg job of about 1.5 s; by path, as its base64 would not fit in a 64 KiB frame."""
    name = f"slow-{seed}.png"
    (server.data / name).write_bytes(encode(sample_image(*size, seed=seed)))
    return {"pipeline_id": "rembg", "image_path": name, "params": SLOW_PARAMS, "taskId": task_id}


def assert_whole_results(outputs: Path) -> list[Path]:
    """No temp file left, and every result a complete PNG."""
    results = outputs / "playground"
    leftovers = [p for p in results.rglob(".tmp-*")]
    assert not leftovers, leftovers
    pngs = sorted(results.rglob("*.png"))
    for png in pngs:
        assert png.read_bytes().endswith(b"IEND\xaeB`\x82"), png
        with Image.open(png) as image:
            image.load()
    return pngs


async def refused(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    try:
        _, writer = await asyncio.open_connection(host, int(port))
    except OSError:
        return True
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return False


async def wait_refused(server: ProcServer, timeout: float = 5) -> bool:
    """Whether new connections are refused while the process is still alive (polled: a
    closed listener sends no event to anyone outside the process)."""
    async with asyncio.timeout(timeout):
        while not await refused(server.url):
            await asyncio.sleep(0.02)
    return server.proc.poll() is None


async def test_sigterm_mid_job_gives_every_job_a_terminal_frame(tmp_path: Path) -> None:
    with serve_process(tmp_path, workers=1) as server:
        async with (
            client(server.ws_url) as ws,
            httpx.AsyncClient(base_url=server.url, timeout=60, trust_env=False) as http,
        ):
            acks = [
                await ws.ack({"type": "submit", **slow_job(server, i, f"ws-{i}")}) for i in range(3)
            ]
            job_ids = [a.job_id for a in acks if a.job_id]
            await ws.ack({"type": "subscribe", "taskId": "rest-1"})
            waiting = asyncio.create_task(
                http.post("/api/pipelines/fallback", json=slow_job(server, 9, "rest-1"))
            )
            queued = await ws.wait(schemas.Queued, lambda f: f.taskId == "rest-1")
            job_ids.append(queued.job_id)
            await ws.wait(schemas.Progress, lambda f: f.job_id == job_ids[0])  # first one runs

            started = time.monotonic()
            server.terminate()
            assert await wait_refused(server), "new connections still accepted"
            close_code = await ws.closed(timeout=EXIT_BOUND_S)
            answer = await waiting
            await asyncio.to_thread(server.wait, EXIT_BOUND_S)
            took = time.monotonic() - started

    for job_id in job_ids:
        frames = ws.job_frames(job_id)
        terminal = [f for f in frames if isinstance(f, TERMINAL)]
        assert len(terminal) == 1, (job_id, [type(f).__name__ for f in frames])
        assert isinstance(terminal[0], schemas.Completed | schemas.Cancelled), terminal
    assert close_code in (1001, 1012, 4500), close_code
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] in ("completed", "cancelled"), answer.json()
    assert took < EXIT_BOUND_S, f"exit took {took:.1f} s"
    assert server.proc.returncode in (0, -15), server.proc.returncode  # uvicorn re-raises
    assert "Traceback" not in server.output(), server.output()[-3000:]
    assert_whole_results(server.outputs)


async def test_sigterm_does_not_wait_for_an_op_that_cannot_be_interrupted(
    tmp_path: Path,
) -> None:
    """Past the grace, a running job is cancelled and its waiters answered (JSON); the
    process then exits without waiting for the op its thread is still inside."""
    with serve_process(tmp_path, workers=1, shutdown_grace_s=0) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=60, trust_env=False) as http:
            first = await http.post("/api/pipelines/fallback", json=slow_job(server, 41, "c", BIG))
            view = (await http.get(f"/api/jobs/{first.json()['job_id']}")).json()
            op_ms: float = view["durations"]["op.rembg"]  # what the same op takes here
            job = slow_job(server, 42, "w", BIG)
            waiting = asyncio.create_task(http.post("/api/pipelines/fallback", json=job))
            async with client(server.ws_url) as ws:
                await ws.ack({"type": "subscribe", "taskId": "w"})
                await ws.wait(schemas.Progress, lambda f: f.stage == "model", timeout=30)
            started = time.monotonic()
            server.terminate()
            answer = await waiting
            await asyncio.to_thread(server.wait, EXIT_BOUND_S)
            took = time.monotonic() - started
    assert answer.headers["content-type"] == "application/json", answer.text
    assert answer.json()["status"] == "cancelled", answer.json()
    assert took * 1000 < op_ms / 2, f"exit took {took:.2f} s; the op takes {op_ms:.0f} ms"
    assert "Traceback" not in server.output(), server.output()[-3000:]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
async def test_stop_when_idle_exits_at_once_and_quietly(
    tmp_path: Path, sig: signal.Signals
) -> None:
    with serve_process(tmp_path, preload_models=[], ready="/healthz") as server:
        async with client(server.ws_url) as ws:
            await ws.barrier()
            started = time.monotonic()
            server.terminate(sig)
            close_code = await ws.closed(timeout=EXIT_BOUND_S)
            await asyncio.to_thread(server.wait, EXIT_BOUND_S)
    assert time.monotonic() - started < 3
    assert close_code in (1001, 1012, 4500), close_code
    assert "Traceback" not in server.output(), server.output()[-3000:]


def test_stale_temp_files_are_swept_at_start_up(tmp_path: Path) -> None:
    rembg = tmp_path / "outputs" / "playground" / "rembg"
    rembg.mkdir(parents=True)
    stale = rembg / ".tmp-xyz.png"
    stale.write_bytes(b"\x89PNG\r\n\x1a\n half a result")
    whole = rembg / ("rembg-" + "1" * 32 + ".png")
    whole.write_bytes(encode(sample_image(8, 8)))
    with serve_process(tmp_path, preload_models=[], ready="/healthz") as server:
        assert not stale.exists()
        assert whole.exists()
        assert_whole_results(server.outputs)
    assert "removed 1 stale temp files" in server.output()


def bomb(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + ihdr + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.mark.parametrize("size", [(10_000, 10_000), (13_000, 13_000)], ids=["100mp", "169mp"])
def test_bomb_warning_is_an_error_in_a_real_server(tmp_path: Path, size: tuple[int, int]) -> None:
    """With max_pixels above Pillow's warning threshold, only ``images``' own warnings
    filter stands between a 68-byte PNG and a decode attempt (pytest makes every warning
    an error, so an in-process server cannot show this)."""
    with serve_process(
        tmp_path, preload_models=[], ready="/healthz", max_pixels=170_000_000
    ) as srv:
        body = {"pipeline_id": "preprocessing", "image_base64": b64(bomb(*size))}
        answer = httpx.post(srv.url + "/api/pipelines/fallback", json=body, trust_env=False)
    assert answer.status_code == 413, answer.text
    assert "more pixels than the decoder allows" in answer.json()["detail"]
