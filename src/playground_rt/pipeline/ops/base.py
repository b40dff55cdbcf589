"""What an op is: a named, pure function on a Pillow image with typed params.

An op never touches the network, the disk or global state; what it needs beyond its
image and params (model sessions, a way to report progress, cancellation) comes in an
:class:`OpContext`. Ops run on executor threads, never on the event loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import msgspec
from PIL import Image

if TYPE_CHECKING:
    from rembg.sessions.base import BaseSession

    from playground_rt.pipeline.masks import MaskCache


class SessionProvider:
    """Where ops get ONNX sessions; ``models.ModelRegistry`` is the real one."""

    def session(self, model: str, wide: bool = False) -> BaseSession:
        raise RuntimeError("no model registry in this context")

    def custom(self, path: Path) -> BaseSession:
        raise RuntimeError("no model registry in this context")

    def require(self, model: str) -> Path:
        """Raise the request-time error for an unusable ``model``; return its file."""
        raise RuntimeError("no model registry in this context")


def _no_report(stage: str, step: int, total: int) -> None:
    return None


def _never_cancelled() -> None:
    return None


def _no_outline(image: Image.Image, mask: Image.Image) -> None:
    return None


@dataclass
class OpContext:
    """Everything an op may use besides its image and params.

    ``report(stage, step, total)`` tells the job's subscribers how far the op is;
    ``check_cancelled()`` raises ``errors.JobCancelled`` once the job was cancelled, so
    a long op can stop between its own steps; ``checkpoint`` is the resolved custom
    ``.onnx`` of the request, if any.
    """

    models: SessionProvider = field(default_factory=SessionProvider)
    report: Callable[[str, int, int], None] = _no_report
    check_cancelled: Callable[[], None] = _never_cancelled
    checkpoint: Path | None = None
    threads: int = 1
    """Threads the op may use: more than one when the job is alone in the pool, for its
    model (the session that runs on every core) and its whole-image passes
    (``pipeline.bands``). The bytes do not depend on it."""
    image_key: str | None = None
    """Identifies the op's input image: the sha256 of the bytes it was decoded from, which
    ``pipelines.apply`` derives anew after each op. ``None``: unknown (nothing is cached)."""
    masks: MaskCache | None = None
    """Where the model's masks are kept between jobs (``playground_rt.pipeline.masks``)."""
    outline: Callable[[Image.Image, Image.Image], None] = _no_outline
    """Called by a model's op as soon as its mask is known, with the op's input and the L
    mask (the same size): the job may show a small preview (``playground_rt.pipeline.outlines``).
    It must not modify either image."""


P = TypeVar("P", bound=msgspec.Struct)


@dataclass(frozen=True)
class OpSpec(Generic[P]):
    """A registered op.

    ``client`` says whether the page's Web Workers implement it bit-compatibly (see
    ``static/js/ops.js``; ``rembg`` runs in ``static/js/model-worker.js``); a pipeline whose
    enabled ops are all ``client`` may be routed to the browser. ``client_check``, when
    given, says why particular params cannot run there (None when they can).
    """

    name: str
    params: type[P]
    apply: Callable[[Image.Image, P, OpContext], Image.Image]
    client: bool
    summary: str
    size: Callable[[tuple[int, int], P], tuple[int, int]] | None = None
    """The output ``(width, height)`` for an input size, for ops that change it; checked
    against ``max_pixels`` before a job is queued."""
    client_check: Callable[[P], str | None] | None = None

    def output_size(self, size: tuple[int, int], params: Any) -> tuple[int, int]:
        return size if self.size is None else self.size(size, params)

    def run(self, image: Image.Image, params: Any, ctx: OpContext) -> Image.Image:
        assert isinstance(params, self.params), (self.name, type(params))
        return self.apply(image, params, ctx)
