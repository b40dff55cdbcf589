"""``jobs.progress``: a job's progress frames throttled to one per interval, the newest kept,
and an outline's frame at once."""

from __future__ import annotations

import asyncio

from playground_rt import schemas
from playground_rt.jobs.job import Job, Prepared
from playground_rt.jobs.progress import PROGRESS_INTERVAL_S, Progress
from playground_rt.pipeline import images, registry

JOB_ID = "rembg-" + "a" * 32


def a_job() -> Job:
    plan = registry.get_pipeline("rembg").plan({})
    prepared = Prepared(plan, images.Source(b"", ""), None, JOB_ID, "rembg:" + "a" * 32, (), (8, 8))
    return Job(prepared, "server-rembg")


def stage(step: int) -> schemas.Progress:
    return schemas.Progress(job_id=JOB_ID, stage="rembg", step=step, total=9)


async def test_the_newest_report_within_the_interval_goes_out_at_its_end() -> None:
    sent: list[schemas.JobFrame] = []
    progress = Progress(asyncio.get_running_loop(), lambda job, frame: sent.append(frame))
    job = a_job()
    for step in range(5):
        progress.report(job, stage(step))
    assert [f.step for f in sent if isinstance(f, schemas.Progress)] == [0]  # the first at once
    await asyncio.sleep(PROGRESS_INTERVAL_S * 2)
    assert [f.step for f in sent if isinstance(f, schemas.Progress)] == [0, 4]


async def test_an_outline_goes_out_at_once_and_later_frames_carry_it() -> None:
    sent: list[schemas.JobFrame] = []
    progress = Progress(asyncio.get_running_loop(), lambda job, frame: sent.append(frame))
    job = a_job()
    progress.report(job, stage(0))
    progress.outlined(job, "/api/jobs/x/outline")
    assert [getattr(f, "outline_url", None) for f in sent] == [None, "/api/jobs/x/outline"]
    await asyncio.sleep(PROGRESS_INTERVAL_S * 2)
    progress.report(job, stage(2))
    last = sent[-1]
    assert isinstance(last, schemas.Progress) and last.step == 2
    assert last.outline_url == "/api/jobs/x/outline"


async def test_a_job_that_ends_sends_nothing_pending() -> None:
    sent: list[schemas.JobFrame] = []
    progress = Progress(asyncio.get_running_loop(), lambda job, frame: sent.append(frame))
    job = a_job()
    progress.report(job, stage(0))
    progress.report(job, stage(1))  # pending
    Progress.stop(job)
    await asyncio.sleep(PROGRESS_INTERVAL_S * 2)
    assert len(sent) == 1
