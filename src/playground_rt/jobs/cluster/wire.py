"""What crosses Redis: key names, the queued job's body, worker heartbeats, history entries."""

from __future__ import annotations

import msgspec

from playground_rt import schemas

PREFIX = "playground-rt:"
GROUP = "workers"
JOBS = PREFIX + "jobs"
HISTORY = PREFIX + "history"
DEAD = PREFIX + "dead"
QUEUE = PREFIX + "queue"
WORKERS = PREFIX + "workers"
INCARNATION = PREFIX + "incarnation"
DURATIONS = PREFIX + "durations"
DEAD_KEPT = 1000
"""Dead letters kept (``XADD MAXLEN ~``): what was given up, for an operator to look at."""


def job_key(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}"


def worker_key(name: str) -> str:
    return f"{PREFIX}worker:{name}"


class QueuedJob(msgspec.Struct, array_like=True):
    """A ``jobs`` entry's body (msgpack): everything a worker needs to run the job.

    The image travels as its bytes (bounded by ``max_image_bytes``), never as a path: the
    cache key hashes the bytes the web node read, and the worker checks that the job id
    still matches them (and the checkpoint), so a result is always stored under the key of
    what produced it. Workers need the outputs folder, not the data root.
    """

    job_id: str
    pipeline_id: str
    params: str
    """The plan's canonical params (JSON), exactly what the key hashes."""
    image: bytes
    checkpoint: str | None
    """``checkpoint_path`` as the client gave it, under the outputs root."""
    origin: str
    """The web node that queued it (logs)."""


_body_encoder = msgspec.msgpack.Encoder()
_body_decoder = msgspec.msgpack.Decoder(QueuedJob)


def encode_body(job: QueuedJob) -> bytes:
    return _body_encoder.encode(job)


def decode_body(data: bytes) -> QueuedJob:
    return _body_decoder.decode(data)


_frame_encoder = msgspec.json.Encoder()
_frame_decoder = msgspec.json.Decoder(schemas.JobFrame)
_task_ids_decoder = msgspec.json.Decoder(list[str])


def encode_frame(frame: schemas.JobFrame) -> bytes:
    """A job frame as history keeps it: no seq, epoch, taskId or cursor (each hub and
    recipient adds its own)."""
    return _frame_encoder.encode(
        msgspec.structs.replace(frame, seq=0, epoch="", taskId=None, cursor=None)
    )


def encode_task_ids(task_ids: frozenset[str] | set[str]) -> bytes:
    return _frame_encoder.encode(sorted(task_ids))


class HistoryEntry(msgspec.Struct, frozen=True):
    """One ``history`` entry: a job frame (its ``cursor`` set to the entry's id), the taskIds
    that follow the job, whether it is only a withdrawn task's notice, and the run it is
    about (the ``jobs`` entry id of that run; empty for a cache hit, which has none)."""

    frame: schemas.JobFrame
    task_ids: frozenset[str]
    withdrawn: bool
    run: str


def decode_history(entry_id: bytes, fields: dict[bytes, bytes]) -> HistoryEntry:
    """Raises ``msgspec.DecodeError`` (or ``KeyError``) for an entry that is not ours."""
    frame = _frame_decoder.decode(fields[b"f"])
    cursor = entry_id.decode()
    return HistoryEntry(
        msgspec.structs.replace(frame, cursor=cursor),
        frozenset(_task_ids_decoder.decode(fields[b"t"])),
        fields.get(b"w") == b"1",
        fields.get(b"r", b"").decode(),
    )


def stream_id(text: str | bytes) -> tuple[int, int]:
    """A stream id as a comparable pair (``"1719922337123-4"`` → ``(1719922337123, 4)``)."""
    if isinstance(text, bytes):
        text = text.decode()
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


_beat_encoder = msgspec.json.Encoder()
_beat_decoder = msgspec.json.Decoder(schemas.WorkerStatus)


def encode_beat(beat: schemas.WorkerStatus) -> bytes:
    return _beat_encoder.encode(beat)


def decode_beat(data: bytes) -> schemas.WorkerStatus:
    return _beat_decoder.decode(data)
