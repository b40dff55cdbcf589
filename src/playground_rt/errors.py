"""The errors a client can cause, and how each one is told.

    PlaygroundError                 every error the server answers with a 4xx/5xx body
    ├── BadRequest (400)            malformed JSON, base64 or frame
    ├── Unauthorized (401)          the bearer token is missing or wrong
    ├── Forbidden (403)             allowed only with the server's token
    ├── NotFound (404)              unknown pipeline, job, image or model
    │   ├── UnknownPipeline
    │   └── UnknownJob
    ├── PathOutsideRoot (422)       a path escapes its configured root
    ├── InvalidParams (422)         a value is out of range or of the wrong type
    ├── InvalidImage (422)          not an image, a format outside the allow-list, truncated
    ├── ModelUnavailable (422)      a model file is missing or cannot be loaded
    ├── TooLarge (413)              body, image bytes or pixels over the limits
    ├── QueueFull (429)             the executor's queue is full; carries Retry-After
    │   └── ClientQueueFull         this client holds its whole share of the queue
    ├── NotReady (503)              the server is starting or stopping
    ├── JobCancelled                a job was cancelled (never rendered as HTTP)
    ├── OpFailed (500 for HTTP)     an op raised or ran past its time budget
    └── DiskFull (507 for HTTP)     no room left to write a result (ENOSPC, EDQUOT)

Everything is mapped to a status and a ``{"detail": ...}`` body in ``web.rest`` and to
``error``/``failed`` frames in ``web.ws`` and the job manager: nowhere else. What msgspec
raises for a client's JSON becomes one of these in :func:`undecodable`.
"""

from __future__ import annotations

import msgspec

UNDECODABLE = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)
"""What msgspec raises for a client's bytes: bad values and bad JSON (``ValidationError`` is
a ``DecodeError``); ``UnicodeDecodeError`` for bad UTF-8 inside a string, and
``RecursionError`` past ~1000 nested levels, it raises as they are."""


class PlaygroundError(Exception):
    """Base class: ``status`` is the HTTP status, ``detail`` the client-facing text."""

    status: int = 400
    code: str = "bad_request"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BadRequest(PlaygroundError):
    status = 400
    code = "bad_request"


class Unauthorized(PlaygroundError):
    status = 401
    code = "unauthorized"


class Forbidden(PlaygroundError):
    status = 403
    code = "forbidden"


class NotFound(PlaygroundError):
    status = 404
    code = "not_found"


class UnknownPipeline(NotFound):
    code = "unknown_pipeline"


class UnknownJob(NotFound):
    code = "unknown_job"


class PathOutsideRoot(PlaygroundError):
    status = 422
    code = "path_outside_root"


class InvalidParams(PlaygroundError):
    status = 422
    code = "invalid_params"


class InvalidImage(PlaygroundError):
    status = 422
    code = "invalid_image"


class ModelUnavailable(PlaygroundError):
    status = 422
    code = "model_unavailable"


class TooLarge(PlaygroundError):
    status = 413
    code = "too_large"


class QueueFull(PlaygroundError):
    status = 429
    code = "queue_full"

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after

    @classmethod
    def waiting(cls, depth: int, retry_after: int, where: str = "") -> QueueFull:
        """The queue holds ``depth`` jobs (``where``: e.g. " in the cluster")."""
        return cls(
            f"queue full ({depth} jobs waiting{where}); retry in {retry_after} s "
            "or keep the work client-side",
            retry_after=retry_after,
        )


class ClientQueueFull(QueueFull):
    code = "client_queue_full"


class NotReady(PlaygroundError):
    status = 503
    code = "not_ready"


class JobCancelled(PlaygroundError):
    status = 409
    code = "cancelled"


class OpFailed(PlaygroundError):
    status = 500
    code = "op_failed"


class DiskFull(PlaygroundError):
    """A job's ``failed`` frame and view carry its ``code`` (the server is fine: results
    already there are still served)."""

    status = 507
    code = "disk_full"


# --- the edge: requests refused before they reach an endpoint's logic ----------------------
#   ├── RequestTimeout (408)        the body did not arrive within http_body_timeout_s
#   ├── HostNotAllowed (421)        the Host header is not one of allowed_hosts
#   └── UnsupportedMediaType (415)  a POST body that is not application/json


class RequestTimeout(PlaygroundError):
    status = 408
    code = "request_timeout"


class HostNotAllowed(PlaygroundError):
    status = 421
    code = "host_not_allowed"


class UnsupportedMediaType(PlaygroundError):
    status = 415
    code = "unsupported_media_type"


def undecodable(exc: BaseException, what: str) -> PlaygroundError:
    """The error for msgspec's complaint (one of ``UNDECODABLE``) about a client's JSON
    ``what`` ("body", "frame"): a value of the wrong type or range is ``InvalidParams``
    naming its ``$.path``; bytes that are not JSON are a ``BadRequest``."""
    if isinstance(exc, msgspec.ValidationError):
        return InvalidParams(str(exc))
    if isinstance(exc, UnicodeDecodeError):
        return BadRequest(f"malformed JSON {what}: invalid UTF-8 ({exc.reason})")
    if isinstance(exc, RecursionError):
        return BadRequest(f"malformed JSON {what}: nested too deeply")
    return BadRequest(f"malformed JSON {what}: {exc}")
