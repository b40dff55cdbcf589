"""What clients are told about a job: its ``schemas.JobView`` (``GET /api/jobs/{id}``, the
answers of ``POST /api/pipelines/*``) and its result's URL, built here for every mode.

A job is described from memory while this process knows it; a job it no longer (or never)
knew is described from its result on disk (:func:`from_disk`), since job ids are content
addresses: after a restart, or on another process behind the same outputs folder. Where a
queued job stands (``position``, ``eta_ms``) and the threads its model ran on are the
caller's to say: the local executor knows them, the cluster's queue knows them elsewhere.
"""

from __future__ import annotations

from pathlib import Path

from playground_rt import schemas
from playground_rt.config import Settings
from playground_rt.jobs.job import Job, JobState
from playground_rt.paths import display
from playground_rt.pipeline import registry
from playground_rt.pipeline.results import ResultStore

REMOVED_NOTE = (
    "its result has since been removed by retention (results_max_bytes, results_max_age_s); "
    "ask for the preview again to recompute it"
)


def result_url(settings: Settings, path: Path) -> str:
    """The URL a result file is served at (``/results/...``)."""
    relative = path.resolve().relative_to(settings.results_root.resolve())
    return "/results/" + relative.as_posix()


def of_job(
    job: Job,
    settings: Settings,
    place: tuple[int, int] | None = None,
    threads: int | None = None,
) -> schemas.JobView:
    """The view of a job in memory; ``place``: ``(position, eta_ms)`` while it is queued."""
    result = job.result_path
    position, eta_ms = place if place is not None else (None, None)
    return schemas.JobView(
        job_id=job.id,
        pipeline_id=job.prepared.pipeline_id,
        cache_key=job.prepared.cache_key,
        state=job.state.value,
        routed_backend=job.routed_backend,
        position=position,
        eta_ms=eta_ms,
        result_url=result_url(settings, result) if result else None,
        result_path=display(settings.outputs_root, result) if result else None,
        cache_hit=job.cache_hit,
        detail=job.detail if result is None or result.exists() else REMOVED_NOTE,
        code=job.code,
        durations=job.durations,
        threads=threads,
        outline_url=job.outline_url if job.state is JobState.RUNNING else None,
    )


def model_threads(job: Job, settings: Settings) -> int | None:
    """The onnxruntime threads a job's model ran (or runs) on in this process."""
    if not job.prepared.plan.uses_model or job.state is JobState.QUEUED or job.cache_hit:
        return None
    if job.wide and job.prepared.checkpoint is None:
        return settings.wide_threads
    return max(1, settings.intra_op_threads)


def from_disk(
    job_id: str, settings: Settings, store: ResultStore, pipelines: registry.Pipelines
) -> schemas.JobView | None:
    """A completed job known by its result on disk alone; None when there is none."""
    pipeline_id, hex_digest = registry.split_job_id(job_id)
    if pipeline_id not in pipelines:
        return None
    path = store.lookup(pipeline_id, job_id)
    if path is None:
        return None
    return schemas.JobView(
        job_id=job_id,
        pipeline_id=pipeline_id,
        cache_key=registry.cache_key(pipeline_id, hex_digest),
        state="completed",
        routed_backend=f"server-{pipeline_id}",
        cache_hit=True,
        result_url=result_url(settings, path),
        result_path=display(settings.outputs_root, path),
    )
