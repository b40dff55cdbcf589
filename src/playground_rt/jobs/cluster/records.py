"""Jobs a web node holds no proxy for, read from their records in Redis.

A web node knows the runs it was asked for (its proxies, ``remote``); any other job of the
cluster (queued by another node, or before a restart) is described from its record
(``wire.job_key``: state, detail, kind) and, while queued, its rank in the cluster's queue.
Its result, when completed, must be on this node's disk (the nodes share the outputs folder).
"""

from __future__ import annotations

from typing import Any

from playground_rt import errors
from playground_rt.jobs.cluster import wire
from playground_rt.jobs.cluster.link import LOST, Link, text
from playground_rt.jobs.job import Job, JobState, Prepared
from playground_rt.pipeline import images, registry
from playground_rt.pipeline.results import ResultStore


async def job(link: Link, store: ResultStore, job_id: str) -> Job:
    """The job ``job_id`` from its record (``UnknownJob`` when there is none, or when it
    completed without a result on this node's disk; ``NotReady`` while Redis is away)."""
    try:
        fields: dict[Any, Any] = await link.redis.hgetall(wire.job_key(job_id))
    except LOST as exc:
        raise errors.NotReady(f"the cluster's Redis is unreachable: {exc}") from None
    if not fields or job_id.rpartition("-")[0] not in registry.PIPELINES:
        raise errors.UnknownJob(f"no job {job_id!r} (finished jobs are kept for a while only)")
    pipeline_id, hex_digest = registry.split_job_id(job_id)
    plan = registry.get_pipeline(pipeline_id).plan({})
    cache_key = registry.cache_key(pipeline_id, hex_digest)
    prepared = Prepared(plan, images.Source(b"", ""), None, job_id, cache_key, (), (0, 0))
    found = Job(prepared, f"server-{pipeline_id}", state=JobState(text(fields[b"state"])))
    found.detail = text(fields[b"detail"]) if fields.get(b"detail") else None
    if found.state is JobState.COMPLETED:
        found.result_path = store.lookup(pipeline_id, job_id)
        if found.result_path is None:
            raise errors.UnknownJob(f"job {job_id!r} has no result on this node's disk")
    return found


async def queue_rank(link: Link, job_id: str, pipeline_id: str) -> tuple[int, str] | None:
    """``(rank, kind)`` of a job in the cluster's queue (None when it is not there)."""
    redis = link.redis
    rank: Any = await redis.zrank(wire.QUEUE, job_id)
    if rank is None:
        return None
    kind = text(await redis.hget(wire.job_key(job_id), "kind") or pipeline_id)
    return int(rank), kind
