"""Where a request runs: the page's workers or the server, and what the answer notes say.

A ``preview`` whose plan the page can run (``Plan.route == "client"``) is left to the
browser, unless something in it runs on the server only (a server-only op, a custom
checkpoint: :func:`server_reasons`), which the answer says. Everything else, and every
``fallback``, is the server's. The notes are the answer's human-readable ``notes``; the
structured parts (``server_reasons``, ``joined``) are on the ``Submission``.
"""

from __future__ import annotations

from playground_rt.jobs.job import CLIENT_BACKEND, Mode, Prepared

CLIENT_NOTE = "Client should use cache_key to reuse previously computed previews."
JOINED_NOTE = "an identical job is already in flight; joined it"


def server_reasons(prepared: Prepared, mode: Mode) -> list[str]:
    """Why a preview routed to the page's workers must run on the server instead."""
    if mode != "preview" or prepared.plan.route != "client":
        return []
    return prepared.plan.server_reasons(prepared.checkpoint is not None)


def route(prepared: Prepared, mode: Mode, notes: list[str]) -> tuple[bool, str]:
    """Whether the page's workers run it, and the ``routed_backend`` to report (a preview
    the server takes over is noted in ``notes``)."""
    route_client = mode == "preview" and prepared.plan.route == "client"
    if route_client and (why := server_reasons(prepared, mode)):
        notes.append("; ".join(why) + ": running on the server")
        route_client = False
    return route_client, CLIENT_BACKEND if route_client else f"server-{prepared.pipeline_id}"
