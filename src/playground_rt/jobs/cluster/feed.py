"""A web node's view of the cluster's ``history`` stream: the live feed and its past.

:class:`Feed` reads ``history`` in order with ``XREAD`` from the last id it handed on, so
losing the connection loses nothing: it reconnects with backoff and goes on from there
(Redis keeps the entries, with persistence even across its own restarts). What it cannot
recover it reports (``on_lost``): Redis came back empty (a restart without persistence), or
the entries after its last id were trimmed while it was away.

:meth:`Feed.range` reads the past for ``resume`` on another node: the entries after a
client's cursor, and whether that is all of them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import msgspec
from redis.exceptions import RedisError

from playground_rt.jobs.cluster import wire
from playground_rt.jobs.cluster.link import BACKOFF_S, BLOCK_MS, LOST, Link, pause, text

log = logging.getLogger("playground_rt.jobs.cluster")

BATCH = 256
RANGE_BATCH = 1000


class Feed:
    def __init__(
        self,
        link: Link,
        on_entry: Callable[[wire.HistoryEntry], None],
        on_lost: Callable[[str], None],
        on_state: Callable[[bool], None],
    ) -> None:
        self.link = link
        self._on_entry, self._on_lost, self._on_state = on_entry, on_lost, on_state
        self.last_id: str | None = None
        """The id of the last entry handed on (``"0-0"``: none yet)."""
        self.lost_before = (0, 0)
        """Entries older than this may be missing from ``history`` (data lost in Redis)."""
        self.connected = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        backoff = BACKOFF_S[0]
        while not stop.is_set():
            try:
                await self._session()
            except LOST as exc:
                if self.connected.is_set():
                    log.warning("history feed lost Redis (%s); reconnecting", exc)
            except RedisError:  # a server-side error: log it, try again later
                log.exception("history feed failed")
            if self.connected.is_set():
                self.connected.clear()
                self._on_state(False)
                backoff = BACKOFF_S[0]
            await pause(stop, backoff)
            backoff = min(backoff * 2, BACKOFF_S[1])

    async def _session(self) -> None:
        redis = self.link.redis
        restarted = await self.link.check_incarnation()
        if self.last_id is None:
            self.last_id = await self._tail()
        elif restarted:
            self.last_id = "0-0"
            self.lost_before = await self._now()
            self._on_lost("Redis restarted without its data: frames may be missing")
        elif await self._trimmed_after(self.last_id):
            self._on_lost("frames were trimmed from the history while this node was away")
        await self.link.ensure_group()
        self.connected.set()
        self._on_state(True)
        while True:
            reply: Any = await redis.xread(
                {wire.HISTORY: self.last_id}, count=BATCH, block=BLOCK_MS
            )
            for _stream, entries in reply or ():
                for entry_id, fields in entries:
                    self.last_id = text(entry_id)
                    self._hand_on(entry_id, fields)

    def _hand_on(self, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        try:
            entry = wire.decode_history(entry_id, fields)
        except (msgspec.DecodeError, KeyError, UnicodeDecodeError) as exc:
            log.warning("ignored a malformed history entry %s: %s", entry_id, exc)
            return
        try:
            self._on_entry(entry)
        except Exception:  # a bug in delivery must not stop the feed
            log.exception("handling history entry %s failed", entry_id)

    async def _tail(self) -> str:
        last: Any = await self.link.redis.xrevrange(wire.HISTORY, count=1)
        return text(last[0][0]) if last else "0-0"

    async def _now(self) -> tuple[int, int]:
        seconds, micros = await self.link.redis.time()
        return int(seconds) * 1000 + int(micros) // 1000, 0

    async def _trimmed_after(self, last_id: str) -> bool:
        """Whether entries after ``last_id`` were deleted (trimmed) from ``history``."""
        try:
            info: Any = await self.link.redis.xinfo_stream(wire.HISTORY)
        except RedisError as exc:
            if "no such key" in str(exc):
                return False
            raise
        deleted = info.get("max-deleted-entry-id")
        return deleted is not None and wire.stream_id(deleted) > wire.stream_id(last_id)

    async def range(self, after: str, upto: str) -> tuple[list[wire.HistoryEntry], bool]:
        """The entries with ``after < id <= upto``, and whether that is all there were
        (False when some were trimmed, or lost in a Redis restart)."""
        complete = wire.stream_id(after) >= self.lost_before and not await self._trimmed_after(
            after
        )
        found: list[wire.HistoryEntry] = []
        start = "(" + after
        while wire.stream_id(upto) > wire.stream_id(after):  # (an empty range reads nothing)
            batch: Any = await self.link.redis.xrange(
                wire.HISTORY, min=start, max=upto, count=RANGE_BATCH
            )
            for entry_id, fields in batch:
                try:
                    found.append(wire.decode_history(entry_id, fields))
                except (msgspec.DecodeError, KeyError, UnicodeDecodeError):
                    continue
            if len(batch) < RANGE_BATCH:
                break
            start = "(" + text(batch[-1][0])
        return found, complete
