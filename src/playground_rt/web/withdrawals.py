"""A socket's ``cancel``: it withdraws the socket's own interest in a job, never anyone else's.

With a ``taskId`` (a capability: only its holder knows it), that task's interest in
``job_id``, or in every job it follows. With only ``job_id``, the interests of the taskIds
this socket follows, and the socket stops following the job's id. A job that ends up with no
interest is cancelled (``jobs``). Where the job runs elsewhere, the withdrawal goes there:
through the hub's broker when processes share one (a process that had no such interest
relays it, and the others apply it with :func:`relayed`), or in Redis in remote mode, where
the worker sees it between ops. The answers are the same in every mode.
"""

from __future__ import annotations

import logging

from playground_rt import errors
from playground_rt.hub.connection import Connection
from playground_rt.hub.fanout import Hub
from playground_rt.jobs.cluster.remote import RemoteJobs
from playground_rt.jobs.manager import JobManager

log = logging.getLogger("playground_rt.web.withdrawals")


async def cancel(
    hub: Hub, jobs: JobManager, conn: Connection, job_id: str | None, task_id: str | None
) -> None:
    """A client's ``cancel`` frame (see the module docstring); raises what the client is
    told (``BadRequest``, ``UnknownJob``)."""
    if job_id is None and task_id is None:
        raise errors.BadRequest("cancel needs job_id or taskId")
    if isinstance(jobs, RemoteJobs):
        await _in_redis(hub, jobs, conn, job_id, task_id)
        return
    if task_id is not None:
        pairs = [(job_id, task_id)]
    else:
        assert job_id is not None
        own = _own_tasks(conn)
        mine = jobs.follows(job_id, own)
        hub.unsubscribe(conn, {"j:" + job_id})
        if not mine and not (own and hub.relaying):
            jobs.get(job_id)  # UnknownJob when it never was here
            raise _not_yours(job_id)
        pairs = [(job_id, t) for t in sorted(mine or own)]
    for pair in pairs:
        if not await _here(jobs, *pair, relaying=hub.relaying):
            hub.relay_cancel(*pair)


async def relayed(jobs: JobManager, job_id: str | None, task_id: str) -> None:
    """Another process's relayed withdrawal: applied when this process has that interest."""
    try:
        if job_id is None:
            await jobs.withdraw_task(task_id)
        elif jobs.follows(job_id, {task_id}):
            await jobs.withdraw(job_id, task_id)
    except Exception:  # a task boundary: the broker's reader must go on
        log.exception("a relayed withdrawal failed")


async def _here(jobs: JobManager, job_id: str | None, task_id: str, relaying: bool) -> bool:
    """Withdraw in this process; False when none of its jobs had that interest."""
    if job_id is None:
        return bool(await jobs.withdraw_task(task_id))
    if not jobs.follows(job_id, {task_id}):
        if not relaying:
            jobs.get(job_id)  # UnknownJob unless it already finished here
        return False
    await jobs.withdraw(job_id, task_id)
    return True


async def _in_redis(
    hub: Hub, jobs: RemoteJobs, conn: Connection, job_id: str | None, task_id: str | None
) -> None:
    """Remote mode: the withdrawal runs in Redis, wherever the job runs."""
    if task_id is not None:
        if job_id is None:
            await jobs.withdraw_task(task_id)
        elif await jobs.withdraw_status(job_id, task_id) == "unknown":
            raise errors.UnknownJob(f"no job {job_id!r}")
        return
    assert job_id is not None
    hub.unsubscribe(conn, {"j:" + job_id})
    statuses = {await jobs.withdraw_status(job_id, t) for t in sorted(_own_tasks(conn))}
    if statuses & {"withdrawn", "cancelled"}:
        return
    if statuses <= {"unknown"}:
        jobs.get(job_id)  # UnknownJob unless this node knew it
    raise _not_yours(job_id)


def _own_tasks(conn: Connection) -> set[str]:
    return {key[2:] for key in conn.keys if key.startswith("t:")}


def _not_yours(job_id: str) -> errors.BadRequest:
    return errors.BadRequest(
        f"this socket follows job {job_id!r} under no taskId of its own; "
        "cancel withdraws only your own interest (send your taskId)"
    )
