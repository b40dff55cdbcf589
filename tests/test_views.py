"""``jobs.views``: what clients are told about a job, from memory or from its result on disk."""

from __future__ import annotations

from pathlib import Path

from playground_rt.jobs import views
from playground_rt.jobs.job import Job, JobState, Prepared
from playground_rt.pipeline import images, registry
from playground_rt.pipeline.results import ResultStore

from .conftest import encode, make_settings, sample_image

JOB_ID = "preprocessing-" + "b" * 32


def prepared() -> Prepared:
    plan = registry.get_pipeline("preprocessing").plan({})
    key = registry.cache_key("preprocessing", "b" * 32)
    return Prepared(plan, images.Source(b"", ""), None, JOB_ID, key, (), (8, 8))


def test_a_result_on_disk_describes_a_job_this_process_never_knew(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    store = ResultStore(settings.results_root)
    assert views.from_disk(JOB_ID, settings, store, registry.PIPELINES) is None
    store.write("preprocessing", JOB_ID, encode(sample_image(8, 8)))
    view = views.from_disk(JOB_ID, settings, store, registry.PIPELINES)
    assert view is not None and view.state == "completed" and view.cache_hit
    assert view.result_url == f"/results/preprocessing/{JOB_ID}.png"
    assert view.cache_key == registry.cache_key("preprocessing", "b" * 32)


def test_a_completed_job_whose_result_retention_removed_says_so(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    path = ResultStore(settings.results_root).write(
        "preprocessing", JOB_ID, encode(sample_image(8, 8))
    )
    job = Job(prepared(), "server-preprocessing", state=JobState.COMPLETED, result_path=path)
    assert views.of_job(job, settings).detail is None
    path.unlink()
    assert views.of_job(job, settings).detail == views.REMOVED_NOTE


def test_a_queued_job_shows_the_place_its_manager_gives(tmp_path: Path) -> None:
    job = Job(prepared(), "server-preprocessing")
    view = views.of_job(job, make_settings(tmp_path), place=(3, 1200))
    assert (view.state, view.position, view.eta_ms, view.threads) == ("queued", 3, 1200, None)
