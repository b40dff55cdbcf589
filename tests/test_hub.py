"""The WebSocket hub over a real uvicorn with real clients (``docs/protocol.md``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
from websockets.exceptions import InvalidStatus

from playground_rt import schemas
from playground_rt.hub.replay import DEFAULT_CAPACITY
from playground_rt.jobs.job import JobEvent

from .conftest import Server, make_settings, running
from .hubfixtures import (
    JOB_FRAMES,
    client,
    rembg_submit,
    stuck_client,
    unique_png,
    until,
)
from .procserver import Redis

TERMINAL = schemas.Completed | schemas.Failed | schemas.Cancelled
FAKE_JOB = "rembg-" + "0" * 32


@pytest.fixture(scope="module")
async def hub_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    async with running(make_settings(tmp_path_factory.mktemp("hub"))) as srv:
        await srv.ready()
        yield srv


@pytest.fixture(scope="module")
async def one_worker(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    async with running(make_settings(tmp_path_factory.mktemp("one"), workers=1)) as srv:
        await srv.ready()
        yield srv


def terminals(frames: list[schemas.JobFrame]) -> list[schemas.JobFrame]:
    return [f for f in frames if isinstance(f, TERMINAL)]


def assert_one_stream(frames: list[schemas.JobFrame], last: type[schemas.JobFrame]) -> None:
    """Queued first, the terminal frame last and alone, seq increasing."""
    kinds = [type(f).__name__ for f in frames]
    assert isinstance(frames[-1], last), kinds
    assert len(terminals(frames)) == 1, kinds
    seqs = [f.seq for f in frames]
    assert seqs == sorted(set(seqs)), seqs


# --- jobs end to end ----------------------------------------------------------------------


async def test_rembg_job_streams_in_order_with_one_terminal_frame(hub_server: Server) -> None:
    async with client(hub_server.ws_url) as c:
        ack = await c.ack(rembg_submit("task-e2e"))
        assert ack.taskId == "task-e2e"
        assert ack.job_id and ack.job_id.startswith("rembg-")
        assert ack.routed_backend == "server-rembg" and ack.cache_key
        done = await c.wait(schemas.Completed, lambda f: f.job_id == ack.job_id)
        await c.barrier()
    frames = c.job_frames(ack.job_id)
    assert isinstance(frames[0], schemas.Queued)
    assert any(isinstance(f, schemas.Progress) for f in frames)
    assert_one_stream(frames, schemas.Completed)
    assert {f.taskId for f in frames} == {"task-e2e"}
    assert c.frames.index(ack) < c.frames.index(frames[0])
    every = [f.seq for f in c.frames]
    assert every == sorted(set(every)), "seq strictly increasing on the socket"
    assert {f.epoch for f in c.frames} == {hub_server.state.hub.epoch}
    assert not done.cache_hit and "ops" in done.durations
    result = await hub_server.http.get(done.result_url)
    assert result.status_code == 200 and result.content.startswith(b"\x89PNG")


async def test_cache_hit_completes_once_after_the_ack(hub_server: Server) -> None:
    submit = rembg_submit()  # no taskId: the hub makes one and returns it in the ack
    async with client(hub_server.ws_url) as first:
        job_id = (await first.ack(submit)).job_id
        await first.wait(schemas.Completed, lambda f: f.job_id == job_id)
    async with client(hub_server.ws_url) as again:
        ack = await again.ack(submit)
        assert ack.job_id == job_id and ack.taskId and ack.taskId.startswith("ws-")
        await again.barrier()
    frames = again.job_frames(job_id)
    assert [type(f) for f in frames] == [schemas.Completed], frames
    hit = frames[0]
    assert isinstance(hit, schemas.Completed) and hit.cache_hit and hit.taskId == ack.taskId
    assert again.frames.index(ack) < again.frames.index(hit) and ack.seq < hit.seq


def coalesced(metrics: str) -> float:
    """``playground_rt_cache_requests_total{result="coalesced"}`` (absent until the first)."""
    lines = [x for x in metrics.splitlines() if 'result="coalesced"' in x and "_total" in x]
    return float(lines[0].split()[-1]) if lines else 0.0


async def test_a_websocket_submit_that_joins_a_run_is_counted_as_coalesced(
    hub_server: Server,
) -> None:
    """REST and WebSocket share one submission path: a join is a ``coalesced`` request
    whichever way it came in."""
    before = coalesced((await hub_server.http.get("/metrics")).text)
    submit = rembg_submit()
    async with client(hub_server.ws_url) as c:
        # back to back: the socket's frames are handled in order, the second while the
        # first's model run (tens of ms at least) is still queued or running
        await c.send({**submit, "taskId": "join-a", "ref": "a"})
        await c.send({**submit, "taskId": "join-b", "ref": "b"})
        first = await c.wait(schemas.Ack, lambda f: f.ref == "a")
        second = await c.wait(schemas.Ack, lambda f: f.ref == "b")
        assert first.job_id and second.job_id == first.job_id
        await c.wait(schemas.Completed, lambda f: f.job_id == first.job_id)
    after = coalesced((await hub_server.http.get("/metrics")).text)
    assert after - before == 1


async def test_rest_preview_with_task_id_streams_to_its_subscribers(hub_server: Server) -> None:
    async with client(hub_server.ws_url) as c:
        await c.ack({"type": "subscribe", "taskId": "rest-task"})
        body = {
            "pipeline_id": "rembg",
            "image_base64": unique_png(),
            "params": {"strength": 0.85},
            "taskId": "rest-task",
        }
        response = await hub_server.post("/api/pipelines/preview", body)
        assert response.status_code == 200, response.text
        job_id = response.json()["job_id"]
        await c.wait(schemas.Completed, lambda f: f.job_id == job_id)
        await c.barrier()
    frames = c.job_frames(job_id)
    assert_one_stream(frames, schemas.Completed)
    assert {f.taskId for f in frames} == {"rest-task"}

    # a job_id follower gets the same frames, and never learns whose task it was
    async with client(hub_server.ws_url) as other:
        await other.ack({"type": "resume", "last_seq": 0, "job_ids": [job_id]})
    replayed = other.job_frames(job_id)
    assert [f.seq for f in replayed] == [f.seq for f in frames]
    assert {f.taskId for f in replayed} == {None}
    assert not any(isinstance(f, schemas.Gap) for f in other.frames)


async def test_cancel_a_queued_job(one_worker: Server) -> None:
    srv = one_worker
    async with client(srv.ws_url) as c:
        acks = [await c.ack(rembg_submit(f"cancel-{i}")) for i in range(5)]
        by_id, by_task = acks[-1], acks[-2]
        await c.ack({"type": "cancel", "job_id": by_id.job_id, "taskId": by_id.taskId})
        await c.ack({"type": "cancel", "taskId": by_task.taskId})
        ids = {ack.job_id for ack in acks}
        await until(lambda: len(ids & {f.job_id for f in c.frames if isinstance(f, TERMINAL)}) == 5)
        await c.barrier()
        for ack in acks[:-2]:
            assert_one_stream(c.job_frames(ack.job_id), schemas.Completed)
        for ack in (by_id, by_task):
            frames = c.job_frames(ack.job_id)
            assert_one_stream(frames, schemas.Cancelled)
            assert not any(isinstance(f, schemas.Progress) for f in frames), "it never ran"
            view = (await srv.http.get(f"/api/jobs/{ack.job_id}")).json()
            assert view["state"] == "cancelled"


# --- resume -------------------------------------------------------------------------------


async def drop_mid_job(srv: Server, task_id: str) -> tuple[str, list[schemas.ServerFrame]]:
    """Submit a job, drop the connection right after the ack, wait for the job to end."""
    async with client(srv.ws_url) as c:
        ack = await c.ack(rembg_submit(task_id))
        assert c.ws.transport is not None and ack.job_id
        c.ws.transport.abort()  # the network drops: no close handshake
        seen = list(c.frames)
    job_id = ack.job_id
    await until(lambda: srv.state.jobs.get(job_id).terminal, 30, "the job finished")
    return job_id, seen


def buffered(srv: Server, job_id: str) -> list[int]:
    return [e.seq for e in srv.state.hub.replay.after(0) if e.job_id == job_id]


async def test_resume_replays_what_a_dropped_socket_missed(one_worker: Server) -> None:
    job_id, seen = await drop_mid_job(one_worker, "resume-1")
    last_seq = max(f.seq for f in seen)
    async with client(one_worker.ws_url) as back:
        epoch = one_worker.state.hub.epoch
        await back.ack(
            {"type": "resume", "last_seq": last_seq, "epoch": epoch, "taskIds": ["resume-1"]}
        )
        await back.barrier()
    missed = back.job_frames(job_id)
    assert missed and isinstance(missed[-1], schemas.Completed)
    assert all(f.seq > last_seq and f.taskId == "resume-1" for f in missed)
    got = [f.seq for f in seen + back.frames if isinstance(f, JOB_FRAMES)]
    assert sorted(got) == buffered(one_worker, job_id), "nothing lost, nothing twice"
    assert not any(isinstance(f, schemas.Gap) for f in back.frames)


async def test_resume_from_another_epoch_gets_a_gap(one_worker: Server) -> None:
    job_id, _ = await drop_mid_job(one_worker, "resume-2")
    async with client(one_worker.ws_url) as other:
        await other.ack(
            {"type": "resume", "last_seq": 5, "epoch": "0" * 16, "taskIds": ["resume-2"]}
        )
    gap = other.frames[-2]
    assert isinstance(gap, schemas.Gap) and gap.detail and "epoch" in gap.detail
    # what this epoch still has for the task comes first
    assert [f.seq for f in other.job_frames(job_id)] == buffered(one_worker, job_id)


async def test_resume_past_the_buffer_gets_a_gap(one_worker: Server) -> None:
    job_id, seen = await drop_mid_job(one_worker, "resume-3")
    last_seq, hub = max(f.seq for f in seen), one_worker.state.hub
    for step in range(DEFAULT_CAPACITY + 10):
        frame = schemas.Progress(job_id=FAKE_JOB, stage="x", step=step, total=1)
        hub.publish_job(JobEvent(frame, frozenset()))
    async with client(one_worker.ws_url) as late:
        resume = {"type": "resume", "last_seq": last_seq, "epoch": hub.epoch}
        await late.ack(dict(resume, taskIds=["resume-3"]))
    gap = late.frames[-2]
    assert isinstance(gap, schemas.Gap) and gap.from_seq == last_seq
    assert gap.oldest_seq > last_seq and late.job_frames(job_id) == []


async def test_a_resume_longer_than_the_outbox_is_paged(hub_server: Server) -> None:
    """FINDINGS D7: a resume matching more frames than the 256-frame outbox closed the
    socket 4008 with nothing delivered, on every retry. Now every frame arrives, in seq
    order, before the ack, and the socket stays open."""
    srv = hub_server
    tasks = [f"page-{i}" for i in range(120)]
    for batch in range(0, len(tasks), 12):
        bodies = [
            {
                "pipeline_id": "preprocessing",
                "image_base64": unique_png((64, 48)),
                "params": {"equalize": True},
                "taskId": task,
            }
            for task in tasks[batch : batch + 12]
        ]
        answers = await asyncio.gather(*(srv.post("/api/pipelines/fallback", b) for b in bodies))
        assert all(a.json()["status"] == "completed" for a in answers)
    wanted = set(tasks)
    expected = [e.seq for e in srv.state.hub.replay.after(0) if e.task_ids & wanted]
    assert len(expected) > srv.settings.ws_send_queue, "enough frames to overflow the outbox"
    async with client(srv.ws_url) as c:
        ack = await c.ack({"type": "resume", "last_seq": 0, "taskIds": tasks})
        before_ack = c.frames[: c.frames.index(ack)]
        await c.barrier()
        assert c.close_code is None
    got = [f for f in before_ack if isinstance(f, JOB_FRAMES)]
    assert [f.seq for f in got] == expected
    assert {f.taskId for f in got} == wanted
    assert sum(isinstance(f, schemas.Completed) for f in got) == len(tasks)


# --- slow consumers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("queue", "pause", "reason"),
    [
        pytest.param(64, 0.005, "frames waiting", id="queue-overflow"),
        pytest.param(1 << 20, 0.02, "send took over", id="send-timeout"),
    ],
)
async def test_a_stuck_reader_is_evicted_and_a_fast_one_gets_every_frame(
    tmp_path: Path, queue: int, pause: float, reason: str
) -> None:
    settings = make_settings(
        tmp_path, preload_models=[], ws_send_timeout_s=0.5, ws_send_queue=queue
    )
    async with running(settings) as srv, client(srv.ws_url) as fast:
        hub = srv.state.hub
        subscribe = {"type": "subscribe", "job_id": FAKE_JOB}
        await fast.ack(subscribe)
        stuck = await stuck_client(srv.url, [subscribe])
        try:
            await until(lambda: sum(f"j:{FAKE_JOB}" in c.keys for c in hub.connections) == 2)
            slow = next(
                c for c in hub.connections if c.ws.scope["client"][1] == stuck.getsockname()[1]
            )
            step, pad = 0, "x" * 8000
            while not slow.closed:  # until the kernel's buffers and the transport's are full
                assert step < 5000, "the stuck socket was never evicted"
                progress = schemas.Progress(job_id=FAKE_JOB, stage=pad, step=step, total=0)
                hub.publish_job(JobEvent(progress, frozenset()))
                step += 1
                if step % 16 == 0:
                    await asyncio.sleep(pause)
            assert slow.close_code == 4008 and reason in slow.close_reason, slow.close_reason
            await fast.wait(schemas.Progress, lambda f: f.step == step - 1)
            assert fast.close_code is None  # the fast one stays
        finally:
            stuck.close()
    got = [f for f in fast.frames if isinstance(f, schemas.Progress)]
    assert [f.step for f in got] == list(range(step))  # every frame, in order


# --- bad input and limits -----------------------------------------------------------------

BAD_FRAMES = [
    pytest.param("{not json", "malformed JSON", None, id="malformed-json"),
    pytest.param("[1, 2]", "invalid frame", None, id="not-an-object"),
    pytest.param('{"type": "nope", "ref": "a"}', "invalid frame", "a", id="unknown-type"),
    pytest.param(
        '{"type": "resume", "last_seq": "x", "ref": "b"}', "$.last_seq", "b", id="wrong-type"
    ),
    pytest.param('{"type": "resume", "ref": "c"}', "last_seq", "c", id="missing-field"),
    pytest.param('{"type": "ping", "extra": 1, "ref": "d"}', "extra", "d", id="unknown-field"),
    pytest.param('{"type": "subscribe", "ref": "e"}', "needs taskId", "e", id="empty-subscribe"),
    pytest.param(
        '{"type": "subscribe", "taskId": "a b", "ref": "f"}', "$.taskId", "f", id="bad-task-id"
    ),
    pytest.param(
        f'{{"type": "cancel", "job_id": "{FAKE_JOB}", "ref": "g"}}', "no job", "g", id="unknown-job"
    ),
    pytest.param(
        '{"type": "submit", "pipeline_id": "nope", "image_base64": "AAAA", "ref": "h"}',
        "nope",
        "h",
        id="unknown-pipeline",
    ),
    pytest.param(
        '{"type": "submit", "pipeline_id": "rembg", "image_base64": "!!", "ref": "i"}',
        "base64",
        "i",
        id="bad-base64",
    ),
    pytest.param(b"\x00\xff", "malformed JSON", None, id="binary-garbage"),
    pytest.param(b'{"type": "ping", "ref": "\xff"}', "malformed JSON", None, id="bad-utf8"),
    pytest.param(
        '{"type": "submit", "pipeline_id": "rembg", "params": {"a": '
        + "[" * 5000
        + "]" * 5000
        + "}}",
        "nested too deeply",
        None,
        id="nested-too-deeply",
    ),
]


@pytest.mark.parametrize(("raw", "detail", "ref"), BAD_FRAMES)
async def test_a_bad_frame_gets_an_error_and_the_socket_stays_open(
    hub_server: Server, raw: str | bytes, detail: str, ref: str | None
) -> None:
    async with client(hub_server.ws_url) as c:
        await c.send(raw)
        error = await c.wait(schemas.Error)
        assert detail in error.detail, error.detail
        assert error.ref == ref
        await c.barrier()
        assert c.close_code is None


async def test_a_bug_while_handling_a_frame_is_logged_and_answered(
    hub_server: Server, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(*args: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(hub_server.state.jobs, "submit", broken)
    async with client(hub_server.ws_url) as c:
        answer = await c.request(rembg_submit("bug-1"))
        assert isinstance(answer, schemas.Error) and answer.code == "internal", answer
        await c.barrier()  # the held queue was released, the socket is open
    assert "boom" in caplog.text


async def test_an_oversize_frame_closes_4009(hub_server: Server) -> None:
    async with client(hub_server.ws_url) as c:
        await c.send("x" * (hub_server.settings.ws_max_frame_bytes + 1))
        assert await c.closed() == 4009


async def test_a_flood_gets_rate_limited_then_closed_4029(hub_server: Server) -> None:
    async with client(hub_server.ws_url) as c:
        for _ in range(400):
            await c.send('{"type": "ping"}')
        assert await c.closed() == 4029
    limited = [f for f in c.frames if isinstance(f, schemas.Error)]
    assert limited and limited[0].code == "rate_limited"


async def test_origin_token_and_socket_cap(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        preload_models=[],
        token="s3cret",
        allowed_origins=["http://app.example"],
        ws_max_connections=2,
    )
    async with running(settings) as srv:
        url, auth = srv.ws_url, {"Authorization": "Bearer s3cret"}
        with pytest.raises(InvalidStatus) as refused:
            async with client(url, origin="http://evil.example", additional_headers=auth):
                pass
        assert refused.value.response.status_code == 403
        for headers, target in (({}, url), ({"Authorization": "Bearer nope"}, url)):
            async with client(target, additional_headers=headers) as c:
                assert await c.closed() == 4001
        async with (
            client(url + "?token=s3cret", origin="http://app.example") as one,
            client(url, additional_headers=auth, origin=srv.url) as two,  # same origin
        ):
            await one.barrier()
            await two.barrier()
            async with client(url, additional_headers=auth) as three:
                assert await three.closed() == 1013


async def test_heartbeats_and_silent_clients_closed_4012(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, preload_models=[], ws_ping_interval_s=0.2)
    async with running(settings) as srv, client(srv.ws_url) as silent, client(srv.ws_url) as chatty:
        started = time.monotonic()
        while time.monotonic() - started < 0.8:
            await chatty.barrier()
            await asyncio.sleep(0.1)
        assert await silent.closed() == 4012
        assert any(isinstance(f, schemas.Pong) and f.ref is None for f in silent.frames)
        await chatty.barrier()
        assert chatty.close_code is None


async def test_telemetry_channel_never_shows_task_ids(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, preload_models=[], telemetry_interval_s=0.05)
    async with running(settings) as srv, client(srv.ws_url) as c:
        await c.ack({"type": "subscribe", "channel": "telemetry"})
        report = {"type": "telemetry", "taskId": "secret-task", "queue_depth": 3, "workers": 2}
        await c.ack(report)
        frame = await c.wait(schemas.Telemetry, lambda f: bool(f.clients))
        assert [r.queue_depth for r in frame.clients.values()] == [3]
        assert b"secret-task" not in msgspec.json.encode(frame)
        metrics = (await srv.http.get("/metrics")).text
        assert 'playground_rt_ws_frames_total{type="telemetry"}' in metrics


# --- scale-out ----------------------------------------------------------------------------


@pytest.fixture
async def redis(tmp_path: Path) -> AsyncIterator[Redis]:
    server = Redis(tmp_path)
    await server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.redis
async def test_two_servers_on_one_redis(tmp_path: Path, redis: Redis) -> None:
    a_settings = make_settings(tmp_path / "a", broker=redis.url, workers=1)
    b_settings = make_settings(tmp_path / "b", broker=redis.url, preload_models=[])
    async with running(a_settings) as a, running(b_settings) as b:
        await a.ready()
        async with client(a.ws_url) as on_a, client(b.ws_url) as on_b:
            await on_b.ack({"type": "subscribe", "taskId": "shared-1"})
            ack = await on_a.ack(rembg_submit("shared-1"))
            assert ack.job_id
            job_id = ack.job_id
            await on_b.wait(schemas.Completed, lambda f: f.job_id == job_id)
            await on_a.wait(schemas.Completed, lambda f: f.job_id == job_id)
            await on_b.barrier()
            seen_a, seen_b = on_a.job_frames(job_id), on_b.job_frames(job_id)
            assert_one_stream(seen_b, schemas.Completed)
            strip = [msgspec.structs.replace(f, seq=0, epoch="") for f in seen_a]
            assert [msgspec.structs.replace(f, seq=0, epoch="") for f in seen_b] == strip
            assert {f.epoch for f in seen_b} == {b.state.hub.epoch}

            # a cancel on b reaches the job queued on a
            acks = [await on_a.ack(rembg_submit(f"relay-{i}")) for i in range(3)]
            last = acks[-1]
            await on_b.ack({"type": "cancel", "job_id": last.job_id, "taskId": last.taskId})
            await on_a.wait(schemas.Cancelled, lambda f: f.job_id == last.job_id)


@pytest.mark.redis
async def test_redis_restart_local_sockets_keep_going(tmp_path: Path, redis: Redis) -> None:
    a_settings = make_settings(tmp_path / "a", broker=redis.url)
    b_settings = make_settings(tmp_path / "b", broker=redis.url, preload_models=[])
    async with running(a_settings) as a, running(b_settings) as b:
        await a.ready()
        brokers = [s.state.hub.broker for s in (a, b)]
        async with client(a.ws_url) as on_a, client(b.ws_url) as on_b:
            await on_b.ack({"type": "subscribe", "taskId": "after-restart"})
            redis.stop()
            await until(lambda: not any(k and k.connected.is_set() for k in brokers), 10)
            ack = await on_a.ack(rembg_submit("while-down"))
            await on_a.wait(schemas.Completed, lambda f: f.job_id == ack.job_id)

            await redis.start()
            await until(lambda: all(k and k.connected.is_set() for k in brokers), 15, "reconnected")
            gap = await on_b.wait(schemas.Gap)
            assert gap.detail and "broker" in gap.detail
            ack = await on_a.ack(rembg_submit("after-restart"))
            await on_b.wait(schemas.Completed, lambda f: f.job_id == ack.job_id)
