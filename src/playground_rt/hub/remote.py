"""The hub's side of remote mode: ``resume`` against the cluster's history.

``resume`` on another node (another ``epoch``) with a ``cursor``: the frames after it come
from the cluster's history (:meth:`~.feed.Feed.range`), those read while that ran from the
hub's own buffer, and all of them, in the history's order, get this hub's next seqs, so the
socket's ``seq`` keeps increasing and a later ``resume`` against this node is exact. A
``gap`` follows when frames after the cursor are gone (trimmed, or lost in a Redis restart).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol

import msgspec
from redis.exceptions import RedisError

from playground_rt import schemas
from playground_rt.hub.connection import Connection
from playground_rt.hub.replay import Entry, ReplayBuffer
from playground_rt.jobs.cluster import wire
from playground_rt.jobs.cluster.feed import Feed
from playground_rt.jobs.cluster.link import LOST


class Hub(Protocol):
    """What this module uses of ``fanout.Hub``, which calls it: a protocol, so that the
    two import one way."""

    seq: int
    epoch: str
    replay: ReplayBuffer

    def subscribe(self, conn: Connection, keys: set[str]) -> set[str]: ...
    def next_seq(self) -> int: ...
    def encode(self, frame: schemas.ServerFrame) -> str: ...
    def reply(self, conn: Connection, frame: schemas.ServerFrame) -> None: ...
    def gap(self, from_seq: int, detail: str) -> schemas.Gap: ...


CATCH_UP_S = 1.0
"""How long a ``resume`` waits for this node's feed to reach the client's cursor."""


async def replay(hub: Hub, feed: Feed, conn: Connection, frame: schemas.Resume) -> None:
    """``resume`` from another node: subscribe, replay after ``frame.cursor``, ``gap`` if
    incomplete (the caller sends the ``ack``)."""
    assert frame.cursor is not None
    after = wire.stream_id(frame.cursor)
    with contextlib.suppress(TimeoutError):  # this node may not have read that far yet
        async with asyncio.timeout(CATCH_UP_S):
            while wire.stream_id(feed.last_id or "0-0") < after and feed.connected.is_set():
                await asyncio.sleep(0.005)
    upto = feed.last_id or "0-0"
    seq0 = hub.seq
    try:
        past, complete = await feed.range(frame.cursor, upto)
    except (*LOST, RedisError):
        past, complete = [], False
    # From here on nothing awaits: no live frame can slip between the replay and the rest.
    before = frozenset(conn.keys)
    live_since = conn.live_since
    hub.subscribe(conn, {"t:" + t for t in frame.taskIds} | {"j:" + j for j in frame.job_ids})
    got_live = set()
    if live_since is not None:
        got_live = {e.frame.cursor for e in hub.replay.after(live_since - 1) if e.match(before)[0]}
    recent = [
        wire.HistoryEntry(e.frame, e.task_ids, e.withdrawn, "") for e in hub.replay.after(seq0)
    ]
    if hub.replay.dropped_upto > seq0:
        complete = False
    chosen: list[tuple[schemas.JobFrame, str | None]] = []
    seen: set[str] = set()
    for entry in [*past, *recent]:
        cursor = entry.frame.cursor
        if cursor is None or wire.stream_id(cursor) <= after:
            continue
        wanted, task_id = Entry(0, entry.frame, entry.task_ids, entry.withdrawn).match(conn.keys)
        if wanted and cursor not in got_live and cursor not in seen:
            seen.add(cursor)
            chosen.append((entry.frame, task_id))
    stamped = [(hub.next_seq(), job_frame, task_id) for job_frame, task_id in chosen]
    if stamped:
        conn.page(
            hub.encode(msgspec.structs.replace(f, seq=seq, epoch=hub.epoch, taskId=task_id))
            for seq, f, task_id in stamped
        )
    if not complete:
        detail = "frames after this cursor were discarded; refetch job state over REST"
        hub.reply(conn, hub.gap(frame.last_seq, detail))
