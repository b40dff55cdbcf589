"""The hub's bounded history of job frames, for ``resume``.

Entries are kept in seq order; the oldest goes when ``capacity`` is reached, and
``dropped_upto`` remembers the highest seq discarded, so a client that last saw seq ``n``
has missed nothing iff ``n >= dropped_upto``. Non-job frames (acks, telemetry, heartbeats)
are never buffered: they are not worth replaying, and they leave holes in the seq sequence
that mean nothing.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from playground_rt import schemas

DEFAULT_CAPACITY = 2048


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    frame: schemas.JobFrame
    """Stamped with seq and epoch, ``taskId`` None (set per recipient)."""
    task_ids: frozenset[str]
    withdrawn: bool = False
    """For ``task_ids`` only (they stopped following), not for the job id's followers."""

    @property
    def job_id(self) -> str:
        return self.frame.job_id

    def match(self, keys: set[str] | frozenset[str]) -> tuple[bool, str | None]:
        """Whether a socket subscribed to ``keys`` gets this frame, and with which taskId.

        A taskId subscription wins over a job_id one; a job_id subscriber never learns the
        taskIds of others (they are the capability that lets one follow a task).
        """
        for task_id in sorted(self.task_ids):
            if "t:" + task_id in keys:
                return True, task_id
        return not self.withdrawn and "j:" + self.job_id in keys, None


class ReplayBuffer:
    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self._entries: deque[Entry] = deque()
        self.dropped_upto = 0

    def __len__(self) -> int:
        return len(self._entries)

    def append(self, entry: Entry) -> None:
        assert not self._entries or entry.seq > self._entries[-1].seq, "seq must increase"
        self._entries.append(entry)
        if len(self._entries) > self.capacity:
            self.dropped_upto = self._entries.popleft().seq

    def oldest_seq(self, default: int) -> int:
        return self._entries[0].seq if self._entries else default

    def missed(
        self,
        seq: int,
        keys: set[str] | frozenset[str],
        before: frozenset[str],
        live_since: int | None,
    ) -> list[tuple[Entry, str | None]]:
        """What a socket following ``keys`` missed after ``seq``, with the taskId each frame
        carries for it: every match, less what it already got live (entries from
        ``live_since`` on that matched the keys it followed ``before`` this resume)."""
        found = []
        for entry in self.after(seq):
            wanted, task_id = entry.match(keys)
            if not wanted:
                continue
            if live_since is not None and entry.seq >= live_since and entry.match(before)[0]:
                continue
            found.append((entry, task_id))
        return found

    def after(self, seq: int) -> Iterator[Entry]:
        """Entries with a seq above ``seq``, oldest first."""
        entries = self._entries
        start = bisect_right(entries, seq, key=lambda e: e.seq)
        for index in range(start, len(entries)):
            yield entries[index]
