"""Results retention (``retention``): the results folder bounded by bytes and by age, least
recently used first, pinned results spared, a restart keeping the bounds, and a full disk
survived. First ``Retention`` on a folder (a clock of our own), then a real server.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from playground_rt import schemas
from playground_rt.cli import run as runner
from playground_rt.jobs.retention import Retention
from playground_rt.pipeline import images
from playground_rt.pipeline import results as cache
from playground_rt.pipeline.results import TEMP_PREFIX, ResultStore

from .conftest import (
    TERMINAL_STATES,
    Server,
    b64,
    encode,
    make_settings,
    poll,
    running,
    sample_image,
)
from .hubfixtures import client

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 992 + b"IEND\xaeB`\x82"  # 1,008 bytes
SERVER_FLIP = {"flip": True, "background_removal": "server"}  # cheap, and run by the server


class Clock:
    """Wall-clock time that moves only when a test says so (mtimes are compared to it)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def job(n: int) -> str:
    return f"preprocessing-{n:032x}"


def place(retention: Retention, store: ResultStore, n: int) -> Path:
    """What a job does: write (pinned), then unpin once its followers were told."""
    path = retention.write(store, "preprocessing", job(n), PNG)
    retention.unpin(path)
    return path


def kept(root: Path) -> list[str]:
    return sorted(p.stem for p in root.glob("*/*.png") if not p.name.startswith(TEMP_PREFIX))


# --- the index on a folder ----------------------------------------------------------------


def test_the_least_recently_used_go_first_and_the_newest_stays(tmp_path: Path) -> None:
    clock, store = Clock(), ResultStore(tmp_path)
    retention = Retention(tmp_path, max_bytes=3 * len(PNG), max_age_s=0, clock=clock)
    for n in range(3):
        place(retention, store, n)
        clock.now += 1
    retention.used(store.path("preprocessing", job(0)))  # a cache hit: 0 is the newest now
    clock.now += 1
    place(retention, store, 3)
    assert kept(tmp_path) == [job(0), job(2), job(3)]  # 1 was the least recently used
    held = retention.figures()
    assert (held.files, held.bytes, held.evictions) == (3, 3 * len(PNG), {"bytes": 1})


def test_a_result_bigger_than_the_cap_is_kept_until_a_newer_one_comes(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    retention = Retention(tmp_path, max_bytes=len(PNG) // 2, max_age_s=0)
    place(retention, store, 0)
    assert kept(tmp_path) == [job(0)]  # the folder holds at most the cap plus one result
    place(retention, store, 1)
    assert kept(tmp_path) == [job(1)]


def test_a_pinned_result_is_never_removed(tmp_path: Path) -> None:
    clock, store = Clock(), ResultStore(tmp_path)
    retention = Retention(tmp_path, max_bytes=len(PNG), max_age_s=60, clock=clock)
    served = place(retention, store, 0)
    with retention.pinned(served):  # a GET sending it
        clock.now += 1
        place(retention, store, 1)
        clock.now += 3600
        assert retention.trim() == 1  # 1 is too old; 0 too, but it is being served
        assert kept(tmp_path) == [job(0)]
    assert retention.trim() == 1
    assert kept(tmp_path) == []
    assert retention.figures().evictions == {"age": 2}


def test_a_result_being_written_is_pinned_until_it_is_released(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    retention = Retention(tmp_path, max_bytes=len(PNG), max_age_s=0)
    first = retention.write(store, "preprocessing", job(0), PNG)  # followers not told yet
    place(retention, store, 1)
    assert kept(tmp_path) == [job(0), job(1)]  # over the cap, but 0 is still pinned
    retention.unpin(first)
    retention.trim()
    assert kept(tmp_path) == [job(1)]


def test_a_restart_rebuilds_the_index_and_trims_to_the_cap(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    for n in range(6):
        path = store.write("preprocessing", job(n), PNG)
        os.utime(path, (1000 + n, 1000 + n))  # written in this order
    (tmp_path / "preprocessing" / f"{TEMP_PREFIX}x-1-ab.png").write_bytes(b"partial")
    (tmp_path / "notes.txt").write_text("not a result")
    retention = Retention(tmp_path, max_bytes=2 * len(PNG), max_age_s=0)
    retention.load()
    assert kept(tmp_path) == [job(4), job(5)]  # the two most recent
    assert (tmp_path / "notes.txt").exists()  # what is not a result is left alone
    assert (tmp_path / "preprocessing" / f"{TEMP_PREFIX}x-1-ab.png").exists()  # sweep's job
    assert retention.figures().files == 2


def test_the_default_cap_is_2_gib_or_half_the_free_disk(tmp_path: Path) -> None:
    retention = Retention(tmp_path / "playground", max_bytes=0, max_age_s=0)
    retention.load()
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    assert retention.max_bytes == pytest.approx(min(2 << 30, free // 2), rel=0.01)


def test_results_of_the_cli_join_at_the_rescan(tmp_path: Path) -> None:
    """``playground-rt run`` writing under the server's root: its results count too."""
    outputs = tmp_path / "outputs"
    retention = Retention(outputs / "playground", max_bytes=1 << 20, max_age_s=0)
    retention.load()
    images = tmp_path / "images"
    images.mkdir()
    for seed in range(3):
        (images / f"{seed}.png").write_bytes(encode(sample_image(seed=seed)))
    argv = ["--pipeline", "preprocessing", "--image", str(images), "--out", str(outputs)]
    assert runner.main([*argv, "--params", '{"flip": true}']) == 0
    assert retention.figures().files == 0
    retention.rescan()
    written = sorted((outputs / "playground" / "preprocessing").glob("*.png"))
    held = retention.figures()
    assert held.files == 3 and held.bytes == sum(p.stat().st_size for p in written)
    retention.max_bytes = 1  # and they are trimmed like the server's own
    retention.trim()
    assert held.files - retention.figures().files == 2


def test_uses_are_written_back_so_a_restart_keeps_their_order(tmp_path: Path) -> None:
    clock, store = Clock(), ResultStore(tmp_path)
    retention = Retention(tmp_path, max_bytes=1 << 20, max_age_s=0, clock=clock)
    for n in range(3):
        place(retention, store, n)
    clock.now += 10
    retention.used(store.path("preprocessing", job(0)))
    retention.rescan()  # writes the use back as the file's mtime
    again = Retention(tmp_path, max_bytes=len(PNG), max_age_s=0)
    again.load()
    assert kept(tmp_path) == [job(0)]


# --- a real server ------------------------------------------------------------------------


def preview(seed: int, size: tuple[int, int] = (96, 72)) -> dict[str, Any]:
    image = b64(encode(sample_image(*size, seed=seed)))
    return {"pipeline_id": "preprocessing", "image_base64": image, "params": SERVER_FLIP}


def noise_preview(seed: int, size: tuple[int, int] = (256, 200)) -> dict[str, Any]:
    """A result PNG cannot compress: about 3 bytes a pixel (150 KiB here)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), np.uint8)
    image = b64(encode(Image.fromarray(pixels, "RGB")))
    return {"pipeline_id": "preprocessing", "image_base64": image, "params": SERVER_FLIP}


class Calls:
    """A server's client that remembers every status, for 'nothing here is a 5xx'."""

    def __init__(self, srv: Server) -> None:
        self.srv = srv
        self.statuses: list[int] = []

    async def post(self, body: dict[str, Any]) -> dict[str, Any]:
        answer = await self.srv.post("/api/pipelines/preview", body)
        self.statuses.append(answer.status_code)
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = answer.json()
        return result

    async def get(self, path: str) -> httpx.Response:
        answer = await self.srv.http.get(path)
        self.statuses.append(answer.status_code)
        return answer

    async def run(self, body: dict[str, Any]) -> dict[str, Any]:
        """Preview ``body`` and wait for its job: the job's view."""
        job_id = (await self.post(body))["job_id"]

        async def view() -> dict[str, Any]:
            found: dict[str, Any] = (await self.get(f"/api/jobs/{job_id}")).json()
            return found

        ended = f"job {job_id} ended"
        return await poll(view, lambda v: v["state"] in TERMINAL_STATES, ended, 30, 0.01)

    def no_5xx(self) -> None:
        assert all(status < 500 for status in self.statuses), self.statuses


def results(srv: Server) -> list[Path]:
    return sorted(srv.settings.results_root.glob("*/*.png"))


def held_bytes(srv: Server) -> int:
    return sum(p.stat().st_size for p in results(srv))


async def test_thirty_distinct_previews_stay_within_the_cap(tmp_path: Path) -> None:
    cap = 60_000  # about four results
    settings = make_settings(tmp_path, results_max_bytes=cap, preload_models=[], workers=1)
    async with running(settings) as srv:
        calls, fetched = Calls(srv), {}
        for seed in range(30):
            view = await calls.run(preview(seed))
            assert view["state"] == "completed", view
            fetched[seed] = (view["result_url"], (await calls.get(view["result_url"])).content)
            assert held_bytes(srv) <= cap + max(len(data) for _, data in fetched.values())
        on_disk = {p.name for p in results(srv)}
        newest = [Path(fetched[seed][0]).name for seed in (27, 28, 29)]
        assert set(newest) <= on_disk and len(on_disk) < 30
        url, data = fetched[0]
        gone = await calls.get(url)
        assert gone.status_code == 404 and "ask for the preview again" in gone.json()["detail"]
        job_id = Path(url).stem
        view = (await calls.get(f"/api/jobs/{job_id}")).json()  # it did complete, back then
        assert view["state"] == "completed" and "removed by retention" in view["detail"]
        again = await calls.post(preview(0))
        assert again["status"] == "accepted"  # not a cache hit: it is computed again
        view = await calls.run(preview(0))
        assert view["result_url"] == url and (await calls.get(url)).content == data
        metrics = (await calls.get("/metrics")).text
        assert 'playground_rt_results_evictions_total{reason="bytes"}' in metrics
        assert f"playground_rt_results_max_bytes {float(cap)}" in metrics
        calls.no_5xx()


async def test_a_cache_hit_and_a_fetch_count_as_uses(tmp_path: Path) -> None:
    flipped = [
        sample_image(seed=seed).transpose(Image.Transpose.FLIP_LEFT_RIGHT) for seed in range(4)
    ]
    cap = sum(len(images.encode_png(result)) for result in flipped) + 1000  # four results
    settings = make_settings(tmp_path, results_max_bytes=cap, preload_models=[], workers=1)
    async with running(settings) as srv:
        calls = Calls(srv)
        urls = [(await calls.run(preview(seed)))["result_url"] for seed in range(4)]
        assert (await calls.post(preview(0)))["status"] == "completed"  # a hit: 0 is used
        assert (await calls.get(urls[1])).status_code == 200  # a fetch: 1 is used
        for seed in (4, 5):
            await calls.run(preview(seed))
        statuses = [(await calls.get(url)).status_code for url in urls]
        assert statuses == [200, 200, 404, 404]  # 2 and 3 were the least recently used
        calls.no_5xx()


async def test_a_restart_keeps_the_cap(tmp_path: Path) -> None:
    async with running(make_settings(tmp_path, preload_models=[], workers=1)) as srv:
        calls = Calls(srv)
        urls = [(await calls.run(preview(seed)))["result_url"] for seed in range(12)]
        full = held_bytes(srv)
        calls.no_5xx()
    cap = full // 3
    settings = make_settings(tmp_path, results_max_bytes=cap, preload_models=[], workers=1)
    async with running(settings) as srv:
        biggest = max(p.stat().st_size for p in results(srv))
        assert held_bytes(srv) <= cap + biggest  # trimmed at start-up, before any request
        assert (await srv.http.get(urls[-1])).status_code == 200  # the newest kept
        assert (await srv.http.get(urls[0])).status_code == 404
        held = srv.state.retention.figures()
        assert held.bytes == held_bytes(srv) and held.evictions["bytes"] >= 6


async def test_results_unused_past_their_max_age_go_unless_pinned(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, results_max_age_s=1, preload_models=[], workers=1)
    async with running(settings) as srv:
        calls = Calls(srv)
        views = [await calls.run(preview(seed)) for seed in range(2)]
        paths = [
            srv.settings.results_root / v["result_url"].removeprefix("/results/") for v in views
        ]
        srv.state.retention.pin(paths[0])  # as a GET does while it sends the file
        async with asyncio.timeout(10):
            while paths[1].exists():
                await asyncio.sleep(0.05)
        assert paths[0].exists()
        srv.state.retention.unpin(paths[0])
        async with asyncio.timeout(10):
            while paths[0].exists():
                await asyncio.sleep(0.05)
        assert srv.state.retention.figures().evictions == {"age": 2}
        calls.no_5xx()


# --- a full disk --------------------------------------------------------------------------


@contextlib.contextmanager
def small_disk(folder: Path, size: str = "2m") -> Iterator[bool]:
    """A tmpfs of ``size`` at ``folder`` when this machine lets us mount one (root, with
    CAP_SYS_ADMIN); False when it does not (the tests then inject the failure)."""
    folder.mkdir(parents=True)
    mount = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)]
    mounted = subprocess.run(mount, capture_output=True).returncode == 0
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], check=True)


def fill(folder: Path) -> Path:
    """Write a file until the filesystem refuses (ENOSPC); it holds the rest of the disk."""
    filler = folder / "filler"
    with filler.open("wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    return filler


def refuse_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault injection where no tmpfs can be mounted: every write meets ENOSPC."""
    real = cache.write_atomic

    def full(path: Path, data: bytes, temp_suffix: str | None = None) -> None:
        if path.suffix != ".png":
            real(path, data, temp_suffix)
            return
        cache._raise_if_full(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), path, len(data))

    monkeypatch.setattr(cache, "write_atomic", full)


async def test_a_full_disk_fails_the_job_with_disk_full_and_the_server_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outputs = tmp_path / "outputs"
    with small_disk(outputs) as mounted:
        settings = make_settings(
            tmp_path, outputs_root=outputs, results_max_bytes=1 << 30, preload_models=[]
        )
        async with running(settings) as srv, client(srv.ws_url) as ws:
            calls = Calls(srv)
            cached = await calls.run(preview(1))
            cached_bytes = (await calls.get(cached["result_url"])).content
            if mounted:
                filler = fill(outputs)
            else:
                refuse_writes(monkeypatch)
            ack = await ws.ack({"type": "submit", **preview(2)})
            failed = await ws.wait(schemas.Failed, lambda f: f.job_id == ack.job_id)
            assert failed.code == "disk_full" and "no room left on the disk" in failed.detail
            view = (await calls.get(f"/api/jobs/{ack.job_id}")).json()
            assert (view["state"], view["code"]) == ("failed", "disk_full")
            assert not list(srv.settings.results_root.rglob(f"{TEMP_PREFIX}*"))
            assert (await calls.get(cached["result_url"])).content == cached_bytes
            assert (await calls.post(preview(1)))["status"] == "completed"  # hits still served
            await ws.barrier()  # the socket still answers
            assert (await calls.get("/healthz")).status_code == 200
            if mounted:
                filler.unlink()
            else:
                monkeypatch.undo()
            assert (await calls.run(preview(2)))["state"] == "completed"
            calls.no_5xx()


async def test_a_disk_filled_by_results_is_freed_by_evicting_them(tmp_path: Path) -> None:
    outputs = tmp_path / "outputs"
    with small_disk(outputs) as mounted:
        if not mounted:
            pytest.skip("needs a tmpfs mount (root with CAP_SYS_ADMIN)")
        settings = make_settings(
            tmp_path, outputs_root=outputs, results_max_bytes=1 << 30, preload_models=[]
        )
        async with running(settings) as srv:
            calls = Calls(srv)
            for seed in range(24):  # about 3.6 MB of results on a 2 MB disk
                view = await calls.run(noise_preview(seed))
                assert view["state"] == "completed", view
            assert srv.state.retention.figures().evictions["disk_full"] >= 10
            assert len(results(srv)) < 24
            calls.no_5xx()
