"""The job lifecycle on a real server: single-flight, cache, queue limits, cancel, faults."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import numpy as np
import pytest
import rembg
from PIL import Image

from playground_rt import schemas
from playground_rt.jobs.job import JobEvent
from playground_rt.pipeline import images, registry
from playground_rt.pipeline.ops.base import OpContext, OpSpec

from .conftest import MODEL_HOME, Server, b64, encode, make_settings, running, sample_image
from .hubfixtures import Client, client, unique_png

PREVIEW = "/api/pipelines/preview"


def rembg_body(seed: int, **params: Any) -> dict[str, Any]:
    return {
        "pipeline_id": "rembg",
        "image_base64": b64(encode(sample_image(seed=seed))),
        "params": params,
    }


async def test_server_rembg_equals_rembg_remove(server: Server) -> None:
    image = sample_image(seed=11)
    answer = (await server.post("/api/pipelines/fallback", rembg_body(11))).json()
    assert answer["status"] == "completed"
    session = rembg.new_session("u2netp")
    expected = np.asarray(rembg.remove(image, session=session))
    result = server.settings.outputs_root / "playground/rembg" / f"{answer['job_id']}.png"
    with Image.open(result) as got:
        assert np.array_equal(np.asarray(got), expected)


async def test_a_job_alone_in_the_pool_runs_its_model_on_every_core(server: Server) -> None:
    answer = (await server.post("/api/pipelines/fallback", rembg_body(12))).json()
    view = (await server.http.get(f"/api/jobs/{answer['job_id']}")).json()
    settings = server.settings
    all_cores = settings.worker_count * max(1, settings.intra_op_threads)
    assert view["threads"] == all_cores  # 2 here: two workers of one thread each


async def test_twenty_identical_requests_run_once(server: Server) -> None:
    stats = server.state.jobs.executor.stats
    before = stats.completed
    # A large image: its decode takes long enough that the others arrive while it runs.
    image = b64(encode(sample_image(1600, 1200, seed=21)))
    body = {"pipeline_id": "rembg", "image_base64": image, "params": {}}
    answers = await asyncio.gather(
        *(server.post("/api/pipelines/fallback", body) for _ in range(20))
    )
    payloads = [a.json() for a in answers]
    assert {p["status"] for p in payloads} == {"completed"}
    assert len({p["result_path"] for p in payloads}) == 1
    assert stats.completed - before == 1


async def test_cache_hits_survive_a_restart_and_corrupt_files_are_recomputed(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path, preload_models=[])
    body = {
        "pipeline_id": "preprocessing",
        "image_base64": b64(encode(sample_image(seed=5))),
        "params": {"autocontrast": True, "rembg": "server"},
    }
    async with running(settings) as first:
        done = (await first.post("/api/pipelines/fallback", body)).json()
    assert done["status"] == "completed"
    async with running(settings) as second:
        known = (await second.http.get(f"/api/jobs/{done['job_id']}")).json()
        assert known["state"] == "completed" and known["result_path"] == done["result_path"]
        unknown = await second.http.get(f"/api/jobs/preprocessing-{'0' * 32}")
        assert unknown.status_code == 404 and "no job" in unknown.json()["detail"]
        again = (await second.post("/api/pipelines/preview", body)).json()
        assert again["status"] == "completed"
        assert (await second.http.get(f"/api/jobs/{again['job_id']}")).json()["cache_hit"] is True
        result = settings.outputs_root / "playground/preprocessing" / f"{done['job_id']}.png"
        good = result.read_bytes()
        result.write_bytes(good[: len(good) // 2])
        healed = (await second.post("/api/pipelines/fallback", body)).json()
        assert healed["status"] == "completed"
        assert (await second.http.get(f"/api/jobs/{healed['job_id']}")).json()["cache_hit"] is False
        assert result.read_bytes() == good


@pytest.fixture
async def one_worker(tmp_path: Path, gate: Gate) -> Any:
    """One worker, a queue of two, and the ``held`` pipeline of ``gate`` beside the real ones."""
    settings = make_settings(tmp_path, workers=1, queue_size=2, preload_models=["u2netp"])
    async with running(settings, {**registry.PIPELINES, "held": gate.pipeline}) as srv:
        await srv.ready()
        yield srv


class HoldParams(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Test op: no params; it holds its worker until the gate opens."""


class Gate:
    """A test pipeline, ``held``, whose op keeps its worker until :attr:`opened` is set:
    a queue that stays put while a test looks at it. The op checks its cancellation
    between waits, as a long op should."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        hold = OpSpec("hold", HoldParams, self.hold, client=False, summary="holds its worker")
        self.pipeline = registry.make_pipeline(
            "held", "1", "holds its worker", ("hold",), flat=True, table={"hold": hold}
        )

    def hold(self, image: Image.Image, params: HoldParams, ctx: OpContext) -> Image.Image:
        for _ in range(3000):  # at most a minute: a test that forgets the gate fails
            if self.opened.wait(0.02):
                return image
            ctx.check_cancelled()
        raise RuntimeError("the gate was never opened")

    @staticmethod
    def body(task_id: str = "blocker") -> dict[str, Any]:
        return {"pipeline_id": "held", "image_base64": unique_png(), "taskId": task_id}

    @contextlib.asynccontextmanager
    async def holding(self, srv: Server) -> AsyncIterator[str]:
        """``srv``'s only worker runs a held job until the block ends (then it completes)."""
        job_id = (await srv.post(PREVIEW, self.body())).json()["job_id"]
        await srv.job_in(job_id, "running")
        try:
            yield job_id
        finally:
            self.opened.set()
        assert (await srv.ended(job_id))["state"] == "completed"


@pytest.fixture
def gate() -> Iterator[Gate]:
    found = Gate()
    yield found
    found.opened.set()  # no worker is left holding


async def test_full_queue_gives_429_with_retry_after(one_worker: Server, gate: Gate) -> None:
    async with gate.holding(one_worker):
        answers = [
            await one_worker.post(PREVIEW, dict(rembg_body(seed), params={"rembg": "server"}))
            for seed in range(40, 44)
        ]
        assert [a.status_code for a in answers] == [200, 200, 429, 429]  # queue_size=2
    refused = answers[2].json()
    assert refused["code"] == "queue_full" and "queue full" in refused["detail"]
    assert int(answers[2].headers["retry-after"]) >= 1
    for answer in answers[:2]:
        assert (await one_worker.ended(answer.json()["job_id"]))["state"] == "completed"


async def test_cancel_a_queued_job_and_supersede_by_task(one_worker: Server, gate: Gate) -> None:
    async with gate.holding(one_worker):
        queued = (await one_worker.post(PREVIEW, dict(rembg_body(51), taskId="drag"))).json()
        view = await one_worker.job(queued["job_id"])
        assert view["state"] == "queued" and view["position"] == 0 and view["eta_ms"] > 0
        newer = (await one_worker.post(PREVIEW, dict(rembg_body(52), taskId="drag"))).json()
        assert (await one_worker.ended(queued["job_id"]))["state"] == "cancelled"
        cancelled = await one_worker.http.delete(
            f"/api/jobs/{newer['job_id']}", params={"taskId": "drag"}
        )
        assert cancelled.json()["state"] == "cancelled"


async def test_cancel_keeps_a_job_another_task_still_wants(one_worker: Server, gate: Gate) -> None:
    body = rembg_body(61)
    async with gate.holding(one_worker):
        a = (await one_worker.post(PREVIEW, dict(body, taskId="tab-a"))).json()
        b = (await one_worker.post(PREVIEW, dict(body, taskId="tab-b"))).json()
        assert a["job_id"] == b["job_id"]
        view = (
            await one_worker.http.delete(f"/api/jobs/{a['job_id']}", params={"taskId": "tab-a"})
        ).json()
        assert view["state"] == "queued"
    assert (await one_worker.ended(a["job_id"]))["state"] == "completed"


class ExplodeParams(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Test op: raises, or sleeps past the job budget."""

    mode: str = "raise"


def explode(image: Image.Image, params: ExplodeParams, ctx: OpContext) -> Image.Image:
    if params.mode == "raise":
        raise ValueError("the op blew up on purpose")
    threading.Event().wait(1.0)
    return image


FAULTY = registry.make_pipeline(
    "faulty",
    "1",
    "fails",
    ("explode",),
    flat=True,
    table={"explode": OpSpec("explode", ExplodeParams, explode, client=False, summary="fails")},
)
"""A pipeline of one op that fails on purpose, served beside the real ones."""


async def test_a_failing_op_fails_its_job_and_the_pool_keeps_serving(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, preload_models=[], job_timeout_s=0.3)
    async with running(settings, {**registry.PIPELINES, "faulty": FAULTY}) as srv:
        image = b64(encode(sample_image()))
        failed = (
            await srv.post(
                "/api/pipelines/fallback", {"pipeline_id": "faulty", "image_base64": image}
            )
        ).json()
        assert failed["status"] == "failed"
        assert "ValueError: the op blew up on purpose" in failed["detail"]
        slow = (
            await srv.post(
                "/api/pipelines/fallback",
                {"pipeline_id": "faulty", "image_base64": image, "params": {"mode": "sleep"}},
            )
        ).json()
        assert slow["status"] == "failed" and "time budget" in slow["detail"]
        ok = (
            await srv.post(
                "/api/pipelines/fallback",
                {"pipeline_id": "preprocessing", "image_base64": image, "params": {"flip": True}},
            )
        ).json()
        assert ok["status"] == "completed"


def test_model_home_fixture_is_real() -> None:
    assert (MODEL_HOME / "u2netp.onnx").stat().st_size == 4574861


async def test_progress_is_coalesced_to_ten_frames_a_second(server: Server) -> None:
    """Nine fast ops report nine steps; subscribers get at most one frame per 0.1 s."""
    seen: list[tuple[float, schemas.Progress]] = []

    def listen(event: JobEvent) -> None:
        if isinstance(event.frame, schemas.Progress):
            seen.append((time.monotonic(), event.frame))

    server.state.jobs.listeners.append(listen)
    try:
        params: dict[str, Any] = {op: True for op in registry.PREPROCESSING_OPS}
        params["resize"] = {"width": 64}
        body = {
            "pipeline_id": "preprocessing",
            "params": params,
            "image_base64": b64(encode(sample_image(seed=77))),
        }
        answer = (await server.post("/api/pipelines/fallback", body)).json()
    finally:
        server.state.jobs.listeners.remove(listen)
    assert answer["status"] == "completed"
    mine = [(at, frame) for at, frame in seen if frame.job_id == answer["job_id"]]
    assert 1 <= len(mine) < len(registry.PREPROCESSING_OPS)
    gaps = [later[0] - earlier[0] for earlier, later in itertools.pairwise(mine)]
    assert all(gap >= 0.09 for gap in gaps), gaps


async def test_requests_joined_to_a_job_refused_at_decode_do_not_hang(server: Server) -> None:
    truncated = encode(sample_image(1600, 1200, seed=22))
    body = {"pipeline_id": "rembg", "image_base64": b64(truncated[: len(truncated) // 2])}
    answers = await asyncio.wait_for(
        asyncio.gather(*(server.post("/api/pipelines/fallback", body) for _ in range(5))),
        timeout=20,
    )
    for answer in answers:
        if answer.status_code == 200:  # joined the first one, then told how it ended
            assert answer.json()["status"] == "failed"
        else:
            assert answer.status_code == 422
        assert "could not be" in answer.json()["detail"]
    assert any(a.status_code == 422 for a in answers)


# --- cancel, withdraw, supersede: every follower hears exactly one terminal frame ---------

TERMINAL = (schemas.Completed, schemas.Failed, schemas.Cancelled)


def terminal_frames(c: Client, job_id: str | None) -> list[schemas.JobFrame]:
    return [f for f in c.job_frames(job_id) if isinstance(f, TERMINAL)]


async def test_a_joiner_cannot_cancel_the_job_for_the_one_who_asked_first(
    one_worker: Server, gate: Gate
) -> None:
    body = rembg_body(71)
    async with (
        client(one_worker.ws_url) as alice,
        client(one_worker.ws_url) as bob_socket,
        client(one_worker.ws_url) as mallory,
    ):
        async with gate.holding(one_worker):
            ack = await alice.ack({"type": "submit", "taskId": "alice-secret", **body})
            await bob_socket.ack({"type": "subscribe", "taskId": "bob"})
            bob = (await one_worker.post(PREVIEW, dict(body, taskId="bob"))).json()
            assert bob["job_id"] == ack.job_id  # the content hash told Bob Alice's job id

            outright = await one_worker.http.delete(f"/api/jobs/{ack.job_id}")
            assert outright.status_code == 403 and "taskId" in outright.json()["detail"]
            await mallory.ack({"type": "subscribe", "job_id": ack.job_id})
            over_ws = await mallory.request({"type": "cancel", "job_id": ack.job_id})
            assert isinstance(over_ws, schemas.Error) and "your own interest" in over_ws.detail
            mine = await one_worker.http.delete(f"/api/jobs/{ack.job_id}", params={"taskId": "bob"})
            assert mine.json()["state"] == "queued"

        gone = await bob_socket.wait(schemas.Cancelled, lambda f: f.job_id == ack.job_id)
        assert gone.taskId == "bob" and gone.detail == "cancelled by the client"
        done = await alice.wait(schemas.Completed, lambda f: f.job_id == ack.job_id, timeout=60)
        assert done.taskId == "alice-secret"
        await alice.barrier()
        await bob_socket.barrier()
        assert terminal_frames(alice, ack.job_id) == [done]
        assert terminal_frames(bob_socket, ack.job_id) == [gone]


async def test_an_outright_cancel_needs_the_token(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, workers=1, preload_models=["u2netp"], token="s3cret")
    auth = {"authorization": "Bearer s3cret"}
    async with running(settings) as srv:
        await srv.ready()
        await srv.post("/api/pipelines/preview", dict(rembg_body(72), taskId="b"), headers=auth)
        queued = await srv.post(
            "/api/pipelines/preview", dict(rembg_body(73), taskId="a"), headers=auth
        )
        job_id = queued.json()["job_id"]
        cancelled = await srv.http.delete(f"/api/jobs/{job_id}", headers=auth)
        assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"


async def test_a_superseded_job_ends_cancelled_for_its_followers(
    one_worker: Server, gate: Gate
) -> None:
    async with gate.holding(one_worker), client(one_worker.ws_url) as tab:
        await tab.ack({"type": "subscribe", "taskId": "drag"})
        older = (
            await one_worker.post("/api/pipelines/preview", dict(rembg_body(75), taskId="drag"))
        ).json()
        newer = (
            await one_worker.post("/api/pipelines/preview", dict(rembg_body(76), taskId="drag"))
        ).json()
        end = await tab.wait(schemas.Cancelled, lambda f: f.job_id == older["job_id"])
        assert end.taskId == "drag" and end.detail and "superseded" in end.detail
        cancel = await one_worker.http.delete(
            f"/api/jobs/{newer['job_id']}", params={"taskId": "drag"}
        )
        assert cancel.json()["state"] == "cancelled"
        last = await tab.wait(schemas.Cancelled, lambda f: f.job_id == newer["job_id"])
        assert last.taskId == "drag"
        await tab.barrier()
        for job_id in (older["job_id"], newer["job_id"]):
            kinds = [type(f).__name__ for f in tab.job_frames(job_id)]
            assert kinds == ["Queued", "Cancelled"], kinds


async def test_cancel_then_resubmit_runs_the_new_request(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, preload_models=[], workers=1)
    async with running(settings, {**registry.PIPELINES, "faulty": FAULTY}) as srv:
        body = {
            "pipeline_id": "faulty",
            "image_base64": b64(encode(sample_image(seed=77))),
            "params": {"mode": "sleep"},  # one second in an op that cannot be interrupted
        }
        first = (await srv.post("/api/pipelines/preview", dict(body, taskId="carol"))).json()
        await srv.job_in(first["job_id"], "running")
        cancel = await srv.http.delete(f"/api/jobs/{first['job_id']}", params={"taskId": "carol"})
        assert cancel.json()["state"] == "cancelled"  # at once, not when the op returns
        again = (await srv.post("/api/pipelines/fallback", dict(body, taskId="carol-2"))).json()
        assert again["status"] == "completed", again


# --- decoding: on the job's worker, after the queue admitted it --------------------------


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the threads that decoded request images, in order (a spy on the real
    ``images.decode``, which still does the work)."""
    threads: list[str] = []
    real = images.decode

    def spy(data: bytes, limits: images.Limits, field: str = "image") -> Image.Image:
        threads.append(threading.current_thread().name)
        return real(data, limits, field=field)

    monkeypatch.setattr(images, "decode", spy)
    return threads


async def test_a_full_queue_refuses_before_decoding_and_jobs_decode_on_their_worker(
    one_worker: Server, gate: Gate, decodes: list[str]
) -> None:
    async with gate.holding(one_worker):
        answers = [await one_worker.post(PREVIEW, rembg_body(80 + i)) for i in range(2)]
        assert [a.status_code for a in answers] == [200, 200]
        before = len(decodes)
        refused = await one_worker.post(PREVIEW, rembg_body(84))
        assert refused.status_code == 429
        assert len(decodes) == before  # refused on what it was sent, never decoded
    for answer in answers:
        await one_worker.ended(answer.json()["job_id"])
    assert len(decodes) == 3  # the held job's image and the two queued ones
    assert decodes and all(name.startswith("playground-worker-") for name in decodes)


async def test_one_client_cannot_take_the_whole_queue(tmp_path: Path, gate: Gate) -> None:
    settings = make_settings(
        tmp_path, workers=1, queue_size=6, client_queue_share=3, preload_models=["u2netp"]
    )
    async with running(settings, {**registry.PIPELINES, "held": gate.pipeline}) as srv:
        await srv.ready()
        other_address = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
        async with (
            httpx.AsyncClient(base_url=srv.url, transport=other_address) as other,
            gate.holding(srv),
        ):
            greedy = [await srv.post(PREVIEW, rembg_body(90 + i)) for i in range(4)]
            codes = [a.status_code for a in greedy]
            assert codes == [200, 200, 200, 429], codes  # its share: 3 places in the queue
            refusal = greedy[3]
            assert refusal.json()["code"] == "client_queue_full"
            assert int(refusal.headers["retry-after"]) >= 1
            fair = await other.post(
                PREVIEW,
                content=msgspec.json.encode(rembg_body(96)),
                headers={"content-type": "application/json"},
            )
            assert fair.status_code == 200, fair.text  # the queue still has room for others
        for answer in [*greedy[:3], fair]:
            assert (await srv.ended(answer.json()["job_id"]))["state"] == "completed"


async def test_a_newer_request_of_a_task_stops_its_running_job(
    one_worker: Server, gate: Gate
) -> None:
    first = (await one_worker.post(PREVIEW, gate.body(task_id="d"))).json()
    await one_worker.job_in(first["job_id"], "running")
    newer = (await one_worker.post(PREVIEW, dict(rembg_body(98), taskId="d"))).json()
    stopped = await one_worker.job(first["job_id"])
    assert stopped["state"] == "cancelled" and "superseded" in stopped["detail"]
    # The gate stays shut: the held op stopped at its check and freed the only worker.
    assert (await one_worker.ended(newer["job_id"]))["state"] == "completed"
