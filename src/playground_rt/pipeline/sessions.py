"""ONNX sessions for the ops, through the real ``rembg`` library.

A :class:`ModelRegistry` owns every session of the process: one per rembg model name, created
once and shared by all executor threads (onnxruntime's ``run`` is thread-safe and releases the
GIL), plus a small cache of custom ``.onnx`` files a request pointed at. Sessions are never
downloaded here: a model whose file is missing is reported as :class:`ModelUnavailable` with the
command that fetches it (see ``modelstore``), because rembg's own download would hang or fail on
a machine without internet.

Memory: onnxruntime's CPU arena stays on (it saves each run ~250 MB of page faults), and the
registry's :class:`~playground_rt.pipeline.arenas.IdleRelease` shrinks the arenas once the models
have rested ``arenas.IDLE_RELEASE_S`` seconds (see ``arenas``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import onnxruntime as ort
import rembg
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state
from rembg.sessions import sessions_names, sessions_names_downloadable
from rembg.sessions.base import BaseSession
from rembg.sessions.u2net_custom import U2netCustomSession

from playground_rt import schemas
from playground_rt.errors import InvalidParams, ModelUnavailable, PathOutsideRoot
from playground_rt.pipeline import arenas
from playground_rt.pipeline.ops.base import SessionProvider

__all__ = [
    "SERVABLE_MODELS",
    "ModelInfo",
    "ModelRegistry",
    "choose_providers",
    "model_file",
    "rembg_home",
]

log = logging.getLogger(__name__)

# rembg names that load from a single ``<name>.onnx``: the custom sessions take a path instead,
# sam needs an encoder/decoder pair, and remote backends (not ``is_local``) have no file at all.
_NOT_BY_NAME = frozenset({"u2net_custom", "dis_custom", "ben_custom", "sam"})
SERVABLE_MODELS: tuple[str, ...] = tuple(
    name for name in sessions_names_downloadable if name not in _NOT_BY_NAME
)

PYTORCH_SUFFIXES = frozenset({".ckpt", ".pt", ".pth"})
_MAX_CUSTOM_SESSIONS = 4  # each holds a whole model in memory; requests rarely alternate more

# What onnxruntime raises for a file it cannot load (none of them subclass RuntimeError).
_ORT_LOAD_ERRORS: tuple[type[Exception], ...] = (
    ort_state.Fail,
    ort_state.InvalidArgument,
    ort_state.InvalidGraph,
    ort_state.InvalidProtobuf,
    ort_state.NoSuchFile,
    ort_state.NoModel,
    ort_state.NotImplemented,
    ort_state.RuntimeException,
)
_ORT_PREFIX = re.compile(r"^\[ONNXRuntimeError\] : \d+ : (\w+) : (?:Load model from .*? failed:)?")

# U2NET_HOME is process-wide state that rembg reads while constructing a session, so creation
# is serialised across every registry of the process, not just within one.
_CREATE_LOCK = threading.Lock()


ModelInfo = schemas.ModelStatus
"""A loaded session, as ``/readyz`` reports it (the wire Struct itself: no mirror)."""


class _ValidatedCustomSession(U2netCustomSession):  # type: ignore[misc]  # rembg is untyped
    """rembg's U2Net custom session for a path this module has already checked.

    rembg refuses custom paths outside its model home; ours live under the outputs root and
    were confined to ``custom_root`` by :meth:`ModelRegistry.custom` before we get here.
    """

    @classmethod
    def download_models(cls, *args: object, **kwargs: object) -> str:
        path = kwargs["model_path"]
        assert isinstance(path, str), path
        return path


def choose_providers(available: list[str]) -> list[str]:
    """The providers to ask onnxruntime for: CUDA first when the build lists it, then CPU.

    CPU is always last, so a CUDA provider that is listed but cannot load its libraries
    falls back to CPU instead of failing.
    """
    chosen = [p for p in ("CUDAExecutionProvider",) if p in available]
    return [*chosen, "CPUExecutionProvider"]


def model_file(home: Path, name: str) -> Path | None:
    """Where rembg, with ``U2NET_HOME=home``, finds ``name``'s file; ``None`` when absent.

    Mirrors ``BaseSession.resolve_existing``: the per-model directory first, then the flat
    legacy layout that ``modelstore.pull`` writes.
    """
    fname = f"{name}.onnx"
    for candidate in (home / "models" / name / fname, home / fname):
        if candidate.is_file():
            return candidate
    return None


@contextmanager
def rembg_home(home: Path) -> Iterator[None]:
    """Run a block with ``U2NET_HOME=home`` (restored after), serialised with session creation.

    For asking rembg itself where it finds a file (``resolve_existing`` reads only the
    environment); a registry's own sessions do not need it.
    """
    with _CREATE_LOCK:
        saved = os.environ.get("U2NET_HOME")
        os.environ["U2NET_HOME"] = str(home)
        try:
            yield
        finally:
            if saved is None:
                del os.environ["U2NET_HOME"]
            else:
                os.environ["U2NET_HOME"] = saved


def _session_options(intra_op_threads: int) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = intra_op_threads
    # Parallelism across requests comes from the executor's threads sharing one session;
    # inter-op threads would only oversubscribe the cores.
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning intra-op threads busy-wait between runs and take the CPU that decoding and
    # encoding of the other jobs need (measured in bench/: the cores are the bottleneck).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # One arena for every session, given back when the models rest (see ``arenas``).
    arenas.use_shared_arena(opts)
    return opts


def check_checkpoint_name(given: str, field: str = "checkpoint_path") -> None:
    """The checkpoint rule, everywhere one is named (requests, the command builder, the
    CLI): an ``.onnx`` file; a PyTorch checkpoint gets told how to export one."""
    suffix = Path(given).suffix.lower()
    if suffix in PYTORCH_SUFFIXES:
        raise InvalidParams(
            f"{field} {given!r} is a PyTorch checkpoint; export it to ONNX "
            "(torch.onnx.export) and pass the .onnx file"
        )
    if suffix != ".onnx":
        raise InvalidParams(f"{field} {given!r} must be an .onnx file")


def file_md5(path: Path) -> str:
    """A model file's md5 (hex): what the wheel pins, ``/readyz`` shows and the page's
    cached copy is checked against (the ``ETag`` of ``GET /models/{model}.onnx``)."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "md5").hexdigest()


def _short_ort_error(exc: Exception, path: Path) -> str:
    """onnxruntime's message without its code prefix and the server-side absolute path."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    match = _ORT_PREFIX.match(first)
    text = f"{match.group(1)}: {first[match.end() :].strip()}" if match else first
    text = text.replace(str(path), path.name)
    return text if len(text) <= 200 else text[:197] + "..."


class ModelRegistry(SessionProvider):
    """Every ONNX session of the process, created once and shared by all threads.

    ``session(name)`` is a dict lookup once the session exists (create named models at
    start-up with :meth:`warm`); ``custom(path)`` stats the file on each call so a replaced
    file is reloaded. Both raise :class:`PlaygroundError` subclasses that the API renders.
    """

    def __init__(
        self,
        model_home: Path,
        custom_root: Path,
        intra_op_threads: int,
        providers: list[str] | None = None,
        wide_threads: int = 0,
    ) -> None:
        self.model_home = model_home.expanduser().resolve()
        self.custom_root = custom_root.resolve()
        self.providers = (
            providers if providers is not None else choose_providers(ort.get_available_providers())
        )
        self._opts = _session_options(intra_op_threads)
        # A second session per model on every core, for a job that has the pool to itself
        # (onnxruntime's CPU results are bit-identical across thread counts: tested).
        self.wide_threads = wide_threads
        self._wide_opts = _session_options(wide_threads) if wide_threads else None
        self._sessions: dict[tuple[str, bool], BaseSession] = {}
        self._named_info: dict[str, ModelInfo] = {}
        self._custom: OrderedDict[tuple[Path, int, int], tuple[BaseSession, ModelInfo]] = (
            OrderedDict()
        )
        self.idle_release = arenas.IdleRelease(arenas.IDLE_RELEASE_S)
        # rembg finds model files through this variable, read at construction time.
        os.environ["U2NET_HOME"] = str(self.model_home)

    def session(self, model: str, wide: bool = False) -> BaseSession:
        """The shared session for rembg model ``model``, created on first use; ``wide``
        picks the one on ``wide_threads`` threads (when the registry has them).

        Raises ``InvalidParams`` for a name rembg does not serve from a file and
        ``ModelUnavailable`` when the file is not in the model home or cannot be loaded.
        """
        key = (model, wide and self._wide_opts is not None)
        found = self._sessions.get(key)  # the hot path: no lock, no syscall
        if found is not None:
            return found
        with _CREATE_LOCK:
            found = self._sessions.get(key)
            if found is None:
                found = self._create(model, key[1])
                self._sessions[key] = found
            return found

    def custom(self, path: Path) -> BaseSession:
        """A U2Net-style session for a request's own ``.onnx`` under ``custom_root``.

        Raises ``PathOutsideRoot`` when ``path`` (symlinks and ``..`` resolved) leaves
        ``custom_root``, ``InvalidParams`` for a PyTorch checkpoint or any non-``.onnx`` file,
        ``ModelUnavailable`` when it is missing or onnxruntime cannot load it. Sessions are
        cached by (path, mtime, size), the few most recently created only.
        """
        resolved = self._confine(path)
        try:
            st = resolved.stat()
        except OSError as exc:
            raise ModelUnavailable(f"checkpoint_path {path.name} not found") from exc
        key = (resolved, st.st_mtime_ns, st.st_size)
        found = self._custom.get(key)
        if found is not None:
            return found[0]
        with _CREATE_LOCK:
            found = self._custom.get(key)
            if found is None:
                found = self._create_custom(resolved)
                self._custom[key] = found
                while len(self._custom) > _MAX_CUSTOM_SESSIONS:
                    self._custom.popitem(last=False)
            return found[0]

    def warm(self, models: list[str]) -> None:
        """Create the sessions for ``models`` now (at start-up), raising as ``session`` does."""
        for model in models:
            self.session(model)
            self.session(model, wide=True)

    def info(self) -> list[ModelInfo]:
        """The sessions created so far, named models first.

        Lock-free, so ``/readyz`` never waits on a session being created: ``list()`` of a
        dict view runs without releasing the GIL.
        """
        custom = list(self._custom.values())
        return list(self._named_info.values()) + [info for _, info in custom]

    def available(self) -> list[str]:
        """The rembg model names whose files are present in the model home."""
        return [name for name in SERVABLE_MODELS if model_file(self.model_home, name)]

    def _confine(self, path: Path) -> Path:
        resolved = path.resolve()
        if not resolved.is_relative_to(self.custom_root):
            raise PathOutsideRoot(f"checkpoint_path {path} is outside the custom model root")
        check_checkpoint_name(path.name)
        return resolved

    def require(self, model: str) -> Path:
        """The file of ``model``, or the error a request naming it deserves (checked at
        request time, so a missing model is a 422 and not a failed job)."""
        if model in self._named_info:  # loaded: the request-time check is a dict lookup
            return Path(self._named_info[model].path)
        if model not in SERVABLE_MODELS:
            why = "is not served by name" if model in sessions_names else "is not a rembg model"
            raise InvalidParams(f"model {model!r} {why}; known: {', '.join(SERVABLE_MODELS)}")
        path = model_file(self.model_home, model)
        if path is None:
            # Checked before rembg sees the name: it would start a download otherwise.
            raise ModelUnavailable(
                f"model {model!r} is not in the model home; "
                f"run `playground-rt models pull --model {model}`"
            )
        return path

    def _create(self, model: str, wide: bool = False) -> BaseSession:
        path = self.require(model)
        opts = self._wide_opts if wide and self._wide_opts is not None else self._opts
        os.environ["U2NET_HOME"] = str(self.model_home)  # another registry may have moved it
        try:
            session: BaseSession = rembg.new_session(
                model, sess_opts=opts, providers=list(self.providers)
            )
        except _ORT_LOAD_ERRORS as exc:
            raise ModelUnavailable(
                f"model {model!r} cannot be loaded: {_short_ort_error(exc, path)}"
            ) from exc
        if not wide:
            self._named_info[model] = self._describe(model, session, path, file_md5(path))
        self.idle_release.track(session)
        return session

    def _create_custom(self, path: Path) -> tuple[BaseSession, ModelInfo]:
        try:
            session: BaseSession = _ValidatedCustomSession(
                "u2net_custom", self._opts, model_path=str(path), providers=list(self.providers)
            )
        except _ORT_LOAD_ERRORS as exc:
            raise ModelUnavailable(
                f"checkpoint_path {path.name} cannot be loaded: {_short_ort_error(exc, path)}"
            ) from exc
        self.idle_release.track(session)
        return session, self._describe("u2net_custom", session, path, None)

    def _describe(self, model: str, session: BaseSession, path: Path, md5: str | None) -> ModelInfo:
        # CUDA can be listed yet fail to load its libraries; what the session got is the truth.
        got: list[str] = list(session.inner_session.get_providers())
        if got[:1] != self.providers[:1]:
            log.warning("model %s asked for %s but runs on %s", model, self.providers, got)
        return ModelInfo(model=model, providers=got, path=str(path), md5=md5)
